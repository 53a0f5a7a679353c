package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"rotor.dev/rotor/pkg/dev/controlplane"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/server"
)

// The replicas measurement: refresh throughput with 1, 2 and 3 `rotor
// serve` processes (--replicas), every one serving, against one API
// server, at the same total number of clients (--replica-clients), and
// where the CPU went meanwhile: rotor (all replicas), the API server,
// etcd, this process (the load generator) and the rest of the machine. On
// a machine of 2 cores the API server and etcd share the cores with rotor
// and the load: more replicas cannot be faster here, so the figures are
// the ratio to the smallest level and the CPU split, not a speed-up.
//
// The replicas run as deployed (leader election on: the first one started
// leads the controllers, the others only serve), with the flags of the
// scale measurement's rotor serve, in a namespace of their own. They share
// one issuer URL, the first replica's address; each client dials its own
// replica (client i the replica i mod N), so that every replica serves
// and each session stays in one replica's cache, as behind a load balancer
// with session affinity. The first replica runs through the whole phase;
// the others are started and stopped as the level needs, so that exactly
// N run (and watch the sessions) while N are measured. Each level logs its
// clients in afresh (password grant through the default Public client, on
// the client's replica), refreshes each once outside the window, then the
// clients refresh back to back, each keeping the newest refresh token,
// until the level's share of --replica-refreshes is done or
// replicaRunLimit has passed. The levels alternate over --replica-rounds
// rounds (1,2,3,1,2,3), so that load from elsewhere on a shared machine
// hits them alike; rates and ratios are medians over the rounds.

const (
	// replicaNamespace is the replicas' namespace: their sessions,
	// account, default client and leader-election Lease.
	replicaNamespace = "bench-replicas"
	// replicaRunLimit bounds one level's load in one round.
	replicaRunLimit = time.Minute
	// replicaReadyLimit bounds the wait for a replica's readiness.
	replicaReadyLimit = time.Minute
)

// replicaSet is the `rotor serve` processes of the measurement.
type replicaSet struct {
	bin, kubeconfig, dir string
	// issuerAddr is the first replica's listen address, and (as
	// http://issuerAddr) every replica's issuer URL.
	issuerAddr string
	procs      []*replica
	started    int
	// clientReady reports whether the default client is Ready, which the
	// leader's reconciler decides.
	clientReady func() bool
}

// replica is one `rotor serve` and the address its clients dial.
type replica struct {
	*proc
	addr string
}

// resize starts or stops replicas (the last started first) until n run,
// each started one ready before the next starts.
func (s *replicaSet) resize(ctx context.Context, n int) error {
	for len(s.procs) > n {
		last := s.procs[len(s.procs)-1]
		s.procs = s.procs[:len(s.procs)-1]
		last.stop()
	}
	for len(s.procs) < n {
		rp, err := s.start()
		if err != nil {
			return err
		}
		s.procs = append(s.procs, rp)
		if err := s.awaitReady(ctx, rp); err != nil {
			return err
		}
	}
	for _, rp := range s.procs {
		if err := rp.gone(); err != nil {
			return err
		}
	}
	return nil
}

func (s *replicaSet) stopAll() {
	for _, rp := range s.procs {
		rp.stop()
	}
	s.procs = nil
}

