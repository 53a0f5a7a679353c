package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"k8s.io/client-go/rest"
)

// apiCounter reads the API server's own count of requests it served,
// apiserver_request_total, for some resources (by default RefreshTokens).
// It is what the API server saw, whichever client sent it, so it counts
// what rotor really costs. The counter has no namespace or user label:
// nothing else may touch these resources while a window is open.
type apiCounter struct {
	client    *http.Client
	url       string
	resources map[string]bool
}

// rotorResources are every resource rotor's issuer reads or writes through
// the API server: sessions, OAuth clients and their Secrets (and the
// signing keys and accounts, also Secrets), TokenReviews and the
// SubjectAccessReviews of metrics authorization, and the events it
// records. Leases are left out: the API server renews its own all the time.
var rotorResources = []string{"refreshtokens", "oauthclients", "secrets", "tokenreviews", "subjectaccessreviews", "events"}

// newAPICounter counts the requests for resources (any subresource);
// none means refreshtokens.
func newAPICounter(cfg *rest.Config, resources ...string) (*apiCounter, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	if len(resources) == 0 {
		resources = []string{"refreshtokens"}
	}
	a := &apiCounter{client: hc, url: strings.TrimSuffix(cfg.Host, "/") + "/metrics", resources: map[string]bool{}}
	for _, r := range resources {
		a.resources[r] = true
	}
	return a, nil
}

// requestKey is a resource, a verb (GET, LIST, WATCH, POST, PUT, PATCH,
// DELETE) and an HTTP status code.
type requestKey struct{ resource, verb, code string }

type requestCounts map[requestKey]float64

// snapshot returns the current counts for the counter's resources.
func (a *apiCounter) snapshot(ctx context.Context) (requestCounts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	counts := requestCounts{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prefix := []byte("apiserver_request_total{")
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		end := bytes.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		labels := parseLabels(string(line[len(prefix):end]))
		if !a.resources[labels["resource"]] {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(line[end+1:])), 64)
		if err != nil {
			continue
		}
		counts[requestKey{labels["resource"], labels["verb"], labels["code"]}] += v
	}
	return counts, sc.Err()
}

// parseLabels parses the Prometheus text format's label set:
// name="value",name="value" with \" \\ \n escapes.
func parseLabels(s string) map[string]string {
	labels := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return labels
		}
		name := strings.TrimSpace(strings.TrimPrefix(s[:eq], ","))
		var v strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				if s[i] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(s[i])
		}
		labels[name] = v.String()
		s = strings.TrimPrefix(s[min(i+1, len(s)):], ",")
	}
	return labels
}

// minus returns the requests counted in c but not in before.
func (c requestCounts) minus(before requestCounts) requestCounts {
	d := requestCounts{}
	for k, v := range c {
		if n := v - before[k]; n > 0 {
			d[k] = n
		}
	}
	return d
}

func (c requestCounts) add(o requestCounts) {
	for k, v := range o {
		c[k] += v
	}
}

// verb is the number of requests of one verb, any code.
func (c requestCounts) verb(verb string) float64 {
	var n float64
	for k, v := range c {
		if k.verb == verb {
			n += v
		}
	}
	return n
}

// total is the number of requests but long-running WATCHes, which are
// counted when they end, not per operation.
func (c requestCounts) total() float64 {
	var n float64
	for k, v := range c {
		if k.verb != "WATCH" {
			n += v
		}
	}
	return n
}

// perOp describes the requests per operation, by verb, with the codes
// (and the resource, when it is not RefreshTokens): "POST 1.000 (201×40),
// GET 0". Long-running WATCHes are left out: they are counted when they
// end, not per operation.
func (c requestCounts) perOp(ops int, verbs ...string) string {
	var parts []string
	seen := map[string]bool{}
	for _, v := range verbs {
		seen[v] = true
	}
	for k := range c {
		if !seen[k.verb] && k.verb != "WATCH" {
			seen[k.verb] = true
			verbs = append(verbs, k.verb)
		}
	}
	for _, verb := range verbs {
		var codes []string
		for k, v := range c {
			if k.verb == verb {
				code := k.code
				if k.resource != "refreshtokens" {
					code = k.resource + " " + code
				}
				codes = append(codes, fmt.Sprintf("%s×%.0f", code, v))
			}
		}
		slices.Sort(codes)
		s := fmt.Sprintf("%s %.3f", verb, c.verb(verb)/float64(ops))
		if len(codes) > 0 {
			s += " (" + strings.Join(codes, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
