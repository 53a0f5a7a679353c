package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/controlplane"
)

// The floor: what a conditional PUT of a custom resource costs the API
// server when the resource's design adds nothing to it. A Blob has one
// string field, no validation but its type, no CEL, no defaults, no
// annotations or labels, no status subresource; its data is padded so that
// a Blob as stored (JSON, managedFields included) has as many bytes as a
// stored RefreshToken. Whatever a RefreshToken PUT costs beyond a Blob PUT
// is rotor's design: its schema and what it stores.
const (
	floorGroup    = "floor.bench.rotor.dev"
	floorVersion  = "v1"
	floorKind     = "Blob"
	floorResource = "blobs"
	// floorPrefix is the part of data each PUT changes: as many bytes as
	// the secret hash a rotation changes.
	floorPrefix = 43
)

// floorCRD is the Blob CRD: structural (every schema needs types), and
// nothing more.
func floorCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: floorResource + "." + floorGroup},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: floorGroup,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural: floorResource, Singular: "blob", Kind: floorKind, ListKind: floorKind + "List",
			},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: floorVersion, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"data": {Type: "string"},
					},
				}},
			}},
		},
	}
}

// floor keeps one Blob per client, each updated conditionally on the
// resourceVersion its last update returned.
type floor struct {
	kc   client.Client
	objs []*unstructured.Unstructured
	// size is a Blob's stored size, what it was sized to match.
	size int
	// stored is where a stored Blob's bytes go.
	stored storedSize
}

// newFloor installs the Blob CRD and creates n Blobs in namespace whose
// stored JSON is target bytes long.
func newFloor(ctx context.Context, cfg *rest.Config, kc client.Client, etcd *etcdSeeder, namespace string, n, target int) (*floor, error) {
	crd := floorCRD()
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}}); err != nil {
		return nil, fmt.Errorf("installing the floor CRD %s: %w", crd.Name, err)
	}
	f := &floor{kc: kc}
	for i := range n {
		obj := &unstructured.Unstructured{}
		obj.SetAPIVersion(floorGroup + "/" + floorVersion)
		obj.SetKind(floorKind)
		obj.SetNamespace(namespace)
		obj.SetName(fmt.Sprintf("blob-%d", i))
		obj.Object["data"] = blobData(floorPrefix)
		if err := createWithRetry(ctx, kc, obj); err != nil {
			return nil, fmt.Errorf("creating Blob %s: %w", obj.GetName(), err)
		}
		// Pad data by what the stored object lacks; one correction more if
		// a length (of a number, say) moved.
		for range 3 {
			raw, err := etcd.get(ctx, blobKey(obj))
			if err != nil {
				return nil, err
			}
			d := target - len(raw)
			if d == 0 {
				break
			}
			size := len(obj.Object["data"].(string)) + d
			if size < floorPrefix {
				return nil, fmt.Errorf("a Blob with %d bytes of data is stored in %d bytes, more than a session's %d", len(obj.Object["data"].(string)), len(raw), target)
			}
			obj.Object["data"] = blobData(size)
			if err := kc.Update(ctx, obj, client.FieldOwner(rawFieldOwner)); err != nil {
				return nil, err
			}
		}
		raw, err := etcd.get(ctx, blobKey(obj))
		if err != nil {
			return nil, err
		}
		f.size = len(raw)
		if f.stored, err = measureStored(raw); err != nil {
			return nil, err
		}
		f.objs = append(f.objs, obj)
	}
	return f, nil
}

// createWithRetry creates obj, waiting for the client's REST mapping of a
// CRD just installed.
func createWithRetry(ctx context.Context, kc client.Client, obj client.Object) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := kc.Create(ctx, obj, client.FieldOwner(rawFieldOwner))
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func blobKey(obj *unstructured.Unstructured) string {
	return "/registry/" + floorGroup + "/" + floorResource + "/" + obj.GetNamespace() + "/" + obj.GetName()
}

// blobData is n bytes: floorPrefix random ones, the rest padding.
func blobData(n int) string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(33))[:floorPrefix] + strings.Repeat("x", n-floorPrefix)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// update is worker w's conditional PUT: new bytes at the front of data,
// the same length.
func (f *floor) update(ctx context.Context, w int) error {
	next := f.objs[w].DeepCopy()
	data := next.Object["data"].(string)
	next.Object["data"] = blobData(len(data))
	if err := f.kc.Update(ctx, next, client.FieldOwner(rawFieldOwner)); err != nil {
		return err
	}
	f.objs[w] = next
	return nil
}