// start starts one replica with the flags of rotorProcess.start (the
// scale measurement's rotor serve) in replicaNamespace, on a port of its
// own, with the shared issuer URL.
func (s *replicaSet) start() (*replica, error) {
	addr := s.issuerAddr
	if len(s.procs) > 0 {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	probe, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s.started++
	logPath := filepath.Join(s.dir, fmt.Sprintf("replica-%d-%d.log", len(s.procs), s.started))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.bin, "serve",
		"--issuer-url", "http://"+s.issuerAddr, "--insecure-http", "--listen-address", addr,
		"--namespace", replicaNamespace, "--metrics-bind-address", "0", "--health-probe-bind-address", probe,
		"--default-client-id", defaultClientID,
		"--max-sessions-per-subject", "0", "--sessions-per-subject-burst", "0", "--unauthenticated-burst", "0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, issuerURL: "http://" + s.issuerAddr, probeURL: "http://" + probe + "/readyz", logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return &replica{proc: p, addr: addr}, nil
}

// awaitReady waits for the replica's /readyz, and for the default client
// to be Ready.
func (s *replicaSet) awaitReady(ctx context.Context, rp *replica) error {
	deadline := time.Now().Add(replicaReadyLimit)
	for {
		if err := rp.gone(); err != nil {
			return err
		}
		if probeOK(rp.probeURL) && s.clientReady() {
			return nil
		}
		if time.Now().After(deadline) {
			return rp.failed(fmt.Errorf("replica %d (%s) not ready, or its default client %s not Ready, within %s", len(s.procs)-1, rp.addr, defaultClientID, replicaReadyLimit))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pids are the running replicas' process IDs.
func (s *replicaSet) pids() []int {
	pids := make([]int, len(s.procs))
	for i, rp := range s.procs {
		pids[i] = rp.cmd.Process.Pid
	}
	return pids
}

// replicaCPU is the CPU time used during a window: each replica, the API
// server, etcd, this process, and the whole machine (busy, and available:
// cores × wall-clock time).
type replicaCPU struct {
	rotor                   []time.Duration
	api, etcd, bench        time.Duration
	machineBusy, machineAll time.Duration
}

func readReplicaCPU(meter *cpuMeter, pids []int) replicaCPU {
	c := meter.read()
	out := replicaCPU{api: c.api, etcd: c.etcd, bench: procCPU(os.Getpid())}
	for _, pid := range pids {
		out.rotor = append(out.rotor, procCPU(pid))
	}
	out.machineBusy, out.machineAll = machineCPU()
	return out
}

func (a replicaCPU) minus(b replicaCPU) replicaCPU {
	d := replicaCPU{api: a.api - b.api, etcd: a.etcd - b.etcd, bench: a.bench - b.bench,
		machineBusy: a.machineBusy - b.machineBusy, machineAll: a.machineAll - b.machineAll}
	for i := range a.rotor {
		d.rotor = append(d.rotor, a.rotor[i]-b.rotor[i])
	}
	return d
}

func (a *replicaCPU) add(b replicaCPU) {
	a.api += b.api
	a.etcd += b.etcd
	a.bench += b.bench
	a.machineBusy += b.machineBusy
	a.machineAll += b.machineAll
	for i, d := range b.rotor {
		if i < len(a.rotor) {
			a.rotor[i] += d
		} else {
			a.rotor = append(a.rotor, d)
		}
	}
}

func (a replicaCPU) rotorTotal() time.Duration {
	var t time.Duration
	for _, d := range a.rotor {
		t += d
	}
	return t
}

// other is the machine's busy time that none of the measured processes
// account for: other processes on a shared machine, the kernel's work
// outside them.
func (a replicaCPU) other() time.Duration {
	return max(0, a.machineBusy-a.rotorTotal()-a.api-a.etcd-a.bench)
}

// machineCPU reads the machine's busy and total CPU time from the first
// line of /proc/stat (every core; iowait counts as idle).
func machineCPU() (busy, total time.Duration) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal (guest time is
	// already in user).
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(fields[1+i], 10, 64)
	}
	b := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return time.Duration(b) * clockTick, time.Duration(b+v[3]+v[4]) * clockTick
}

// replicaLevel is what one level (a number of replicas) measured, over
// the rounds.
type replicaLevel struct {
	n     int
	res   run
	rates []float64
	cpu   replicaCPU
	// served is the refreshes each replica answered.
	served []int
	api    requestCounts
	// verified counts the /userinfo checks of access tokens across
	// replicas; crossErr is the first that failed.
	verified int
	crossErr error
	// limiter is set when the session client's token bucket of one
	// replica may have held the load back in some round.
	limiter bool
}

// runReplicas runs the replicas measurement on cp and adds its rows to r.
func runReplicas(ctx context.Context, c config, cp *controlplane.ControlPlane, r *report) error {
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.UserAgent = -1, "rotor-bench-replicas"
	kc, err := client.New(cfg, client.Options{Scheme: rotorscheme.Scheme})
	if err != nil {
		return err
	}
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: replicaNamespace}}); err != nil {
		return err
	}
	if _, err := createClient(ctx, kc, replicaNamespace, defaultClientID, publicClientSpec()); err != nil {
		return err
	}
	password, err := createAccount(ctx, kc, replicaNamespace)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rotor-bench-replicas-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig, err := cp.Kubeconfig("rotor-bench-replicas")
	if err != nil {
		return err
	}
	kcPath, err := writeKubeconfig(dir, kubeconfig)
	if err != nil {
		return err
	}
	bin, err := rotorBinary(c)
	if err != nil {
		return err
	}
	issuerAddr, err := freeAddr()
	if err != nil {
		return err
	}
	set := &replicaSet{bin: bin, kubeconfig: kcPath, dir: dir, issuerAddr: issuerAddr, clientReady: func() bool {
		ok, err := clientReady(ctx, kc, replicaNamespace, defaultClientID)
		return err == nil && ok
	}}
	defer set.stopAll()
	meter := newCPUMeter(cp)
	if meter.err != nil {
		progress("replicas: the API server's and etcd's CPU not measured: %v", meter.err)
	}
	counter, err := newAPICounter(cp.Config)
	if err != nil {
		return err
	}
	hc := loadClient()

	levels := slices.Clone(c.replicas)
	byLevel := map[int]*replicaLevel{}
	for _, n := range levels {
		byLevel[n] = &replicaLevel{n: n, api: requestCounts{}}
	}
	// Each level's refreshes are split over the rounds.
	per := max(1, c.replicaRefreshes/c.replicaRounds)
	for round := range c.replicaRounds {
		for _, n := range levels {
			lv := byLevel[n]
			progress("replicas: round %d/%d, %d replica%s, %d clients: up to %d refreshes", round+1, c.replicaRounds, n, plural(n), c.replicaClients, per)
			if err := set.resize(ctx, n); err != nil {
				return err
			}
			res, cpu, served, api, cross, err := replicaRound(ctx, set, meter, counter, hc, c.replicaClients, per, password)
			if err != nil {
				return err
			}
			lv.verified += cross.verified
			if lv.crossErr == nil {
				lv.crossErr = cross.err
			}
			// The first replica's session client (--api-qps, --api-burst)
			// takes the largest share of the clients: could its token
			// bucket have run dry? It starts the window at most full.
			o := server.DefaultOptions()
			if float64(served[0]) > float64(o.APIBurst)+0.9*o.APIQPS*res.elapsed.Seconds() {
				lv.limiter = true
			}
			lv.res.merge(res)
			lv.rates = append(lv.rates, res.rate())
			lv.cpu.add(cpu)
			lv.api.add(api)
			for i, s := range served {
				if i < len(lv.served) {
					lv.served[i] += s
				} else {
					lv.served = append(lv.served, s)
				}
			}
			progress("  %s; CPU: rotor %s, API server %s, etcd %s, bench %s, other %s in %s",
				res.String(), cpu.rotorTotal(), cpu.api, cpu.etcd, cpu.bench, cpu.other(), res.elapsed.Round(10*time.Millisecond))
		}
	}
	set.stopAll()
	reportReplicas(c, levels, byLevel, r)
	return nil
}

