package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// metrics of one benchmark in one round, by unit: ns/op, B/op, allocs/op
// and the paired benchmarks' jwt-ns/op, raw-ns/op, jwt/raw.
type metrics map[string]float64

// series is one benchmark's metrics, one entry per round.
type series []metrics

func (s series) median(unit string) float64 {
	var v []float64
	for _, m := range s {
		if x, ok := m[unit]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (s series) spread(unit string) string {
	var v []float64
	for _, m := range s {
		if x, ok := m[unit]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return "none"
	}
	return fmt.Sprintf("%.2f–%.2f", slices.Min(v), slices.Max(v))
}

// runCrypto runs the signing benchmarks of pkg/tokens, and pkg/client's
// verifier when that package has benchmarks, and reports each JWT
// operation as a multiple of the raw primitive on the same key.
//
// The test binaries are built once and run --bench-count times with
// -count=1 (go test -count=N would run one benchmark's repetitions back to
// back); medians over the rounds are reported. The figures and the verdict
// come from the paired benchmarks, which interleave blocks of the JWT and
// the raw operation in one loop and take median block times, so that load
// elsewhere on a shared machine neither hits one side only nor decides the
// result; the separate benchmarks give allocations and plain ns/op.
func runCrypto(ctx context.Context, c config, r *report) error {
	pkgs := []string{"pkg/tokens", "pkg/client"}
	dir, err := os.MkdirTemp("", "rotor-bench-test-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins := map[string]string{}
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, filepath.Base(pkg)+".test")
		if out, err := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./"+pkg+"/").CombinedOutput(); err != nil {
			return fmt.Errorf("go test -c ./%s/: %w\n%s", pkg, err, out)
		}
		bins[pkg] = bin
	}
	results := map[string]series{}
	for range c.benchCount {
		for _, pkg := range pkgs {
			bin, ok := bins[pkg]
			if !ok {
				continue
			}
			cmd := exec.CommandContext(ctx, bin, "-test.run", "^$", "-test.bench", ".", "-test.benchmem", "-test.count", "1", "-test.benchtime", c.benchtime)
			cmd.Dir = pkg
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("%s -test.bench: %w\n%s%s", pkg, err, out, stderr.Bytes())
			}
			for name, m := range parseBench(out) {
				results[pkg+" "+name] = append(results[pkg+" "+name], m)
			}
		}
	}

	type row struct {
		area, pkg, op, jwt, paired string
		sign                       bool
	}
	var rows []row
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		rows = append(rows,
			row{"signing", "pkg/tokens", "Minter.Mint", "BenchmarkSign/" + alg + "/Mint", "BenchmarkPairedSign/" + alg, true},
			row{"verification", "pkg/tokens", "Verifier.Verify", "BenchmarkVerify/" + alg + "/Verify", "BenchmarkPairedVerify/" + alg, false},
			row{"verification", "pkg/client", "client.Verifier.Verify", "BenchmarkVerify/" + alg + "/Verify", "BenchmarkPairedVerify/" + alg, false})
	}
	for _, w := range rows {
		alg := strings.Split(w.paired, "/")[1]
		primitive := rawPrimitive(alg, w.sign)
		jwt := results[w.pkg+" "+w.jwt]
		raw := results[w.pkg+" "+strings.TrimSuffix(w.jwt, lastElem(w.jwt))+primitive]
		pair := results[w.pkg+" "+w.paired]
		what := fmt.Sprintf("%s %s vs %s (%s)", alg, w.op, primitive, w.pkg)
		if len(jwt) == 0 || len(raw) == 0 || len(pair) == 0 {
			r.add(w.area, what, "missing from the benchmark output", "", "")
			continue
		}
		ratio := pair.median("jwt/raw")
		target, verdict := "", ""
		if alg != "RS256" {
			target, verdict = "≤ 1.3×", check(ratio <= 1.3)
		}
		r.add(w.area, what, fmt.Sprintf("%s vs %s: **%.2f×** (rounds %s); %.0f vs %.0f allocs/op, %.0f vs %.0f B/op; separate benchmarks %s vs %s",
			us(pair.median("jwt-ns/op")), us(pair.median("raw-ns/op")), ratio, pair.spread("jwt/raw"),
			jwt.median("allocs/op"), raw.median("allocs/op"), jwt.median("B/op"), raw.median("B/op"),
			us(jwt.median("ns/op")), us(raw.median("ns/op"))), target, verdict)
	}
	return nil
}

// rawPrimitive names the raw sub-benchmark of pkg/tokens' bench_test.go.
func rawPrimitive(alg string, sign bool) string {
	switch {
	case alg == "ES256" && sign:
		return "ecdsa.SignASN1"
	case alg == "ES256":
		return "ecdsa.VerifyASN1"
	case alg == "EdDSA" && sign:
		return "ed25519.Sign"
	case alg == "EdDSA":
		return "ed25519.Verify"
	case sign:
		return "rsa.SignPKCS1v15"
	default:
		return "rsa.VerifyPKCS1v15"
	}
}

func lastElem(name string) string { return name[strings.LastIndexByte(name, '/')+1:] }

// parseBench reads `go test -bench` output lines:
//
//	BenchmarkX/y-2   1000   1234 ns/op   1.2 jwt/raw   56 B/op   3 allocs/op
//
// dropping the -GOMAXPROCS suffix from names.
func parseBench(out []byte) map[string]metrics {
	res := map[string]metrics{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		m := metrics{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		if _, ok := m["ns/op"]; ok {
			res[name] = m
		}
	}
	return res
}
