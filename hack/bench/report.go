package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"rotor.dev/rotor/pkg/dev/controlplane"
)

// report collects the rows of the one results table.
type report struct {
	rows [][5]string
	// phases is where the time went, for the run's own budget.
	phases []string
}

// spent records how long a phase took.
func (r *report) spent(phase string, d time.Duration) {
	r.phases = append(r.phases, fmt.Sprintf("%s %s", phase, d.Round(time.Second)))
}

// add appends a row: area, what was measured, the figure, the target and
// whether it was met ("" when there is no target).
func (r *report) add(area, what, value, target, verdict string) {
	r.rows = append(r.rows, [5]string{area, what, value, target, verdict})
}

// check turns a comparison into a verdict.
func check(ok bool) string {
	if ok {
		return "met"
	}
	return "**MISSED**"
}

func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString("| area | measurement | result | target | verdict |\n|---|---|---|---|---|\n")
	for _, row := range r.rows {
		for i := range row {
			row[i] = strings.ReplaceAll(row[i], "|", "\\|")
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row[:], " | "))
	}
	return strings.TrimRight(b.String(), "\n")
}

func (r *report) machine(c config) {
	r.add("run", "date", time.Now().UTC().Format("2006-01-02 15:04 MST"), "", "")
	r.add("machine", "CPU", fmt.Sprintf("%s; %d cores (GOMAXPROCS %d), %s/%s", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH), "", "")
	r.loadavg("start")
}

// loadavg records the machine's load: on a shared machine it says how
// quiet the run was.
func (r *report) loadavg(when string) {
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.add("machine", "load average at "+when+" (1, 5, 15 min)", strings.Join(strings.Fields(string(load))[:3], ", "), "", "")
	}
}

func (r *report) versions(c config, cp *controlplane.ControlPlane) {
	assets := os.Getenv(controlplane.AssetsEnv)
	if assets == "" {
		assets = filepath.Join("bin", "k8s")
	}
	r.add("versions", "Go / kube-apiserver / etcd / rotor", strings.Join([]string{
		runtime.Version(),
		firstMatch(filepath.Join(assets, "kube-apiserver"), "Kubernetes "),
		firstMatch(filepath.Join(assets, "etcd"), "etcd Version: "),
		rotorCommit(),
	}, " / "), "", "")
}

// cpuModel is the model name from /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// firstMatch runs `bin --version` and returns what follows prefix.
func firstMatch(bin, prefix string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "unknown (" + filepath.Base(bin) + ")"
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if _, v, ok := strings.Cut(line, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown (" + filepath.Base(bin) + ")"
}

// rotorCommit is the checked-out commit, marked dirty when the work tree
// differs: the figures belong to the code that ran, not to the commit.
func rotorCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown commit"
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		commit += "-dirty"
	}
	return commit
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortedCopy(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func us(ns float64) string {
	if ns >= 100_000 {
		return fmt.Sprintf("%.0f µs", ns/1000)
	}
	return fmt.Sprintf("%.1f µs", ns/1000)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func thousands(n int) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func nproc() int { return runtime.NumCPU() }