// replicaRound logs in clients on the running replicas (client i on
// replica i mod N), refreshes each once outside the window, then has them
// refresh back to back until total refreshes are done or replicaRunLimit
// has passed. It returns the run, the CPU used in the window, the
// refreshes each replica answered, and the API server's count of
// RefreshToken requests in it. After the window it checks that an access
// token minted by each replica verifies on every replica.
func replicaRound(ctx context.Context, set *replicaSet, meter *cpuMeter, counter *apiCounter, hc *http.Client, clients, total int, password string) (run, replicaCPU, []int, requestCounts, crossCheck, error) {
	n := len(set.procs)
	ics := make([]*issuerClient, clients)
	tokens := make([]string, clients)
	for i := range clients {
		rp := set.procs[i%n]
		ics[i] = &issuerClient{url: "http://" + rp.addr, hc: hc}
		reply, err := ics[i].token(ctx, url.Values{"grant_type": {"password"}, "username": {benchUser}, "password": {password}})
		if err != nil {
			return run{}, replicaCPU{}, nil, nil, crossCheck{}, rp.failed(fmt.Errorf("login on replica %d (%s): %w", i%n, rp.addr, err))
		}
		tokens[i] = reply.RefreshToken
	}
	warm := parallel(clients, clients, func(w int) error { return refresh(ctx, ics[w], tokens, w) })
	if warm.errs > 0 {
		return run{}, replicaCPU{}, nil, nil, crossCheck{}, fmt.Errorf("warm-up refresh: %w", warm.firstErr)
	}
	time.Sleep(500 * time.Millisecond)

	before, err := counter.snapshot(ctx)
	if err != nil {
		return run{}, replicaCPU{}, nil, nil, crossCheck{}, err
	}
	pids := set.pids()
	cpu0 := readReplicaCPU(meter, pids)
	var tickets atomic.Int64
	tickets.Store(int64(total))
	deadline := time.Now().Add(replicaRunLimit)
	counts := make([]int, clients)
	var mu sync.Mutex
	var res run
	var wg sync.WaitGroup
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var err error
			for ctx.Err() == nil && time.Now().Before(deadline) && tickets.Add(-1) >= 0 {
				t := time.Now()
				if err = refresh(ctx, ics[w], tokens, w); err != nil {
					// A failed refresh may leave the client without a
					// valid token: this client stops.
					err = fmt.Errorf("replica %d: %w", w%n, err)
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			counts[w] = len(lat)
			res.add(lat, err)
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.lat)
	cpu := readReplicaCPU(meter, pids).minus(cpu0)
	after, err := counter.snapshot(ctx)
	if err != nil {
		return run{}, replicaCPU{}, nil, nil, crossCheck{}, err
	}
	served := make([]int, n)
	for w, k := range counts {
		served[w%n] += k
	}
	if err := ctx.Err(); err != nil {
		return res, cpu, served, nil, crossCheck{}, err
	}
	for i, rp := range set.procs {
		if err := rp.gone(); err != nil {
			return res, cpu, served, nil, crossCheck{}, fmt.Errorf("replica %d: %w", i, err)
		}
	}
	return res, cpu, served, after.minus(before), crossVerify(ctx, set, ics, tokens, hc), nil
}

// crossCheck is the outcome of crossVerify.
type crossCheck struct {
	verified int
	err      error
}

// crossVerify refreshes client k once on its replica k (for every replica
// that has a client) and presents the access token to /userinfo of every
// replica: all of them share the issuer URL and the signing keys.
func crossVerify(ctx context.Context, set *replicaSet, ics []*issuerClient, tokens []string, hc *http.Client) crossCheck {
	var cc crossCheck
	for k := range min(len(set.procs), len(ics)) {
		reply, err := ics[k].token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens[k]}})
		if err != nil {
			cc.err = fmt.Errorf("refresh on replica %d: %w", k, err)
			return cc
		}
		tokens[k] = reply.RefreshToken
		for j, rp := range set.procs {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rp.addr+"/userinfo", nil)
			if err != nil {
				cc.err = err
				return cc
			}
			req.Header.Set("Authorization", "Bearer "+reply.AccessToken)
			resp, err := hc.Do(req)
			if err != nil {
				cc.err = fmt.Errorf("access token of replica %d on replica %d: %w", k, j, err)
				return cc
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				cc.err = fmt.Errorf("access token of replica %d on replica %d's /userinfo: %s: %s", k, j, resp.Status, body)
				return cc
			}
			cc.verified++
		}
	}
	return cc
}

