package main

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"k8s.io/client-go/metadata"
)

// The collector on a large expiring share, with live clients refreshing
// through the same rotor serve (`make bench-scale`, --gc-expiring): the
// collector must not starve refreshes, so the refresh p99 during the
// collection is set beside the p99 of an equally long window right after
// it (the same store less the collected share, the same rotor).

// stamped is a refresh latency with when the refresh started.
type stamped struct {
	at  time.Time
	lat time.Duration
}

// refreshLoad is clients refreshing their own sessions back to back until
// stopped; a client stops at its first failure (its token may have been
// rotated by a request whose answer was lost).
type refreshLoad struct {
	mu       sync.Mutex
	samples  []stamped
	errs     int
	firstErr error
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startRefreshLoad(ctx context.Context, ic *issuerClient, tokens []string) *refreshLoad {
	l := &refreshLoad{stop: make(chan struct{})}
	for w := range tokens {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var mine []stamped
			var err error
			for {
				select {
				case <-l.stop:
				case <-ctx.Done():
				default:
					t := time.Now()
					if err = refresh(ctx, ic, tokens, w); err == nil {
						mine = append(mine, stamped{t, time.Since(t)})
						continue
					}
				}
				break
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			l.samples = append(l.samples, mine...)
			if err != nil {
				l.errs++
				if l.firstErr == nil {
					l.firstErr = err
				}
			}
		}()
	}
	return l
}

func (l *refreshLoad) end() {
	close(l.stop)
	l.wg.Wait()
}

// window is the latencies of refreshes started in [from, to).
func (l *refreshLoad) window(from, to time.Time) []time.Duration {
	var lat []time.Duration
	for _, s := range l.samples {
		if !s.at.Before(from) && s.at.Before(to) {
			lat = append(lat, s.lat)
		}
	}
	return sortedCopy(lat)
}

func latencies(lat []time.Duration, d time.Duration) string {
	if len(lat) == 0 {
		return "no refreshes"
	}
	return fmt.Sprintf("p50 %s, p99 %s (%s refreshes, %.0f/s)", ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), thousands(len(lat)), float64(len(lat))/d.Seconds())
}

// gcUnderLoad logs clients in through p (password grant, the default
// client), seeds gc sessions that expire together at a moment estimated
// from the seed rate and the API server's catch-up, keeps the clients
// refreshing through the collection and for as long again after it, and
// reports the collector's delete rate and both latencies.
func gcUnderLoad(ctx context.Context, c config, p *proc, meta metadata.Interface, seeder *etcdSeeder, stored int, seedRate float64, catchUpPerSession time.Duration, password string, r *report) error {
	ic := &issuerClient{url: p.issuerURL, hc: loadClient()}
	tokens := make([]string, c.gcClients)
	progress("%d password logins for the live clients", c.gcClients)
	for i := range tokens {
		reply, err := ic.token(ctx, url.Values{"grant_type": {"password"}, "username": {benchUser}, "password": {password}})
		if err != nil {
			return p.failed(fmt.Errorf("login: %w", err))
		}
		tokens[i] = reply.RefreshToken
	}
	stored += c.gcClients
	g := c.gcExpiring
	fill := time.Duration(float64(g)/seedRate*float64(time.Second)) + time.Duration(g)*catchUpPerSession
	expiry := time.Now().Add(fill + c.expiryMargin).Truncate(time.Second).Add(time.Second)
	progress("the clients refresh; seeding %s sessions expiring together at %s (in %s)", thousands(g), expiry.Format("15:04:05"), time.Until(expiry).Round(time.Second))
	load := startRefreshLoad(ctx, ic, tokens)
	defer func() {
		select {
		case <-load.stop:
		default:
			load.end()
		}
	}()
	t := time.Now()
	if _, err := seeder.seed(ctx, scaleNamespace, nil, 0, g, 0, expiry); err != nil {
		return err
	}
	seeded := time.Now()
	if err := awaitStored(ctx, meta, scaleNamespace, stored+g); err != nil {
		return err
	}
	listed := time.Now()
	progress("  the API server lists them %s after seeding ended (%s in all)", time.Since(seeded).Round(100*time.Millisecond), time.Since(t).Round(100*time.Millisecond))
	if !time.Now().Before(expiry) {
		r.add("garbage collection", "collector under refresh load", fmt.Sprintf("**not measured**: the %s sessions expired at %s UTC, before the API server listed them all (raise --expiry-margin)", thousands(g), expiry.UTC().Format("15:04:05")), "", "")
		return nil
	}
	progress("waiting %s for the expiry; rotor collecting %s sessions while %d clients refresh", time.Until(expiry).Round(100*time.Millisecond), thousands(g), c.gcClients)
	gc := p.watchGC(ctx, expiry.Add(-time.Second), stored+g, stored)
	if gc.err != nil {
		return gc.err
	}
	d := gc.last.Sub(gc.first)
	after := min(max(d, 10*time.Second), 5*time.Minute)
	progress("  collected in %s; refreshing %s more without the collector", d.Round(100*time.Millisecond), after.Round(time.Second))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(after):
	}
	load.end()
	during := load.window(gc.first, gc.last)
	quiet := load.window(gc.last.Add(time.Second), gc.last.Add(after))
	// The moments between the API server listing the new sessions and
	// their expiry: without the collector too, before it.
	before := load.window(listed, expiry)
	rate := float64(g) / d.Seconds()
	r.add("garbage collection", fmt.Sprintf("rotor's collector (--session-gc-rate: its default, 25 a second), %s of %s sessions expiring at once, %d clients refreshing", thousands(g), thousands(stored+g), c.gcClients),
		fmt.Sprintf("**%.0f deletes/s** (%s from the first to the last delete; first delete seen %s after the expiry; rotor RSS max %s)",
			rate, d.Round(100*time.Millisecond), gc.first.Sub(expiry).Round(100*time.Millisecond), mib(gc.rss)), "", "")
	r.add("garbage collection", "refresh latency during the collection", latencies(during, d), "", "")
	r.add("garbage collection", "refresh latency without it, before (from the API server listing the expiring sessions to their expiry)", latencies(before, expiry.Sub(listed)), "", "")
	r.add("garbage collection", "refresh latency without it (as long, right after)", latencies(quiet, after-time.Second), "", "")
	verdict, ratio := "not measured", "n/a"
	if len(during) > 0 && len(quiet) > 0 {
		q := float64(percentile(during, 0.99)) / float64(percentile(quiet, 0.99))
		ratio, verdict = fmt.Sprintf("**%.2f**", q), check(q <= 2)
		if len(before) > 0 {
			ratio += fmt.Sprintf(" (during ÷ before: %.2f)", float64(percentile(during, 0.99))/float64(percentile(before, 0.99)))
		}
	}
	r.add("garbage collection", "refresh p99 during ÷ without (after)", ratio, "≤ 2", verdict)
	if load.errs > 0 {
		r.add("garbage collection", "refresh failures", fmt.Sprintf("**%d clients stopped** (first: %s)", load.errs, oneLine(load.firstErr.Error())), "none", "**MISSED**")
	}
	return nil
}
