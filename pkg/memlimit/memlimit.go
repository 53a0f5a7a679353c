// Package memlimit sets the Go runtime's soft memory limit from the
// container's memory limit, so that a rotor near its limit collects
// garbage harder instead of being OOM-killed. The Go runtime reads
// GOMAXPROCS from the container's CPU limit but not a memory limit from
// its memory limit: without one, the heap may grow to twice what is live
// (GOGC=100), and the session collector's index of a million sessions is
// about 70 MB live.
package memlimit

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupLimitFiles are where cgroup v2 and v1 publish the memory limit,
// relative to the cgroup file system's mount point.
var cgroupLimitFiles = []string{"memory.max", "memory/memory.limit_in_bytes"}

// unlimitedV1 is larger than any real limit: cgroup v1 reports "no limit"
// as a page-rounded maximum int64.
const unlimitedV1 = 1 << 62

// Container returns the memory limit of the cgroup rotor runs in, read
// below root (/sys/fs/cgroup), and false when there is none.
func Container(root string) (int64, bool, error) {
	for _, f := range cgroupLimitFiles {
		b, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("reading the container's memory limit: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return 0, false, fmt.Errorf("reading the container's memory limit: %s holds %q", f, v)
		}
		if n >= unlimitedV1 {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// Set sets the soft memory limit to ratio of the container's limit read
// below root, unless GOMEMLIMIT is set (the operator's choice wins), ratio
// is not in (0, 1], or there is no limit. It returns the limit set, 0 for
// none.
func Set(root string, ratio float64) (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" || ratio <= 0 || ratio > 1 {
		return 0, nil
	}
	limit, ok, err := Container(root)
	if err != nil || !ok {
		return 0, err
	}
	soft := int64(math.Floor(float64(limit) * ratio))
	debug.SetMemoryLimit(soft)
	return soft, nil
}
