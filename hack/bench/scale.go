package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/controlplane"
	"rotor.dev/rotor/pkg/server"
	"rotor.dev/rotor/pkg/sessions"
)

const (
	scaleNamespace = "bench-scale"
	// gcPageSize is the collector's list page (controllers.SessionCollector).
	gcPageSize = 500
	rssTarget  = 150 << 20
)

// stored is what a delete with rotor's preconditions needs.
type stored struct {
	name string
	uid  types.UID
	rv   string
}

// runScale measures a separate `rotor serve`, as deployed: its RSS with
// stored sessions, and how fast its collector deletes expired ones next to
// raw deletes at the same parallelism.
func runScale(ctx context.Context, c config, cp *controlplane.ControlPlane, r *report) error {
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.UserAgent = -1, "rotor-bench-raw"
	kc, err := client.New(cfg, client.Options{Scheme: server.Scheme()})
	if err != nil {
		return err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	res := meta.Resource(sessions.GroupVersionResource).Namespace(scaleNamespace)
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace}}); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rotor-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig, err := cp.Kubeconfig("rotor-bench")
	if err != nil {
		return err
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		return err
	}
	counter, err := newAPICounter(cp.Config)
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(c.rotorBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (run 'make build')", c.rotorBin, err)
	}
	rp := rotorProcess{bin: bin, kubeconfig: kcPath, dir: dir}

	// RSS with 0, N/10 and N live sessions, a fresh process each time:
	// startup (the collector's paged list) is where an issuer that holds
	// every session runs out of memory.
	var live []stored
	var setup, rssTime time.Duration
	defer func() {
		r.spent("filling the store (creates)", setup)
		r.spent("RSS", rssTime)
	}()
	for _, n := range []int{0, c.sessions / 10, c.sessions} {
		if n < len(live) || (n == len(live) && n > 0) {
			continue
		}
		if n > len(live) {
			t := time.Now()
			more, err := createSessions(ctx, kc, n-len(live), c.createConc, false)
			if err != nil {
				return err
			}
			live = append(live, more...)
			setup += time.Since(t)
		}
		progress("rotor serve with %s stored sessions: RSS", thousands(n))
		t := time.Now()
		m, err := rp.measureRSS(ctx, counter, n, c.settle)
		rssTime += time.Since(t)
		if err != nil {
			return err
		}
		target, verdict := "", ""
		if n == c.sessions {
			target, verdict = fmt.Sprintf("≤ 150 MiB at %s", thousands(c.sessions)), check(m.rss <= rssTarget)
		}
		r.add("scale", fmt.Sprintf("rotor serve RSS, %s stored sessions (max VmRSS after ready and listed)", thousands(n)),
			fmt.Sprintf("**%s** (VmHWM %s; ready %s after start, listed %s)", mib(m.rss), mib(m.hwm), m.ready.Round(10*time.Millisecond), m.listed.Round(10*time.Millisecond)), target, verdict)
	}

	// Raw deletes: what the API server does at the collector's parallelism,
	// with the collector's call (metadata client, UID and resourceVersion
	// preconditions).
	if len(live) < c.gcSessions {
		t := time.Now()
		more, err := createSessions(ctx, kc, c.gcSessions-len(live), c.createConc, false)
		if err != nil {
			return err
		}
		live = append(live, more...)
		setup += time.Since(t)
	}
	progress("raw deletes of %s sessions at parallelism %d", thousands(c.gcSessions), c.parallelism)
	victims := live[:c.gcSessions]
	left := len(live) - c.gcSessions
	var idx atomic.Int64
	raw := parallel(c.parallelism, len(victims), func(int) error {
		s := victims[idx.Add(1)-1]
		return res.Delete(ctx, s.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &s.uid, ResourceVersion: &s.rv}})
	})
	if raw.errs > 0 {
		return fmt.Errorf("raw deletes: %w", raw.firstErr)
	}
	r.spent("raw deletes", raw.elapsed)
	if n, err := countSessions(ctx, meta); err != nil || n != left {
		return fmt.Errorf("after raw deletes %d sessions are stored, want %d (%v)", n, left, err)
	}

	// The collector: the same number of sessions, created already expired
	// while no rotor runs, then a fresh rotor serve catches up.
	t := time.Now()
	if _, err := createSessions(ctx, kc, c.gcSessions, c.createConc, true); err != nil {
		return err
	}
	setup += time.Since(t)
	progress("rotor serve collecting %s expired sessions", thousands(c.gcSessions))
	gc, err := rp.measureGC(ctx, meta, c.gcSessions+left, left)
	if err != nil {
		return err
	}
	r.spent("collector", gc.total)
	gcRate := float64(c.gcSessions) / gc.collecting.Seconds()
	note := ""
	if qps := server.DefaultOptions().APIQPS; gcRate > 0.9*qps {
		// The collector deletes through the metadata client built from
		// the issuer's config: --api-qps applies to it too.
		note = fmt.Sprintf("; at the metadata client's --api-qps %.0f", qps)
	}
	r.add("garbage collection", fmt.Sprintf("rotor's collector, %s expired sessions (catch-up after start)", thousands(c.gcSessions)),
		fmt.Sprintf("**%.0f deletes/s** (%s from the first to the last delete; %s from process start; RSS max %s%s)",
			gcRate, gc.collecting.Round(100*time.Millisecond), gc.total.Round(100*time.Millisecond), mib(gc.rss), note), "", "")
	r.add("garbage collection", fmt.Sprintf("limit: raw deletes, parallelism %d (metadata client, UID+resourceVersion preconditions)", c.parallelism),
		fmt.Sprintf("**%.0f deletes/s** (%s, p50 %s, p99 %s)", raw.rate(), raw.elapsed.Round(100*time.Millisecond),
			ms(percentile(sortedCopy(raw.lat), 0.5)), ms(percentile(sortedCopy(raw.lat), 0.99))), "", "")
	r.add("garbage collection", "collector ÷ limit", fmt.Sprintf("**%.2f**", gcRate/raw.rate()), "", "")
	return nil
}

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newSession is a RefreshToken as rotor's store writes it at login (name
// format, spec, the expires-at annotation the collector reads), live for a
// week or expired an hour ago.
func newSession(expired bool) *identityv1alpha1.RefreshToken {
	var b [16]byte
	_, _ = rand.Read(b[:])
	now := time.Now().Truncate(time.Second)
	abs := now.Add(30 * 24 * time.Hour)
	exp, used := now.Add(7*24*time.Hour), now
	if expired {
		exp, used = now.Add(-time.Hour), now.Add(-7*24*time.Hour-time.Hour)
	}
	return &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   scaleNamespace,
			Name:        "rt-" + nameEncoding.EncodeToString(b[:]),
			Annotations: map[string]string{sessions.ExpiresAtAnnotation: minTime(exp, abs).UTC().Format(time.RFC3339)},
		},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject:           "user-" + strconv.Itoa(int(b[0])),
			Groups:            []string{"dev", "ops"},
			ClientID:          "rotor",
			Audience:          []string{"rotor"},
			Method:            identityv1alpha1.AuthMethodPassword,
			SecretHash:        randomHash(),
			State:             identityv1alpha1.SessionActive,
			ExpiresAt:         metav1.NewTime(exp),
			AbsoluteExpiresAt: metav1.NewTime(abs),
			LastUsedAt:        metav1.NewTime(used),
		},
	}
}