// get reads key's value from etcd: an object as the API server stores it.
func (e *etcdSeeder) get(ctx context.Context, key string) ([]byte, error) {
	body, err := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v3/kv/range", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("etcd range %s: %s: %s", key, resp.Status, out)
	}
	var reply struct {
		KVs []struct {
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return nil, fmt.Errorf("etcd range reply: %w", err)
	}
	if len(reply.KVs) != 1 {
		return nil, fmt.Errorf("etcd has no %s", key)
	}
	return reply.KVs[0].Value, nil
}

// storedSize is where the bytes of a stored object go: each part is the
// length of its JSON as stored (compact), key and separators aside.
type storedSize struct {
	// data is a Blob's one field.
	total, spec, data, metadata, managedFields, annotations, labels int
	// managers are the managedFields entries (manager/operation).
	managers []string
	raw      []byte
}

func measureStored(raw []byte) (storedSize, error) {
	s := storedSize{total: len(raw), raw: raw}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return s, fmt.Errorf("stored object is not JSON: %w", err)
	}
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(top["metadata"], &meta); err != nil {
		return s, fmt.Errorf("stored metadata: %w", err)
	}
	s.spec, s.data, s.metadata = len(top["spec"]), len(top["data"]), len(top["metadata"])
	s.managedFields, s.annotations, s.labels = len(meta["managedFields"]), len(meta["annotations"]), len(meta["labels"])
	var mf []metav1.ManagedFieldsEntry
	_ = json.Unmarshal(meta["managedFields"], &mf)
	for _, e := range mf {
		s.managers = append(s.managers, e.Manager+"/"+string(e.Operation))
	}
	return s, nil
}

func (s storedSize) String() string {
	body := fmt.Sprintf("spec %d B", s.spec)
	if s.data > 0 {
		body = fmt.Sprintf("data %d B", s.data)
	}
	return body + fmt.Sprintf("; metadata %d B, of which managedFields %d B (%s), annotations %d B, labels %d B, the rest (name, namespace, uid, generation, creationTimestamp) %d B; apiVersion, kind, keys and braces %d B",
		s.metadata, s.managedFields, strings.Join(s.managers, ", "), s.annotations, s.labels,
		s.metadata-s.managedFields-s.annotations-s.labels, s.total-s.spec-s.data-s.metadata)
}

// decodedSize is the Go heap one object of raw holds decoded as
// unstructured, the way the API server's watch cache holds a custom
// resource: the cost per stored session that grows the API server, beyond
// its watch cache's own bookkeeping and its garbage collector's headroom.
func decodedSize(raw []byte) (int, error) {
	return heapPerObject(func() (any, error) {
		var obj map[string]any
		// As the API server decodes a custom resource: ints as int64.
		err := utiljson.Unmarshal(raw, &obj)
		return obj, err
	})
}

// typedSize is the same for a session decoded into rotor's Go type, as an
// API server of rotor's own (an aggregated one) would hold it.
func typedSize(raw []byte) (int, error) {
	return heapPerObject(func() (any, error) {
		obj := &identityv1alpha1.RefreshToken{}
		err := json.Unmarshal(raw, obj)
		return obj, err
	})
}