// reportReplicas adds the rows of the replicas measurement: per level the
// throughput and latency, the CPU per refresh and its split, and the ratio
// to the smallest level.
func reportReplicas(c config, levels []int, byLevel map[int]*replicaLevel, r *report) {
	base := byLevel[slices.Min(levels)]
	rounds := fmt.Sprintf("median of %d rounds", c.replicaRounds)
	if c.replicaRounds == 1 {
		rounds = "1 round"
	}
	o := server.DefaultOptions()
	for _, n := range levels {
		lv := byLevel[n]
		what := fmt.Sprintf("%d replica%s, %d clients (client i on replica i mod %d): POST /token grant_type=refresh_token, default Public client, loopback HTTP", n, plural(n), c.replicaClients, n)
		s := sortedCopy(lv.res.lat)
		served := make([]string, len(lv.served))
		for i, k := range lv.served {
			served[i] = thousands(k)
		}
		value := fmt.Sprintf("**%.0f/s** (%s%s), p50 %s, p99 %s (%s refreshes; per replica %s)",
			median(lv.rates), rounds, ratesOf(lv.rates), ms(percentile(s, 0.5)), ms(percentile(s, 0.99)), thousands(lv.res.ops), strings.Join(served, " / "))
		if lv.limiter {
			value += fmt.Sprintf("; the first replica's session client (--api-qps %.0f, --api-burst %d) may have held it back", o.APIQPS, o.APIBurst)
		}
		if want := c.replicaRounds * max(1, c.replicaRefreshes/c.replicaRounds); lv.res.errs == 0 && lv.res.ops < want {
			value += fmt.Sprintf("; %s of %s refreshes: a run stopped at its bound of %s", thousands(lv.res.ops), thousands(want), replicaRunLimit)
		}
		verdict := ""
		if lv.res.errs > 0 {
			value += fmt.Sprintf("; **%d clients FAILED** (first: %s)", lv.res.errs, oneLine(lv.res.firstErr.Error()))
			verdict = "**FAILED**"
		}
		r.add("replicas", what, value, "every replica serves", verdict)
		if n > 1 {
			value, verdict := fmt.Sprintf("%d checks, all 200", lv.verified), "met"
			if lv.crossErr != nil {
				value, verdict = fmt.Sprintf("%d checks passed, then **failed**: %s", lv.verified, oneLine(lv.crossErr.Error())), "**MISSED**"
			}
			r.add("replicas", fmt.Sprintf("%d replicas: an access token minted by each replica, presented to /userinfo of every replica (one issuer URL, shared signing keys; after each round)", n),
				value, "every replica verifies every replica's tokens", verdict)
		}
		r.add("replicas", fmt.Sprintf("%d replica%s: CPU per refresh, and its share of the machine's busy CPU", n, plural(n)), lv.cpu.split(lv.res.ops), "", "")
		if lv.api.total() > 0 && lv.res.ops > 0 {
			r.add("replicas", fmt.Sprintf("%d replica%s: API requests per refresh (apiserver_request_total of refreshtokens)", n, plural(n)),
				lv.api.perOp(lv.res.ops, "PUT", "GET"), "1 update (PUT), 0 GET", check(exactly(lv.api, lv.res.ops, "PUT")))
		}
	}
	var all replicaCPU
	for _, n := range levels {
		all.add(byLevel[n].cpu)
	}
	if all.machineBusy > 0 {
		r.add("replicas", "the rest of the machine during the loads (other processes, kernel work charged to none of the measured ones)",
			fmt.Sprintf("**%.0f%%** of the machine's busy CPU (%s of %s busy in %s of cores × time)%s", 100*float64(all.other())/float64(all.machineBusy),
				all.other().Round(10*time.Millisecond), all.machineBusy.Round(10*time.Millisecond), all.machineAll.Round(10*time.Millisecond),
				map[bool]string{true: ": the machine was shared, the rounds' spread shows how much that moved the rates", false: ""}[all.other()*10 > all.machineBusy]), "", "")
	}
	for _, n := range levels {
		lv := byLevel[n]
		if lv == base {
			continue
		}
		var ratios []string
		var rs []float64
		for i := range min(len(lv.rates), len(base.rates)) {
			q := lv.rates[i] / base.rates[i]
			rs = append(rs, q)
			ratios = append(ratios, fmt.Sprintf("%.2f", q))
		}
		cpuNote := ""
		if base.res.ops > 0 && lv.res.ops > 0 {
			cpuNote = fmt.Sprintf("; CPU per refresh ÷ %d replica%s: rotor %.2f, API server %.2f, etcd %.2f",
				base.n, plural(base.n), perRatio(lv.cpu.rotorTotal(), lv.res.ops, base.cpu.rotorTotal(), base.res.ops),
				perRatio(lv.cpu.api, lv.res.ops, base.cpu.api, base.res.ops), perRatio(lv.cpu.etcd, lv.res.ops, base.cpu.etcd, base.res.ops))
		}
		r.add("replicas", fmt.Sprintf("throughput, %d replicas ÷ %d replica%s (same clients, same run)", n, base.n, plural(base.n)),
			fmt.Sprintf("**%.2f** (median of the rounds' ratios: %s%s)", median(rs), strings.Join(ratios, ", "), cpuNote),
			fmt.Sprintf("no speed-up on %d cores: the API server and etcd share them", nproc()), "")
	}
}