// createSessions fills the store concurrently (setup, not a measurement).
func createSessions(ctx context.Context, kc client.Client, n, conc int, expired bool) ([]stored, error) {
	kind := "live"
	if expired {
		kind = "expired"
	}
	progress("creating %s %s sessions (concurrency %d)", thousands(n), kind, conc)
	out := make([]stored, n)
	var idx atomic.Int64
	var done atomic.Int64
	stopTicker := make(chan struct{})
	var tick sync.WaitGroup
	tick.Add(1)
	go func() {
		defer tick.Done()
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopTicker:
				return
			case <-t.C:
				progress("  %s/%s created", thousands(int(done.Load())), thousands(n))
			}
		}
	}()
	res := parallel(conc, n, func(int) error {
		i := idx.Add(1) - 1
		rt := newSession(expired)
		var err error
		for attempt := range 5 {
			// Retry the same object: a create that timed out may have
			// landed, and the store must hold exactly n sessions.
			obj := rt.DeepCopy()
			err = kc.Create(ctx, obj)
			if apierrors.IsAlreadyExists(err) && attempt > 0 {
				err = kc.Get(ctx, client.ObjectKeyFromObject(rt), obj)
			}
			if err == nil {
				out[i] = stored{obj.Name, obj.UID, obj.ResourceVersion}
				done.Add(1)
				return nil
			}
			if ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		}
		return err
	})
	close(stopTicker)
	tick.Wait()
	if res.errs > 0 {
		return nil, fmt.Errorf("creating sessions: %w", res.firstErr)
	}
	progress("  %s created in %s (%.0f/s)", thousands(n), res.elapsed.Round(100*time.Millisecond), res.rate())
	return out, nil
}

// countSessions counts stored sessions with one small list: the first item
// and the API server's count of the rest.
func countSessions(ctx context.Context, meta metadata.Interface) (int, error) {
	res := meta.Resource(sessions.GroupVersionResource).Namespace(scaleNamespace)
	opts := metav1.ListOptions{Limit: 1}
	l, err := res.List(ctx, opts)
	if err != nil {
		return 0, err
	}
	n := len(l.Items)
	if l.RemainingItemCount != nil {
		return n + int(*l.RemainingItemCount), nil
	}
	// No count given: page through.
	for l.Continue != "" {
		opts.Continue, opts.Limit = l.Continue, 5000
		if l, err = res.List(ctx, opts); err != nil {
			return 0, err
		}
		n += len(l.Items)
	}
	return n, nil
}