func heapPerObject(decode func() (any, error)) (int, error) {
	const n = 20000
	objs := make([]any, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range objs {
		obj, err := decode()
		if err != nil {
			return 0, err
		}
		objs[i] = obj
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(objs)
	return int(after.HeapAlloc-before.HeapAlloc) / n, nil
}

func orNA(n int, err error) string {
	if err != nil {
		return "not measured: " + oneLine(err.Error())
	}
	return fmt.Sprintf("%d B", n)
}

// sessionKey is where the session of a refresh token is stored.
func sessionKey(token string) string {
	name, _, _ := strings.Cut(token, ".")
	return storageKey(&identityv1alpha1.RefreshToken{ObjectMeta: metav1.ObjectMeta{Namespace: refreshNamespace, Name: name}})
}

// cpuTimes is the CPU time (user + system) the API server, etcd and this
// process (the load generator, and the in-process rotor) have used, from
// /proc/<pid>/stat.
type cpuTimes struct{ api, etcd, bench time.Duration }

func (a cpuTimes) minus(b cpuTimes) cpuTimes {
	return cpuTimes{a.api - b.api, a.etcd - b.etcd, a.bench - b.bench}
}

func (a cpuTimes) plus(b cpuTimes) cpuTimes {
	return cpuTimes{a.api + b.api, a.etcd + b.etcd, a.bench + b.bench}
}

// perOp is the CPU per operation: "API server 4.02 ms, etcd 0.61 ms;
// bench process 1.10 ms".
func (a cpuTimes) perOp(ops int) string {
	if ops <= 0 {
		return "no operations"
	}
	n := time.Duration(ops)
	return fmt.Sprintf("API server %s, etcd %s; bench process (load generator and in-process rotor) %s", ms(a.api/n), ms(a.etcd/n), ms(a.bench/n))
}

// cpuMeter reads the CPU time of the control plane's processes. On a
// machine where they cannot be found it reads zeros (cpuMeter.err says
// why).
type cpuMeter struct {
	api, etcd int
	err       error
}

// newCPUMeter finds this control plane's kube-apiserver (by its
// --secure-port) and etcd (by its --listen-client-urls) among /proc: other
// control planes (tests) may run on the machine at the same time.
func newCPUMeter(cp *controlplane.ControlPlane) *cpuMeter {
	m := &cpuMeter{}
	host, err := url.Parse(cp.Config.Host)
	if err != nil {
		m.err = err
		return m
	}
	m.api, err = findProcess("kube-apiserver", "--secure-port="+host.Port())
	if err != nil {
		m.err = err
		return m
	}
	m.etcd, m.err = findProcess("etcd", "--listen-client-urls="+cp.EtcdURL())
	return m
}

// findProcess returns the PID of the process running a binary named bin
// with the argument arg.
func findProcess(bin, arg string) (int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(argv[0]) == bin && slices.Contains(argv[1:], arg) {
			return strconv.Atoi(filepath.Base(dir))
		}
	}
	return 0, fmt.Errorf("no %s process with %s", bin, arg)
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// Linux the bench runs on.
const clockTick = 10 * time.Millisecond

func (m *cpuMeter) read() cpuTimes {
	if m.err != nil {
		return cpuTimes{}
	}
	return cpuTimes{procCPU(m.api), procCPU(m.etcd), procCPU(os.Getpid())}
}

// procCPU is utime + stime of pid.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it are
	// state (3), ... utime (14), stime (15).
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * clockTick
}

// measured is a run with the control plane's CPU it cost.
type measured struct {
	run
	cpu cpuTimes
}

func (m *measured) merge(o measured) {
	m.run.merge(o.run)
	m.cpu = m.cpu.plus(o.cpu)
}

// timed runs f and adds what it cost the control plane.
func timed(meter *cpuMeter, f func() (run, error)) (measured, error) {
	before := meter.read()
	r, err := f()
	return measured{run: r, cpu: meter.read().minus(before)}, err
}

// apiCPU is the API server's CPU per operation.
func (m *measured) apiCPU() time.Duration {
	if m.ops == 0 {
		return 0
	}
	return m.cpu.api / time.Duration(m.ops)
}

func (m *measured) String() string {
	return m.run.String() + "; CPU per write: " + m.cpu.perOp(m.ops)
}

// parallelUntil runs n workers, op(worker) each back to back, until stop
// is closed (or an operation fails), and times the whole.
func parallelUntil(n int, stop <-chan struct{}, op func(worker int) error) run {
	var mu sync.Mutex
	res := run{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var err error
		loop:
			for {
				select {
				case <-stop:
					break loop
				default:
				}
				t := time.Now()
				if err = op(w); err != nil {
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
	return res
}

// apiProfiler fetches CPU profiles of the API server
// (/debug/pprof/profile; the admin user is in system:masters, and
// kube-apiserver profiles by default).
type apiProfiler struct {
	hc      *http.Client
	url     string
	dir     string
	seconds int
}

func newAPIProfiler(cfg *rest.Config, dir string, seconds int) (*apiProfiler, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &apiProfiler{hc: hc, url: strings.TrimSuffix(cfg.Host, "/") + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds), dir: dir, seconds: seconds}, nil
}

// profile runs op from n workers for as long as a CPU profile of the API
// server takes, writes the profile to <dir>/apiserver-<name>.pprof and
// returns the load's run, what it cost the control plane, and the path.
func (p *apiProfiler) profile(ctx context.Context, name string, n int, meter *cpuMeter, op func(worker int) error) (measured, string, error) {
	path := filepath.Join(p.dir, "apiserver-"+name+".pprof")
	stop := make(chan struct{})
	var profErr error
	var prof []byte
	before := meter.read()
	go func() {
		defer close(stop)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
		if err != nil {
			profErr = err
			return
		}
		resp, err := p.hc.Do(req)
		if err != nil {
			profErr = err
			return
		}
		defer resp.Body.Close()
		prof, profErr = io.ReadAll(resp.Body)
		if profErr == nil && resp.StatusCode != http.StatusOK {
			profErr = fmt.Errorf("GET /debug/pprof/profile: %s: %s", resp.Status, oneLine(string(prof)))
		}
	}()
	r := parallelUntil(n, stop, op)
	<-stop
	m := measured{run: r, cpu: meter.read().minus(before)}
	if profErr != nil {
		return m, "", profErr
	}
	if r.errs > 0 {
		return m, "", fmt.Errorf("%s under profile: %w", name, r.firstErr)
	}
	if len(prof) == 0 {
		return m, "", errors.New("empty profile")
	}
	return m, path, os.WriteFile(path, prof, 0o644)
}
