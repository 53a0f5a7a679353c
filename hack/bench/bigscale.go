package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"rotor.dev/rotor/config/crd"
	"rotor.dev/rotor/pkg/dev/controlplane"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/sessions"
)

// `make bench-scale` (--scale-only): what a store of a million sessions
// costs, on one local control plane of its own.
//
//   - sessions are seeded straight into etcd in chunks (the seeding rate
//     is reported), and rotor is started only once the API server has
//     caught up: its watch cache serves the last object seeded;
//   - etcd's database size per session after compaction and
//     defragmentation, minus the same figure for the empty control plane;
//   - the API server's resident memory (VmRSS, VmHWM) per stored session,
//     its watch cache holding every RefreshToken;
//   - a separate `rotor serve` with every session stored: its RSS and its
//     time to ready and to the collector's first full list.
//
// The API server's RSS is watched while the store fills: past
// --apiserver-rss-limit the run stops and reports how far it got.
const (
	// scaleEtcdQuota is etcd's --quota-backend-bytes: its default (2 GiB)
	// is within reach of a million sessions before compaction.
	scaleEtcdQuota = 8 << 30
	// scaleRSSTarget and scaleReadyTarget are the targets for
	// rotor serve with a million stored sessions.
	scaleRSSTarget   = 200 << 20
	scaleReadyTarget = 60 * time.Second
	// scaleEtcdTarget is the target for etcd's bytes per session.
	scaleEtcdTarget = 1536
	// catchUpLimit bounds the wait for the API server's watch cache.
	catchUpLimit = 15 * time.Minute
)

// scalePlane is an etcd and kube-apiserver started as
// pkg/dev/controlplane starts them, with a larger etcd quota.
type scalePlane struct {
	env     *envtest.Environment
	cfg     *rest.Config
	etcdURL string
	// apiPID and etcdPID are the processes' ids (0: not found).
	apiPID, etcdPID int
}

func startScalePlane() (*scalePlane, error) {
	dir := os.Getenv(controlplane.AssetsEnv)
	if dir == "" {
		dir = filepath.Join("bin", "k8s")
	}
	crds, err := crd.Definitions()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDInstallOptions:     envtest.CRDInstallOptions{CRDs: crds},
		ErrorIfCRDPathMissing: true,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{}
	env.ControlPlane.Etcd.Configure().Set("quota-backend-bytes", strconv.Itoa(scaleEtcdQuota))
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting control plane from %s (run 'make control-plane' to build it): %w", dir, err)
	}
	p := &scalePlane{env: env, cfg: cfg, etcdURL: env.ControlPlane.Etcd.URL.String()}
	if host, err := url.Parse(cfg.Host); err == nil {
		p.apiPID, _ = findProcess("kube-apiserver", "--secure-port="+host.Port())
	}
	p.etcdPID, _ = findProcess("etcd", "--listen-client-urls="+p.etcdURL)
	return p, nil
}

func (p *scalePlane) stop() error { return p.env.Stop() }

// pidMemory reads VmRSS and VmHWM (peak RSS) of pid from /proc.
func pidMemory(pid int) (rss, hwm int64, err error) {
	if pid <= 0 {
		return 0, 0, errors.New("process not found")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatus(b)
}

// etcdMaint talks to etcd's maintenance API through its JSON gateway.
type etcdMaint struct {
	url string
	hc  *http.Client
}

type etcdStatus struct {
	rev           int64
	dbSize, inUse int64
}

func (e *etcdMaint) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("etcd %s reply: %w", path, err)
	}
	return nil
}

func (e *etcdMaint) status(ctx context.Context) (etcdStatus, error) {
	var reply struct {
		Header struct {
			Revision json.Number `json:"revision"`
		} `json:"header"`
		DBSize      json.Number `json:"dbSize"`
		DBSizeInUse json.Number `json:"dbSizeInUse"`
	}
	if err := e.call(ctx, "/v3/maintenance/status", struct{}{}, &reply); err != nil {
		return etcdStatus{}, err
	}
	rev, _ := reply.Header.Revision.Int64()
	size, _ := reply.DBSize.Int64()
	inUse, _ := reply.DBSizeInUse.Int64()
	return etcdStatus{rev: rev, dbSize: size, inUse: inUse}, nil
}

