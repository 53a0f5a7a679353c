package main

import (
	"bufio"
	"bytes"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/controlplane"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/server"
	"rotor.dev/rotor/pkg/sessions"
)

const (
	// scaleNamespace is the one rotor serve under test runs in.
	scaleNamespace = "bench-scale"
	// rawNamespace holds the raw-delete sample, out of that rotor's sight.
	rawNamespace = "bench-raw"
	rssTarget    = 150 << 20
	// gcLimit bounds the collector's run: even one ten times slower than
	// the API server's deletes is done well within it.
	gcLimit = 15 * time.Minute
	// rawStopBefore is how long before the expiry the raw sample yields
	// to the collector, and an earlier RSS sample's rotor is stopped (only
	// the last one may collect).
	rawStopBefore = 2 * time.Second
)

// stored is what a delete with rotor's preconditions needs.
type stored struct {
	name string
	uid  types.UID
	rv   string
}

// runScale measures a separate `rotor serve`, as deployed: its RSS with 0,
// N/10 and N stored sessions, and how fast its collector deletes them,
// next to raw deletes at the same parallelism.
//
// One set of sessions serves both: they are live while the RSS is sampled
// but all expire at one moment chosen shortly after the last sample, and
// the rotor of that sample, left running, collects them when its timer
// fires. The sessions (and the raw-delete sample) are seeded straight into
// etcd; the moment comes from the seed rate and from the delete rate
// measured on the first part of the raw sample. The rest of that sample is
// deleted in the time left before the expiry (stopping short of it, so that
// it never overlaps the collector, and finishing after the collector if
// time ran short), so that the margin for a slower run is mostly work, not
// waiting.
func runScale(ctx context.Context, c config, cp *controlplane.ControlPlane, r *report) error {
	cfg := rest.CopyConfig(cp.Config)
	// No client-side rate limit: raw deletes go as fast as
	// the API server takes them.
	cfg.QPS, cfg.UserAgent = -1, "rotor-bench-raw"
	kc, err := client.New(cfg, client.Options{Scheme: rotorscheme.Scheme})
	if err != nil {
		return err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, ns := range []string{scaleNamespace, rawNamespace} {
		if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	// The default client of --default-client-id, before any rotor starts;
	// the first one's reconciler marks it Ready (measureRSS waits for it).
	if _, err := createClient(ctx, kc, scaleNamespace, defaultClientID, publicClientSpec()); err != nil {
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
	kcPath, err := writeKubeconfig(dir, kubeconfig)
	if err != nil {
		return err
	}
	counter, err := newAPICounter(cp.Config)
	if err != nil {
		return err
	}
	bin, err := rotorBinary(c)
	if err != nil {
		return err
	}
	// The collector's rate bound off: this measures its machinery against
	// raw deletes; `make bench-scale` measures the bound's effect on live
	// clients.
	rp := rotorProcess{bin: bin, kubeconfig: kcPath, dir: dir, args: []string{"--session-gc-rate=0"}, clientReady: func() bool {
		ok, err := clientReady(ctx, kc, scaleNamespace, defaultClientID)
		return err == nil && ok
	}}
	seeder := newEtcdSeeder(cp.EtcdURL())

	var seeding, rssTime, rawTime, waitTime, gcTime time.Duration
	defer func() {
		r.spent("seeding (store and raw sample)", seeding)
		r.spent("RSS", rssTime)
		if c.gcSessions > 0 {
			r.spent("raw deletes", rawTime)
			r.spent("waiting for the expiry", waitTime)
			r.spent("collector", gcTime)
		}
	}()

	// The first sessions created stay live for a week, the last
	// gcSessions expire together.
	longLived := c.sessions - c.gcSessions
	var expiry time.Time
	var raw *rawSample
	var keep *proc // the last sample's rotor, left running to collect
	defer func() {
		if keep != nil {
			keep.stop()
		}
	}()
	var gcDone chan gcResult
	// listedAt is when the collecting rotor had listed the sessions.
	var listedAt time.Time
	have := 0
	for _, n := range rssLevels(c.sessions) {
		if n > 0 && c.gcSessions > 0 && expiry.IsZero() {
			// The seed rate and the delete rate, measured on the raw
			// sample and the first part of its deletes, set the moment
			// the sessions expire.
			raw = &rawSample{res: meta.Resource(sessions.GroupVersionResource).Namespace(rawNamespace), items: make([]stored, c.rawDeletes)}
			t := time.Now()
			seeded, err := seeder.seed(ctx, rawNamespace, raw.items, 0, c.rawDeletes, c.rawDeletes, time.Time{})
			if err != nil {
				return err
			}
			if err := awaitStored(ctx, meta, rawNamespace, c.rawDeletes); err != nil {
				return err
			}
			raw.made = c.rawDeletes
			seeding += time.Since(t)
			probe := min(c.rawDeletes, max(1000, c.rawDeletes/10))
			progress("raw deletes of the first %s sessions at parallelism %d", thousands(probe), c.parallelism)
			t = time.Now()
			if err := raw.delete(ctx, c.parallelism, probe, time.Time{}); err != nil {
				return err
			}
			rawTime += time.Since(t)
			var why string
			expiry, why = chooseExpiry(c, seeded.rate(), raw.deletes.rate(), probe)
			progress("the %s expiring sessions expire at %s, in %s (%s)", thousands(c.gcSessions), expiry.Format("15:04:05"),
				time.Until(expiry).Round(time.Second), why)
		}
		if n > have {
			t := time.Now()
			if _, err := seeder.seed(ctx, scaleNamespace, nil, have, n, longLived, expiry); err != nil {
				return err
			}
			if err := awaitStored(ctx, meta, scaleNamespace, n); err != nil {
				return err
			}
			have = n
			seeding += time.Since(t)
		}
		// A fresh process for each level: startup (the collector's paged
		// list) is where an issuer that holds every session runs out of
		// memory. The last one stays up to collect.
		last := n == c.sessions && c.gcSessions > 0
		var onListed func(*proc)
		if last {
			// Deletes cannot start before the collector has listed:
			// from then on, or from just before the expiry, watch them.
			gcDone = make(chan gcResult, 1)
			onListed = func(p *proc) {
				go func() { gcDone <- p.watchGC(ctx, expiry.Add(-time.Second), c.sessions, longLived) }()
			}
		}
		// Only the last sample's rotor may collect: an earlier one is
		// stopped short of the expiry.
		var stopBy time.Time
		if !last && n > longLived && !expiry.IsZero() {
			stopBy = expiry.Add(-rawStopBefore)
		}
		target, verdict, unmeasured := "", "", ""
		if n == c.sessions {
			target, unmeasured = fmt.Sprintf("≤ 150 MiB at %s", thousands(c.sessions)), "not measured"
		}
		what := fmt.Sprintf("rotor serve RSS, %s stored sessions (max VmRSS after ready and listed)", thousands(n))
		late := fmt.Sprintf("**not measured**: the sessions expire at %s UTC, before this sample could end (the store filled slower than estimated: raise --expiry-margin)", expiry.UTC().Format("15:04:05"))
		if !stopBy.IsZero() && !ahead(stopBy) {
			progress("rotor serve with %s stored sessions: not measured, the sessions expire at %s", thousands(n), expiry.Format("15:04:05"))
			r.add("scale", what, late, target, unmeasured)
			continue
		}
		progress("rotor serve with %s stored sessions: RSS", thousands(n))
		t := time.Now()
		m, p, err := rp.measureRSS(ctx, counter, n, c.settle, last, onListed, stopBy)
		rssTime += time.Since(t)
		keep = p
		switch {
		case errors.Is(err, errCutShort):
			progress("  stopped: the sessions expire at %s", expiry.Format("15:04:05"))
			r.add("scale", what, late, target, unmeasured)
			continue
		case err != nil:
			return err
		}
		if last {
			listedAt = t.Add(m.listed)
		}
		if target != "" {
			verdict = check(m.rss <= rssTarget)
		}
		value := fmt.Sprintf("**%s** (VmHWM %s; ready %s after start, listed %s)", mib(m.rss), mib(m.hwm), m.ready.Round(10*time.Millisecond), m.listed.Round(10*time.Millisecond))
		if n > longLived && !expiry.IsZero() && !m.end.Before(expiry) {
			// The collector may have been at work: not this figure.
			progress("  the sessions expired at %s, before this sample ended (%s)", expiry.Format("15:04:05"), m.end.Format("15:04:05"))
			value = fmt.Sprintf("**not measured**: the sessions expired at %s UTC, before the sample ended at %s (the store filled slower than estimated: raise --expiry-margin); max VmRSS %s with the collector at work",
				expiry.UTC().Format("15:04:05"), m.end.UTC().Format("15:04:05"), mib(m.rss))
			verdict = unmeasured
		}
		r.add("scale", what, value, target, verdict)
	}
	if c.gcSessions == 0 {
		return nil
	}

	// Raw deletes: what the API server does at the collector's parallelism,
	// with the collector's call (metadata client, UID and resourceVersion
	// preconditions), while the store holds the sessions about to expire.
	// Whatever is left at the expiry waits for the collector to finish.
	stopAt := expiry.Add(-rawStopBefore)
	if ahead(stopAt) {
		progress("raw deletes of the remaining %s sessions at parallelism %d", thousands(c.rawDeletes-raw.deleted), c.parallelism)
		t := time.Now()
		if err := raw.delete(ctx, c.parallelism, c.rawDeletes, stopAt); err != nil {
			return err
		}
		rawTime += time.Since(t)
	}
	beforeExpiry := raw.deleted
	if raw.deleted < c.rawDeletes {
		progress("the raw sample yields to the collector: %s of %s deleted; the rest follows the collector",
			thousands(raw.deleted), thousands(c.rawDeletes))
	}

	// The collector: the rotor of the last RSS sample, woken by its timer.
	t := time.Now()
	if wait := time.Until(expiry); wait > 0 {
		progress("waiting %s for the expiry at %s", wait.Round(100*time.Millisecond), expiry.Format("15:04:05"))
	}
	progress("rotor serve collecting %s expired sessions", thousands(c.gcSessions))
	var gc gcResult
	select {
	case gc = <-gcDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	if expiry.After(t) {
		waitTime, gcTime = expiry.Sub(t), time.Since(expiry)
	} else {
		gcTime = time.Since(t)
	}
	keep.stop()
	keep = nil
	if gc.err != nil {
		return gc.err
	}

	if raw.deleted < c.rawDeletes {
		progress("raw deletes of the remaining %s sessions at parallelism %d", thousands(c.rawDeletes-raw.deleted), c.parallelism)
		t := time.Now()
		if err := raw.delete(ctx, c.parallelism, c.rawDeletes, time.Time{}); err != nil {
			return err
		}
		rawTime += time.Since(t)
	}
	if n, err := countSessions(ctx, meta, rawNamespace); err != nil || n != 0 {
		return fmt.Errorf("after raw deletes %d sessions are stored, want 0 (%v)", n, err)
	}

	gcRate := float64(c.gcSessions) / gc.last.Sub(gc.first).Seconds()
	note := ""
	if qps := server.DefaultOptions().APIQPS; gcRate > 0.9*qps {
		// The collector deletes through the metadata client built from
		// the issuer's config: --api-qps applies to it too.
		note = fmt.Sprintf("; at the metadata client's --api-qps %.0f", qps)
	}
	how := "the running rotor of the last RSS sample, woken by its timer"
	if !listedAt.Before(expiry) {
		how = "catch-up: they had expired before the rotor of the last RSS sample had listed them"
	}
	r.add("garbage collection", fmt.Sprintf("rotor's collector (--session-gc-rate 0: no bound), %s sessions expiring at once (%s)", thousands(c.gcSessions), how),
		fmt.Sprintf("**%.0f deletes/s** (%s from the first to the last delete; first delete seen %s after the expiry; RSS max %s%s)",
			gcRate, gc.last.Sub(gc.first).Round(100*time.Millisecond), gc.first.Sub(expiry).Round(100*time.Millisecond), mib(gc.rss), note), "", "")
	split := ""
	if beforeExpiry < c.rawDeletes {
		split = fmt.Sprintf("; %s before the expiry, %s after the collector", thousands(beforeExpiry), thousands(c.rawDeletes-beforeExpiry))
	}
	r.add("garbage collection", fmt.Sprintf("limit: raw deletes of a %s-session sample, parallelism %d (metadata client, UID+resourceVersion preconditions)", thousands(c.rawDeletes), c.parallelism),
		fmt.Sprintf("**%.0f deletes/s** (%s, p50 %s, p99 %s%s)", raw.deletes.rate(), raw.deletes.elapsed.Round(100*time.Millisecond),
			ms(percentile(sortedCopy(raw.deletes.lat), 0.5)), ms(percentile(sortedCopy(raw.deletes.lat), 0.99)), split), "", "")
	r.add("garbage collection", "collector ÷ limit", fmt.Sprintf("**%.2f**", gcRate/raw.deletes.rate()), "", "")
	return nil
}

// rssLevels are the stored-session counts RSS is measured at: 0, n/10, n.
func rssLevels(n int) []int {
	levels := []int{0}
	for _, l := range []int{n / 10, n} {
		if l > levels[len(levels)-1] {
			levels = append(levels, l)
		}
	}
	return levels
}

// chooseExpiry picks the moment the sessions expire: after the store is
// seeded, the RSS samples are taken and the rest of the raw sample is
// deleted, plus the margin. The estimates are meant to be right, not
// pessimistic: the raw sample stops short of the expiry, so the slack for
// a slower run is its time plus --expiry-margin, and every second over the
// estimate is a second of waiting.
func chooseExpiry(c config, seedRate, deleteRate float64, probed int) (time.Time, string) {
	per := func(n int, rate float64) time.Duration {
		return time.Duration(float64(n) / rate * float64(time.Second))
	}
	// Seeding, then the API server's watch cache taking the objects in
	// (about as long again).
	fill := 2 * per(c.sessions, seedRate)
	var rss time.Duration
	for _, n := range rssLevels(c.sessions)[1:] {
		// Start, the collector's paged list (about 8,000 sessions a
		// second on 2 busy cores), settle, stop.
		rss += 1500*time.Millisecond + per(n, 8000) + c.settle
	}
	raw := per(c.rawDeletes-probed, deleteRate)
	at := time.Now().Add(fill + rss + raw + c.expiryMargin).Truncate(time.Second).Add(time.Second)
	return at, fmt.Sprintf("seeding at %.0f/s: %s, RSS samples %s, raw deletes at %.0f/s: %s, margin %s",
		seedRate, fill.Round(time.Second), rss.Round(time.Second), deleteRate, raw.Round(time.Second), c.expiryMargin)
}

// rawSample is the raw-delete baseline: sessions in their own namespace,
// seeded into etcd and then deleted through the API, in parts if the
// expiry comes first.
type rawSample struct {
	res   metadata.ResourceInterface
	items []stored
	// made and deleted count the items seeded and deleted so far.
	made, deleted int
	deletes       run
}

// delete deletes the sample up to index upTo (exclusive), until stopAt
// (zero: never) has passed.
func (s *rawSample) delete(ctx context.Context, conc, upTo int, stopAt time.Time) error {
	upTo = min(upTo, s.made)
	if s.deleted >= upTo || !ahead(stopAt) {
		return nil
	}
	res, next := pool(conc, s.deleted, upTo, stopAt, func(i int) error {
		it := s.items[i]
		return s.res.Delete(ctx, it.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &it.uid, ResourceVersion: &it.rv}})
	})
	s.deletes.merge(res)
	s.deleted = next
	if res.errs > 0 {
		return fmt.Errorf("raw deletes: %w", res.firstErr)
	}
	return nil
}

// ahead reports whether stopAt (zero: never) is still ahead.
func ahead(stopAt time.Time) bool {
	return stopAt.IsZero() || time.Now().Before(stopAt)
}

// pool runs conc workers over the indices [from, to), op(i) once each,
// until all are done, one fails, or stopAt (zero: never) has passed. It
// returns the timing and how far it got: unless an op failed, every index
// below next was done.
func pool(conc, from, to int, stopAt time.Time, op func(i int) error) (res run, next int) {
	var idx atomic.Int64
	idx.Store(int64(from))
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range max(1, min(conc, to-from)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var err error
			for ahead(stopAt) {
				i := int(idx.Add(1) - 1)
				if i >= to {
					break
				}
				t := time.Now()
				if err = op(i); err != nil {
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.add(lat, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.lat)
	return res, min(int(idx.Load()), to)
}

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newSession is a RefreshToken as rotor's store writes it at login (name
// format, labels with the expires-at label the collector reads, spec): live for a
// week, or (expiresAt set) with an absolute lifetime ending at expiresAt,
// which caps the sliding expiry as rotor does.
func newSession(namespace string, expiresAt time.Time) *identityv1alpha1.RefreshToken {
	var b [16]byte
	_, _ = rand.Read(b[:])
	now := time.Now().Truncate(time.Second)
	abs := now.Add(30 * 24 * time.Hour)
	if !expiresAt.IsZero() {
		abs = expiresAt
	}
	exp := minTime(now.Add(7*24*time.Hour), abs)
	subject := "user-" + strconv.Itoa(int(b[0]))
	labels := sessions.Labels(subject, "rotor")
	labels[sessions.ExpiresAtLabel] = strconv.FormatInt(exp.Unix(), 10)
	return &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      "rt-" + nameEncoding.EncodeToString(b[:]),
			Labels:    labels,
		},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject:   subject,
			ClientID:  "rotor",
			State:     identityv1alpha1.SessionActive,
			ExpiresAt: metav1.NewTime(exp),
			Session: identityv1alpha1.Session{
				Groups:            []string{"dev", "ops"},
				Audience:          []string{"rotor"},
				Method:            identityv1alpha1.AuthMethodPassword,
				SecretHash:        randomHash(),
				AbsoluteExpiresAt: metav1.NewTime(abs),
				LastUsedAt:        metav1.NewTime(now),
			},
		},
	}
}

// awaitStored waits until the API server lists want sessions in namespace:
// seeded objects reach it through its watch on etcd.
func awaitStored(ctx context.Context, meta metadata.Interface, namespace string, want int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		n, err := countSessions(ctx, meta, namespace)
		if err == nil && n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server lists %d sessions in %s, want %d (%v)", n, namespace, want, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// countSessions counts the sessions stored in namespace with one small
// list: the first item and the API server's count of the rest.
func countSessions(ctx context.Context, meta metadata.Interface, namespace string) (int, error) {
	res := meta.Resource(sessions.GroupVersionResource).Namespace(namespace)
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

// rotorBinary is the absolute path of --rotor-bin, which must exist.
func rotorBinary(c config) (string, error) {
	bin, err := filepath.Abs(c.rotorBin)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s: %w (run 'make build')", c.rotorBin, err)
	}
	return bin, nil
}

// writeKubeconfig writes kubeconfig into dir, for `rotor serve` processes,
// and returns its path.
func writeKubeconfig(dir string, kubeconfig []byte) (string, error) {
	p := filepath.Join(dir, "kubeconfig")
	return p, os.WriteFile(p, kubeconfig, 0o600)
}

// rotorProcess starts `rotor serve` as a separate process against the
// control plane, on loopback ports, metrics in plain HTTP, with the default
// client defaultClientID and args.
type rotorProcess struct {
	bin, kubeconfig, dir string
	args                 []string
	runs                 int
	// clientReady reports whether the default client is Ready, which a
	// sample waits for as it waits for readiness.
	clientReady func() bool
	// readyLimit bounds the wait for ready and listed (0: 3 minutes).
	readyLimit time.Duration
}

type proc struct {
	cmd       *exec.Cmd
	issuerURL string
	probeURL  string
	// metricsURL is rotor's /metrics (plain HTTP on loopback).
	metricsURL string
	logPath    string
	// exited is closed when the process has exited, with waitErr set.
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
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
	metricsAddr, err := freeAddr()
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
		"--namespace", scaleNamespace, "--health-probe-bind-address", probe,
		// Its collector's gauge says when the sessions are listed.
		"--metrics-bind-address", metricsAddr, "--metrics-secure=false",
		// `rotor serve` requires client_id unless told a default (Public) client.
		"--default-client-id", defaultClientID,
		// The seeded sessions are not the abuse the limits guard against.
		"--max-sessions-per-subject", "0", "--sessions-per-subject-burst", "0", "--unauthenticated-burst", "0")
	cmd.Args = append(cmd.Args, rp.args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+rp.kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, issuerURL: "http://" + issuer, probeURL: "http://" + probe + "/readyz", metricsURL: "http://" + metricsAddr + "/metrics", logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM, so the leader releases its Lease and the next
// process leads at once, and kills after 20s.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// gone returns an error if the process has exited.
func (p *proc) gone() error {
	select {
	case <-p.exited:
		return p.failed(fmt.Errorf("rotor exited: %v", p.waitErr))
	default:
		return nil
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
	return pidMemory(p.cmd.Process.Pid)
}

// parseStatus reads VmRSS and VmHWM from the text of /proc/PID/status.
func parseStatus(b []byte) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
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
	// end is when the last sample was taken.
	end time.Time
}

// errCutShort is measureRSS's error when stopBy came first.
var errCutShort = errors.New("RSS sample cut short")

// measureRSS starts rotor with n sessions stored and samples its RSS until
// it is ready, the collector has listed every session (its gauge of tracked
// sessions reaches n) and settle has passed; it reports the largest
// sample. onListed (if set) is called once the collector has listed. With
// keep the process is left running and returned, else it is stopped. If
// stopBy (zero: none) comes first, the process is stopped then and the
// error is errCutShort.
func (rp *rotorProcess) measureRSS(ctx context.Context, counter *apiCounter, n int, settle time.Duration, keep bool, onListed func(*proc), stopBy time.Time) (rssResult, *proc, error) {
	var m rssResult
	before, err := counter.snapshot(ctx)
	if err != nil {
		return m, nil, err
	}
	p, err := rp.start()
	if err != nil {
		return m, nil, err
	}
	limit := rp.readyLimit
	if limit == 0 {
		limit = 3 * time.Minute
	}
	if err := p.sampleRSS(ctx, counter, before, n, settle, onListed, stopBy, rp.clientReady, limit, &m); err != nil || !keep {
		p.stop()
		return m, nil, err
	}
	return m, p, nil
}

func (p *proc) sampleRSS(ctx context.Context, counter *apiCounter, before requestCounts, n int, settle time.Duration, onListed func(*proc), stopBy time.Time, clientReady func() bool, limit time.Duration, m *rssResult) error {
	start := time.Now()
	sample := func() error {
		if !ahead(stopBy) {
			return errCutShort
		}
		if err := p.gone(); err != nil {
			return err
		}
		rss, hwm, err := p.memory()
		if err != nil {
			return err
		}
		m.rss, m.hwm = max(m.rss, rss), max(m.hwm, hwm)
		m.end = time.Now()
		return nil
	}
	deadline := start.Add(limit)
	clientOK := clientReady == nil
	for m.ready == 0 || m.listed == 0 || !clientOK {
		if err := sample(); err != nil {
			return err
		}
		if m.ready == 0 && probeOK(p.probeURL) {
			m.ready = time.Since(start)
		}
		if !clientOK && m.ready != 0 {
			clientOK = clientReady()
		}
		if m.listed == 0 && m.ready != 0 {
			if tracked, err := p.gcTracked(ctx); err == nil && tracked >= float64(n) {
				m.listed = time.Since(start)
				if onListed != nil {
					onListed(p)
				}
			}
		}
		if time.Now().After(deadline) {
			return p.failed(fmt.Errorf("rotor not ready, listed and its client %s Ready within %s (ready %v, listed %v, client Ready %v)", defaultClientID, limit, m.ready != 0, m.listed != 0, clientOK))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for end := time.Now().Add(settle); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if err := sample(); err != nil {
			return err
		}
	}
	return sample()
}

// gcTracked reads rotor_session_gc_tracked_sessions, the sessions in its
// collector's index: set to all of them when its first list is complete.
func (p *proc) gcTracked(ctx context.Context) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rotor_session_gc_tracked_sessions "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("rotor_session_gc_tracked_sessions not in rotor's metrics")
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
	// first and last are when the first and the last delete were seen.
	first, last time.Time
	rss         int64
	err         error
}

// watchGC reads how many sessions rotor's collector tracks (its metric,
// which its watch of the sessions keeps equal to the stored count) every
// 100ms from `from` on until only left of them remain, noting when the
// first and the last delete were seen and the process's largest RSS. It
// asks the API server nothing: a count of the stored sessions (a list with
// limit 1) costs the API server time in proportion to all of them, and ten
// a second at a million sessions halved the refreshes it was measuring.
func (p *proc) watchGC(ctx context.Context, from time.Time, stored, left int) (g gcResult) {
	select {
	case <-time.After(time.Until(from)):
	case <-p.exited:
		g.err = p.gone()
		return g
	case <-ctx.Done():
		g.err = ctx.Err()
		return g
	}
	deadline := time.Now().Add(gcLimit)
	for {
		if g.err = p.gone(); g.err != nil {
			return g
		}
		if rss, _, err := p.memory(); err == nil {
			g.rss = max(g.rss, rss)
		}
		tracked, err := p.gcTracked(ctx)
		if err != nil {
			g.err = err
			return g
		}
		n, now := int(tracked), time.Now()
		if g.first.IsZero() && n < stored {
			g.first = now
		}
		if n <= left {
			g.last = now
			return g
		}
		if now.After(deadline) {
			g.err = p.failed(fmt.Errorf("collector left %d of %d expired sessions after %s", n-left, stored-left, gcLimit))
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
}
