package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// etcdSeeder fills the store straight in etcd, the API server's storage:
// the sessions the RSS and GC measurements need are setup, not what is
// measured, and etcd takes them tens of times faster than the API server's
// create path, which would otherwise take most of the run. Objects are
// written as the API server stores custom resources (JSON at
// /registry/<group>/<resource>/<namespace>/<name>, no resourceVersion: the
// etcd revision is that); the API server learns of them through its own
// watch on etcd, as it does of every write. Requests go through etcd's
// JSON gateway, so the bench needs no etcd client.
type etcdSeeder struct {
	url string
	hc  *http.Client
}

func newEtcdSeeder(url string) *etcdSeeder {
	return &etcdSeeder{url: url, hc: &http.Client{Timeout: 30 * time.Second}}
}

const (
	// seedBatch is etcd's default --max-txn-ops.
	seedBatch = 128
	seedConc  = 4
)

func storageKey(rt *identityv1alpha1.RefreshToken) string {
	return "/registry/" + identityv1alpha1.GroupVersion.Group + "/refreshtokens/" + rt.Namespace + "/" + rt.Name
}

type etcdPut struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type etcdOp struct {
	RequestPut etcdPut `json:"requestPut"`
}

// txn writes objs in one etcd transaction and returns its revision, the
// resourceVersion the API server reports for each of them.
func (e *etcdSeeder) txn(ctx context.Context, objs []*identityv1alpha1.RefreshToken) (string, error) {
	ops := make([]etcdOp, len(objs))
	for i, rt := range objs {
		v, err := json.Marshal(rt)
		if err != nil {
			return "", err
		}
		ops[i].RequestPut = etcdPut{
			Key:   base64.StdEncoding.EncodeToString([]byte(storageKey(rt))),
			Value: base64.StdEncoding.EncodeToString(v),
		}
	}
	body, err := json.Marshal(map[string]any{"success": ops})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v3/kv/txn", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("etcd txn: %s: %s", resp.Status, out)
	}
	var reply struct {
		Header struct {
			Revision json.Number `json:"revision"`
		} `json:"header"`
		Succeeded bool `json:"succeeded"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return "", fmt.Errorf("etcd txn reply: %w", err)
	}
	if _, err := strconv.ParseInt(reply.Header.Revision.String(), 10, 64); err != nil || !reply.Succeeded {
		return "", fmt.Errorf("etcd txn did not succeed: %s", out)
	}
	return reply.Header.Revision.String(), nil
}

// seed stores sessions from..to-1 of namespace: those below liveBelow live
// for a week, the others expire at expiresAt. It keeps what deleting each
// needs in out (nil: not kept) and returns the timing: ops count sessions,
// latencies are per batch.
func (e *etcdSeeder) seed(ctx context.Context, namespace string, out []stored, from, to, liveBelow int, expiresAt time.Time) (run, error) {
	progress("seeding %s sessions in %s straight into etcd", thousands(to-from), namespace)
	created := metav1.NewTime(time.Now().Truncate(time.Second))
	batches := (to - from + seedBatch - 1) / seedBatch
	res, _ := pool(seedConc, 0, batches, time.Time{}, func(b int) error {
		lo := from + b*seedBatch
		objs := make([]*identityv1alpha1.RefreshToken, 0, seedBatch)
		for i := lo; i < min(lo+seedBatch, to); i++ {
			exp := expiresAt
			if i < liveBelow {
				exp = time.Time{}
			}
			rt := newSession(namespace, exp)
			rt.APIVersion, rt.Kind = identityv1alpha1.GroupVersion.String(), "RefreshToken"
			rt.UID, rt.Generation, rt.CreationTimestamp = uuid.NewUUID(), 1, created
			objs = append(objs, rt)
		}
		rev, err := e.txn(ctx, objs)
		if err != nil {
			return err
		}
		if out != nil {
			for i, rt := range objs {
				out[lo+i] = stored{rt.Name, rt.UID, rev}
			}
		}
		return nil
	})
	if res.errs > 0 {
		return res, fmt.Errorf("seeding sessions: %w", res.firstErr)
	}
	res.ops = to - from
	progress("  %s seeded in %s (%.0f/s)", thousands(res.ops), res.elapsed.Round(100*time.Millisecond), res.rate())
	return res, ctx.Err()
}