// split is the CPU per refresh of each part, and its share of the
// machine's busy time: "rotor 0.52 ms (0.30 + 0.22), API server ...".
func (a replicaCPU) split(ops int) string {
	if ops <= 0 {
		return "no refreshes"
	}
	per := func(d time.Duration) string { return ms(d / time.Duration(ops)) }
	share := func(d time.Duration) string {
		if a.machineBusy <= 0 {
			return "?"
		}
		return fmt.Sprintf("%.0f%%", 100*float64(d)/float64(a.machineBusy))
	}
	each := make([]string, len(a.rotor))
	for i, d := range a.rotor {
		each[i] = strings.TrimSuffix(per(d), " ms")
	}
	rotor := "rotor " + per(a.rotorTotal())
	if len(a.rotor) > 1 {
		rotor += " (" + strings.Join(each, " + ") + ", the leader first)"
	}
	s := fmt.Sprintf("%s, API server %s, etcd %s, bench process (load generator) %s, rest of the machine (other processes, kernel work charged to none of these) %s; shares: rotor **%s**, API server **%s**, etcd %s, bench %s, rest %s",
		rotor, per(a.api), per(a.etcd), per(a.bench), per(a.other()),
		share(a.rotorTotal()), share(a.api), share(a.etcd), share(a.bench), share(a.other()))
	if a.machineAll > 0 {
		s += fmt.Sprintf("; machine busy %.0f%% of %d cores", 100*float64(a.machineBusy)/float64(a.machineAll), nproc())
	}
	return s
}

// perRatio is (a per aOps) ÷ (b per bOps).
func perRatio(a time.Duration, aOps int, b time.Duration, bOps int) float64 {
	if b == 0 || aOps == 0 {
		return 0
	}
	return (float64(a) / float64(aOps)) / (float64(b) / float64(bOps))
}

// ratesOf lists the rounds' rates when there are several.
func ratesOf(rates []float64) string {
	if len(rates) < 2 {
		return ""
	}
	s := make([]string, len(rates))
	for i, v := range rates {
		s[i] = fmt.Sprintf("%.0f", v)
	}
	return ": " + strings.Join(s, ", ") + "/s"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
