package memlimit_test

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	. "github.com/onsi/gomega"

	"rotor.dev/rotor/pkg/memlimit"
)

func cgroup(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestContainer(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    int64
		limited bool
		err     bool
	}{
		{"cgroup v2 with a limit", map[string]string{"memory.max": "268435456\n"}, 268435456, true, false},
		{"cgroup v2 without a limit", map[string]string{"memory.max": "max\n"}, 0, false, false},
		{"cgroup v1 with a limit", map[string]string{"memory/memory.limit_in_bytes": "536870912\n"}, 536870912, true, false},
		{"cgroup v1 without a limit (a page-rounded maximum)", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false, false},
		{"no cgroup file system", nil, 0, false, false},
		{"a limit that is not a number is an error", map[string]string{"memory.max": "lots"}, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got, limited, err := memlimit.Container(cgroup(t, tt.files))
			g.Expect(err != nil).To(Equal(tt.err), "error: %v", err)
			g.Expect(limited).To(Equal(tt.limited))
			g.Expect(got).To(Equal(tt.want))
		})
	}
}

func TestSet(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	g := NewWithT(t)
	t.Setenv("GOMEMLIMIT", "")
	root := cgroup(t, map[string]string{"memory.max": "268435456"})

	set, err := memlimit.Set(root, 0.9)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(set).To(Equal(int64(241591910)), "90% of 256 MiB")
	g.Expect(debug.SetMemoryLimit(-1)).To(Equal(set), "the runtime's limit")

	debug.SetMemoryLimit(math.MaxInt64)
	set, err = memlimit.Set(root, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(set).To(BeZero(), "ratio 0 turns it off")
	g.Expect(debug.SetMemoryLimit(-1)).To(Equal(int64(math.MaxInt64)))

	t.Setenv("GOMEMLIMIT", "100MiB")
	set, err = memlimit.Set(root, 0.9)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(set).To(BeZero(), "GOMEMLIMIT wins")
	g.Expect(debug.SetMemoryLimit(-1)).To(Equal(int64(math.MaxInt64)))
}