// compactDefrag compacts at the current revision, defragments and
// returns the status after, with how long the defragmentation took.
func (e *etcdMaint) compactDefrag(ctx context.Context) (etcdStatus, time.Duration, error) {
	st, err := e.status(ctx)
	if err != nil {
		return st, 0, err
	}
	if err := e.call(ctx, "/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(st.rev, 10), "physical": true}, nil); err != nil {
		return st, 0, err
	}
	t := time.Now()
	if err := e.call(ctx, "/v3/maintenance/defragment", struct{}{}, nil); err != nil {
		return st, 0, err
	}
	d := time.Since(t)
	st, err = e.status(ctx)
	return st, d, err
}

// memWatch samples a process's VmRSS every 500ms, keeps the largest, and
// calls over (once) when it passes limit.
type memWatch struct {
	mu   sync.Mutex
	max  int64
	stop chan struct{}
	done chan struct{}
}

func watchMemory(pid int, limit int64, over func(rss int64)) *memWatch {
	w := &memWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		fired := false
		for {
			if rss, _, err := pidMemory(pid); err == nil {
				w.mu.Lock()
				w.max = max(w.max, rss)
				w.mu.Unlock()
				if rss > limit && !fired {
					fired = true
					over(rss)
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *memWatch) end() int64 {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.max
}

// perSession is bytes per session: "612 B".
func perSession(b int64, n int) string {
	if n <= 0 {
		return "n/a"
	}
	v := float64(b) / float64(n)
	if v >= 10240 {
		return fmt.Sprintf("%.1f KiB", v/1024)
	}
	return fmt.Sprintf("%.0f B", v)
}

// errRSSLimit stops the run when the API server's RSS passes the limit.
var errRSSLimit = errors.New("the API server's RSS passed --apiserver-rss-limit")

// runBigScale is `make bench-scale`. It reports what it measured even
// when a later step fails; the error says which.
func runBigScale(ctx context.Context, c config, r *report) (err error) {
	start := time.Now()
	progress("starting the control plane (etcd --quota-backend-bytes %d GiB)", scaleEtcdQuota>>30)
	sp, err := startScalePlane()
	if err != nil {
		return err
	}
	defer func() {
		progress("stopping the control plane")
		if e := sp.stop(); e != nil {
			progress("stopping the control plane: %v", e)
		}
	}()
	r.versions(c, nil)
	if sp.apiPID == 0 || sp.etcdPID == 0 {
		return fmt.Errorf("the control plane's processes were not found (kube-apiserver %d, etcd %d)", sp.apiPID, sp.etcdPID)
	}
	n := c.sessions
	defer func() {
		r.add("run", "sizes", fmt.Sprintf("%s sessions seeded in chunks of %s (%d transactions of %d in parallel), settle %s, then %s more expiring together with %d clients refreshing, expiry margin %s; API server RSS limit %s",
			thousands(n), thousands(c.seedChunk), seedConc, seedBatch, c.settle, thousands(c.gcExpiring), c.gcClients, c.expiryMargin, mib(c.apiRSSLimit)), "", "")
		r.add("run", "duration", time.Since(start).Round(time.Second).String()+" ("+joinPhases(r.phases)+")", "≈ 15 min at 1,000,000", "")
	}()

	cfg := rest.CopyConfig(sp.cfg)
	cfg.QPS, cfg.UserAgent = -1, "rotor-bench-scale"
	kc, err := client.New(cfg, client.Options{Scheme: rotorscheme.Scheme})
	if err != nil {
		return err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace}}); err != nil {
		return err
	}
	if _, err := createClient(ctx, kc, scaleNamespace, defaultClientID, publicClientSpec()); err != nil {
		return err
	}
	// The account the live clients of the collection log in as.
	password, err := createAccount(ctx, kc, scaleNamespace)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rotor-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	u, err := sp.env.AddUser(envtest.User{Name: "rotor-bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := u.KubeConfig()
	if err != nil {
		return err
	}
	kcPath, err := writeKubeconfig(dir, kubeconfig)
	if err != nil {
		return err
	}
	maint := &etcdMaint{url: sp.etcdURL, hc: &http.Client{Timeout: 10 * time.Minute}}

	// The empty control plane, settled.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.settle):
	}
	base, _, err := maint.compactDefrag(ctx)
	if err != nil {
		return fmt.Errorf("baseline compaction: %w", err)
	}
	apiBase, apiBaseHWM, err := pidMemory(sp.apiPID)
	if err != nil {
		return err
	}
	etcdBase, _, _ := pidMemory(sp.etcdPID)
	progress("empty control plane: etcd db %s (in use %s), API server VmRSS %s", mib(base.dbSize), mib(base.inUse), mib(apiBase))
	r.add("baseline", "empty control plane (compacted, defragmented)", fmt.Sprintf("etcd db %s (in use %s); API server VmRSS %s (VmHWM %s); etcd VmRSS %s",
		mib(base.dbSize), mib(base.inUse), mib(apiBase), mib(apiBaseHWM), mib(etcdBase)), "", "")

	// The API server makes a custom resource's storage and watch cache
	// on the first request for it: one now, so that its cache follows the
	// seeding (else it would list every session from etcd at the first
	// request after it, and a read at resourceVersion 0 would go to etcd
	// until that list is done).
	res := meta.Resource(sessions.GroupVersionResource).Namespace(scaleNamespace)
	if _, err := res.List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return err
	}
	time.Sleep(time.Second)

	// Seeding, the API server's RSS watched.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var overAt int64
	watch := watchMemory(sp.apiPID, c.apiRSSLimit, func(rss int64) {
		overAt = rss
		progress("the API server's VmRSS is %s, past the limit %s: stopping", mib(rss), mib(c.apiRSSLimit))
		cancel(errRSSLimit)
	})
	seeder := newEtcdSeeder(sp.etcdURL)
	t := time.Now()
	seeded := 0
	var sentinel []stored
	for seeded < n {
		to := min(seeded+c.seedChunk, n-1)
		if seeded == n-1 {
			// The last session, alone: the highest revision, the one
			// the API server's cache must serve before rotor starts.
			sentinel = make([]stored, 1)
			if _, err := seeder.seed(sctx, scaleNamespace, sentinel, 0, 1, 1, time.Time{}); err != nil {
				break
			}
			seeded = n
			break
		}
		if _, err := seeder.seed(sctx, scaleNamespace, nil, seeded, to, to, time.Time{}); err != nil {
			break
		}
		seeded = to
		if rss, _, err := pidMemory(sp.apiPID); err == nil {
			progress("  %s seeded in %s; API server VmRSS %s", thousands(seeded), time.Since(t).Round(100*time.Millisecond), mib(rss))
		}
	}
	seedTime := time.Since(t)
	r.spent("seeding", seedTime)
	seedRate := float64(seeded) / seedTime.Seconds()
	r.add("seeding", fmt.Sprintf("%s sessions straight into etcd", thousands(seeded)), fmt.Sprintf("**%.0f sessions/s** (%s)", seedRate, seedTime.Round(100*time.Millisecond)), "", "")
	if seeded < n {
		apiMax := watch.end()
		if context.Cause(sctx) == errRSSLimit {
			r.add("API server", "VmRSS while seeding", fmt.Sprintf("**stopped**: %s after %s of %s sessions (max %s)", mib(overAt), thousands(seeded), thousands(n), mib(apiMax)), "", "")
			return errRSSLimit
		}
		return fmt.Errorf("seeding stopped after %s sessions: %w", thousands(seeded), context.Cause(sctx))
	}

	// Catching up: the API server learns of the sessions through its
	// watch on etcd; its cache serves a read at resourceVersion 0, so the
	// last session seeded is found once it has caught up.
	progress("waiting for the API server's cache to serve the last session (%s)", sentinel[0].name)
	t = time.Now()
	var catchUp time.Duration
	for {
		if _, err := res.Get(sctx, sentinel[0].name, metav1.GetOptions{ResourceVersion: "0"}); err == nil {
			catchUp = time.Since(t)
			break
		}
		if err := context.Cause(sctx); err != nil {
			apiMax := watch.end()
			if err == errRSSLimit {
				r.add("API server", "VmRSS while catching up", fmt.Sprintf("**stopped**: %s, %s after seeding %s sessions (max %s)", mib(overAt), time.Since(t).Round(time.Second), thousands(n), mib(apiMax)), "", "")
			}
			return err
		}
		if time.Since(t) > catchUpLimit {
			watch.end()
			return fmt.Errorf("the API server's cache did not serve the last session within %s", catchUpLimit)
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.spent("catching up", catchUp)
	progress("  caught up %s after seeding ended", catchUp.Round(100*time.Millisecond))
	// A consistent LIST of one: its resourceVersion beside etcd's revision.
	l, lerr := res.List(sctx, metav1.ListOptions{Limit: 1})
	st, serr := maint.status(sctx)
	listed := "failed"
	if lerr == nil {
		cnt := len(l.Items)
		if l.RemainingItemCount != nil {
			cnt += int(*l.RemainingItemCount)
		}
		listed = fmt.Sprintf("LIST limit=1 at resourceVersion %s, %s items", l.ResourceVersion, thousands(cnt))
	} else {
		listed += ": " + oneLine(lerr.Error())
	}
	if serr == nil {
		listed += fmt.Sprintf("; etcd revision %d", st.rev)
	}
	r.add("seeding", "API server caught up (its cache serves the last session seeded)", fmt.Sprintf("**%s** after seeding ended (%s)", catchUp.Round(100*time.Millisecond), listed), "", "")

	// The API server with every session stored, settled.
	select {
	case <-sctx.Done():
	case <-time.After(c.settle):
	}
	apiMax := watch.end()
	if context.Cause(sctx) == errRSSLimit {
		return errRSSLimit
	}
	apiRSS, apiHWM, err := pidMemory(sp.apiPID)
	if err != nil {
		return err
	}
	etcdRSS, _, _ := pidMemory(sp.etcdPID)
	r.add("API server", fmt.Sprintf("VmRSS with %s sessions stored, caught up and settled %s", thousands(n), c.settle),
		fmt.Sprintf("**%s** (VmHWM %s, max sampled while filling %s; empty %s)", mib(apiRSS), mib(apiHWM), mib(apiMax), mib(apiBase)), "", "")
	r.add("API server", "VmRSS per stored session (minus the empty control plane's)",
		fmt.Sprintf("**%s** (VmHWM: %s)", perSession(apiRSS-apiBase, n), perSession(apiHWM-apiBase, n)), "measured", "")

	// etcd, compacted and defragmented.
	progress("compacting and defragmenting etcd")
	full, defrag, err := maint.compactDefrag(ctx)
	if err != nil {
		r.add("etcd", "db size after compaction and defragmentation", "failed: "+oneLine(err.Error()), "", "")
	} else {
		per := float64(full.dbSize-base.dbSize) / float64(n)
		r.add("etcd", fmt.Sprintf("db size with %s sessions (compacted, defragmented in %s)", thousands(n), defrag.Round(100*time.Millisecond)),
			fmt.Sprintf("%s (in use %s); etcd VmRSS %s (empty %s)", mib(full.dbSize), mib(full.inUse), mib(etcdRSS), mib(etcdBase)), "", "")
		r.add("etcd", "db size per session (minus the empty control plane's)",
			fmt.Sprintf("**%s** (in use: %s)", perSession(full.dbSize-base.dbSize, n), perSession(full.inUse-base.inUse, n)), "≤ 1.5 KiB", check(per <= scaleEtcdTarget))
	}

	// rotor serve with every session stored.
	bin, err := rotorBinary(c)
	if err != nil {
		return err
	}
	counter, err := newAPICounter(sp.cfg)
	if err != nil {
		return err
	}
	rp := rotorProcess{bin: bin, kubeconfig: kcPath, dir: dir, readyLimit: c.rotorWait, clientReady: func() bool {
		ok, err := clientReady(ctx, kc, scaleNamespace, defaultClientID)
		return err == nil && ok
	}}
	progress("rotor serve with %s stored sessions: RSS, time to ready and to the collector's list", thousands(n))
	t = time.Now()
	rctx, rcancel := context.WithCancelCause(ctx)
	defer rcancel(nil)
	watch = watchMemory(sp.apiPID, c.apiRSSLimit, func(rss int64) {
		progress("the API server's VmRSS is %s, past the limit %s: stopping", mib(rss), mib(c.apiRSSLimit))
		rcancel(errRSSLimit)
	})
	m, p, err := rp.measureRSS(rctx, counter, n, c.settle, c.gcExpiring > 0, nil, time.Time{})
	apiMax = watch.end()
	if p != nil {
		defer p.stop()
	}
	r.spent("rotor serve", time.Since(t))
	if context.Cause(rctx) == errRSSLimit {
		err = errRSSLimit
	}
	what := fmt.Sprintf("rotor serve, %s stored sessions", thousands(n))
	if err != nil && err != errRSSLimit && m.ready > 0 {
		// Ready, but the collector had not listed every session: what
		// was measured until then.
		r.add("rotor", what+": RSS (max VmRSS from start until it stopped)", fmt.Sprintf("**%s** (VmHWM %s; the collector's list not done)", mib(m.rss), mib(m.hwm)), "≤ 200 MiB", check(m.rss <= scaleRSSTarget && m.hwm <= scaleRSSTarget))
		r.add("rotor", what+": time to /readyz 200", fmt.Sprintf("**%s**", m.ready.Round(10*time.Millisecond)), "≤ 60 s", check(m.ready <= scaleReadyTarget))
	}
	if err != nil {
		r.add("rotor", what, "**failed**: "+oneLine(err.Error()), "", "**MISSED**")
		if rss, hwm, e := pidMemory(sp.apiPID); e == nil {
			r.add("API server", "VmRSS when rotor stopped", fmt.Sprintf("%s (VmHWM %s, max sampled during rotor's start %s)", mib(rss), mib(hwm), mib(apiMax)), "", "")
		}
		return err
	}
	r.add("rotor", what+": RSS (max VmRSS until ready, listed and settled)", fmt.Sprintf("**%s** (VmHWM %s)", mib(m.rss), mib(m.hwm)), "≤ 200 MiB", check(m.rss <= scaleRSSTarget && m.hwm <= scaleRSSTarget))
	r.add("rotor", what+": time to /readyz 200", fmt.Sprintf("**%s**", m.ready.Round(10*time.Millisecond)), "≤ 60 s", check(m.ready <= scaleReadyTarget))
	r.add("rotor", what+": time to the collector's first full list", fmt.Sprintf("**%s**", m.listed.Round(10*time.Millisecond)), "", "")
	if rss, hwm, err := pidMemory(sp.apiPID); err == nil {
		r.add("API server", "VmRSS after rotor's start and list", fmt.Sprintf("%s (VmHWM %s, max sampled during rotor's start %s)", mib(rss), mib(hwm), mib(apiMax)), "", "")
	}
	if p == nil {
		return nil
	}

	// The collector on a large expiring share, under refresh load.
	t = time.Now()
	gctx, gcancel := context.WithCancelCause(ctx)
	defer gcancel(nil)
	watch = watchMemory(sp.apiPID, c.apiRSSLimit, func(rss int64) {
		progress("the API server's VmRSS is %s, past the limit %s: stopping", mib(rss), mib(c.apiRSSLimit))
		gcancel(errRSSLimit)
	})
	err = gcUnderLoad(gctx, c, p, meta, seeder, n, seedRate, catchUp/time.Duration(n), password, r)
	apiMax = watch.end()
	r.spent("collection under load", time.Since(t))
	if context.Cause(gctx) == errRSSLimit {
		err = errRSSLimit
	}
	if rss, hwm, e := pidMemory(sp.apiPID); e == nil {
		r.add("API server", "VmRSS after the collection", fmt.Sprintf("%s (VmHWM %s, max sampled during it %s)", mib(rss), mib(hwm), mib(apiMax)), "", "")
	}
	return err
}

func joinPhases(p []string) string {
	var b bytes.Buffer
	for i, s := range p {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// measureBigScale runs runBigScale and writes its table, also when it
// stopped early (the table says how far it got).
func measureBigScale(ctx context.Context, c config, r *report) error {
	err := runBigScale(ctx, c, r)
	if err != nil {
		r.add("run", "stopped", "**"+oneLine(err.Error())+"**", "", "")
	}
	r.loadavg("end")
	table := r.markdown()
	fmt.Println(table)
	if c.out != "" {
		doc := fmt.Sprintf("# rotor scale benchmark results\n\n`make bench-scale`, %s. Regenerate with `make bench-scale` (15-20 minutes at 1,000,000 sessions; BENCH_SCALE_FLAGS='--sessions 50000 --gc-expiring 5000' for a quick look). Per-session figures subtract the empty control plane's.\n\n%s\n",
			time.Now().UTC().Format("2006-01-02 15:04 MST"), table)
		if werr := os.WriteFile(c.out, []byte(doc), 0o644); werr != nil {
			return errors.Join(err, werr)
		}
		progress("wrote %s", c.out)
	}
	return err
}
