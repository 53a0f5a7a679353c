package issuer_test

import (
	"net/url"
	"strings"
	"testing"
)

func TestBadInputProbe(t *testing.T) {
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", "pw-alice-123")
	r := startReplica(t, ns, newClock())
	a := r.login(t, "alice", "pw-alice-123")
	t.Logf("login %d %s", a.Status, a.RefreshToken)
	name, secret, _ := strings.Cut(a.RefreshToken, ".")
	for _, tok := range []string{name[:27] + "\n\n." + secret, name[:27] + "\r\n." + secret, name[:28] + "b." + secret} {
		r.Requests.reads.Store(0)
		rep := r.refresh(t, tok)
		t.Logf("%q -> %d %s %s reads=%d", tok, rep.Status, rep.Error, rep.Description, r.Requests.reads.Load())
	}
	rep := post(t, r.URL+"/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw-alice-123"}, "client_id": {strings.Repeat("x", 300)}})
	t.Logf("long client_id -> %d %s %s", rep.Status, rep.Error, rep.Description)
	rep = post(t, r.URL+"/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw-alice-123"}, "client_id": {"a\x00b"}})
	t.Logf("nul client_id -> %d %s %s", rep.Status, rep.Error, rep.Description)
	rep = post(t, r.URL+"/revoke", url.Values{"token": {name[:27] + "\n\n." + secret}})
	t.Logf("revoke nl -> %d %s %s", rep.Status, rep.Error, rep.Description)
	t.Log(r.Logs.String()[max(0, len(r.Logs.String())-3000):])
}