// rotorProcess starts `rotor serve` as a separate process against the
// control plane, on loopback ports, metrics off.
type rotorProcess struct {
	bin, kubeconfig, dir string
	runs                 int
}

type proc struct {
	cmd      *exec.Cmd
	probeURL string
	logPath  string
	exited   chan error
}

func (rp *rotorProcess) start() (*proc, error) {
	issuer, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probe, err := freeAddr()
	if err != nil {
		return nil, err
	}
	rp.runs++
	logPath := filepath.Join(rp.dir, fmt.Sprintf("rotor-%d.log", rp.runs))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(rp.bin, "serve",
		"--issuer-url", "http://"+issuer, "--insecure-http", "--listen-address", issuer,
		"--namespace", scaleNamespace, "--metrics-bind-address", "0", "--health-probe-bind-address", probe)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+rp.kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, probeURL: "http://" + probe + "/readyz", logPath: logPath, exited: make(chan error, 1)}
	go func() {
		p.exited <- cmd.Wait()
		logFile.Close()
	}()
	return p, nil
}

// stop sends SIGTERM, so the leader releases its Lease and the next
// process leads at once, and kills after 20s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *proc) failed(err error) error {
	tail, _ := os.ReadFile(p.logPath)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return fmt.Errorf("%w; rotor's log ends:\n%s", err, tail)
}

// memory reads VmRSS and VmHWM (peak RSS) from /proc/PID/status.
func (p *proc) memory() (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	return rss, hwm, sc.Err()
}

type rssResult struct {
	rss, hwm      int64
	ready, listed time.Duration
}

// measureRSS starts rotor with n sessions stored and samples its RSS until
// it is ready, the collector has listed every page (seen in the API
// server's LIST count) and settle has passed; it reports the largest sample.
func (rp *rotorProcess) measureRSS(ctx context.Context, counter *apiCounter, n int, settle time.Duration) (rssResult, error) {
	before, err := counter.snapshot(ctx)
	if err != nil {
		return rssResult{}, err
	}
	p, err := rp.start()
	if err != nil {
		return rssResult{}, err
	}
	defer p.stop()
	start := time.Now()
	var m rssResult
	sample := func() error {
		select {
		case err := <-p.exited:
			return p.failed(fmt.Errorf("rotor exited: %v", err))
		default:
		}
		rss, hwm, err := p.memory()
		if err != nil {
			return err
		}
		m.rss, m.hwm = max(m.rss, rss), max(m.hwm, hwm)
		return nil
	}
	// The collector lists ceil(n/500) pages (at least one), the eviction
	// watch one page of one.
	wantLists := float64(max(1, (n+gcPageSize-1)/gcPageSize) + 1)
	deadline := start.Add(3 * time.Minute)
	for m.ready == 0 || m.listed == 0 {
		if err := sample(); err != nil {
			return m, err
		}
		if m.ready == 0 && probeOK(p.probeURL) {
			m.ready = time.Since(start)
		}
		if m.listed == 0 {
			now, err := counter.snapshot(ctx)
			if err != nil {
				return m, err
			}
			if now.minus(before).verb("LIST") >= wantLists {
				m.listed = time.Since(start)
			}
		}
		if time.Now().After(deadline) {
			return m, p.failed(errors.New("rotor not ready and listed within 3 minutes"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for end := time.Now().Add(settle); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if err := sample(); err != nil {
			return m, err
		}
	}
	return m, sample()
}

func probeOK(u string) bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

type gcResult struct {
	collecting, total time.Duration
	rss               int64
}

// measureGC starts rotor with stored sessions of which all but left are
// expired, and times until only left remain: from process start, and from
// the first delete seen to the last.
func (rp *rotorProcess) measureGC(ctx context.Context, meta metadata.Interface, stored, left int) (gcResult, error) {
	p, err := rp.start()
	if err != nil {
		return gcResult{}, err
	}
	defer p.stop()
	start := time.Now()
	var g gcResult
	var first time.Time
	// Bounded: even a collector ten times slower than the API server's
	// deletes should be done well within this.
	deadline := start.Add(15 * time.Minute)
	for {
		select {
		case err := <-p.exited:
			return g, p.failed(fmt.Errorf("rotor exited: %v", err))
		default:
		}
		if rss, _, err := p.memory(); err == nil {
			g.rss = max(g.rss, rss)
		}
		n, err := countSessions(ctx, meta)
		if err != nil {
			return g, err
		}
		now := time.Now()
		if first.IsZero() && n < stored {
			first = now
		}
		if n <= left {
			g.total = now.Sub(start)
			g.collecting = now.Sub(first)
			return g, nil
		}
		if now.After(deadline) {
			return g, p.failed(fmt.Errorf("collector left %d of %d expired sessions after 15 minutes", n-left, stored-left))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
