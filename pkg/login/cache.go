package login

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// cacheVersion is the format of the cache files; a file of another
	// version is ignored (and replaced at the next login).
	cacheVersion = 1
	// lockTimeout bounds the wait for another rotor login of the same
	// session, which may be waiting for a person to type a password.
	lockTimeout = 5 * time.Minute
	// maxCacheBytes bounds what is read from a cache file.
	maxCacheBytes = 1 << 20
)

// entry is one cached session. Its file is private to the user (0600 in a
// 0700 directory): it holds the refresh token, which is the session.
type entry struct {
	Version      int       `json:"version"`
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"clientID"`
	Audience     string    `json:"audience,omitempty"`
	User         string    `json:"user"`
	RefreshToken string    `json:"refreshToken,omitempty"`
	AccessToken  string    `json:"accessToken,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	// Lifetime is the access token's lifetime, for the margin.
	Lifetime time.Duration `json:"lifetime,omitempty"`
}

// margin is how long before its expiry an access token is renewed, and
// how much earlier than it kubectl is told it expires: a minute, or a tenth
// of a shorter lifetime, so a short-lived token is not renewed at once.
func margin(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return time.Minute
	}
	return min(time.Minute, lifetime/10)
}

// renewAt is when the access token stops being handed out from the cache.
// A token without a known expiry is never handed out from the cache.
func (e *entry) renewAt() time.Time {
	if e.Expiry.IsZero() {
		return time.Time{}
	}
	return e.Expiry.Add(-margin(e.Lifetime))
}

// fresh: the cached access token may be handed out without any request.
func (e *entry) fresh(now time.Time) bool {
	return e.AccessToken != "" && now.Before(e.renewAt())
}

// cacheFile is the session's file and its lock.
type cacheFile struct {
	dir, path, lockPath string
}

// cacheDir is --cache-dir, else $XDG_CACHE_HOME/rotor, else ~/.cache/rotor.
func cacheDir(o Options, getenv func(string) string) (string, error) {
	if o.CacheDir != "" {
		return o.CacheDir, nil
	}
	if x := getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "rotor"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("finding the cache directory (set --cache-dir): %w", err)
		}
	}
	return filepath.Join(home, ".cache", "rotor"), nil
}

// sessionFile names the session of o in dir: a readable prefix (user and
// issuer host) for the person listing the directory, and a hash of
// everything that identifies the session, so that names are safe on any
// filesystem and two sessions never share a file.
func sessionFile(dir string, o Options) cacheFile {
	host := o.IssuerURL
	if u, err := url.Parse(o.IssuerURL); err == nil && u.Host != "" {
		host = u.Host
	}
	prefix := safeName(o.cacheUser()+"@"+host, 64)
	sum := sha256.Sum256([]byte(strings.Join([]string{o.IssuerURL, o.ClientID, o.Audience, o.cacheUser()}, "\x00")))
	name := prefix + "-" + hex.EncodeToString(sum[:16])
	return cacheFile{dir: dir, path: filepath.Join(dir, name+".json"), lockPath: filepath.Join(dir, name+".lock")}
}

// safeName keeps letters, digits and ._@- of s, replacing anything else,
// and cuts it to n bytes.
func safeName(s string, n int) string {
	b := []byte(s)
	for i, c := range b {
		if !safeByte(c) {
			b[i] = '_'
		}
	}
	if len(b) > n {
		b = b[:n]
	}
	return strings.TrimLeft(string(b), ".")
}

func safeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-@_", c) >= 0
}

// ensureDir creates the cache directory private to the user, and makes an
// existing one private: it holds sessions.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating cache directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cache directory %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("making cache directory %s private: %w", dir, err)
		}
	}
	return nil
}

// lock takes the session's exclusive lock, waiting for another rotor
// process (another kubectl) that holds it, at most lockTimeout. The lock is
// on a file of its own: the data file is replaced by rename, and a lock on
// a replaced file would no longer exclude anyone. The lock file is never
// removed, for the same reason.
func (c cacheFile) lock(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(c.lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	// Polling instead of a blocking flock: a blocked flock cannot be
	// cancelled, and would hold the lock later for a caller who left.
	delay := 2 * time.Millisecond
	for {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", c.lockPath, err)
		}
		if ok {
			// Closing the file releases the lock, also when the process dies.
			return func() { f.Close() }, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("another rotor login of this session has held %s for %s (is it waiting for a password?)", c.lockPath, lockTimeout)
			}
			return nil, fmt.Errorf("waiting for the lock on %s: %w", c.lockPath, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// read returns the cached session of o, nil when there is none or the file
// is unusable (another version, another session, damaged): such a file is
// as good as none and is replaced by the next write.
func (c cacheFile) read(o Options) (*entry, error) {
	f, err := os.Open(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading session cache: %w", err)
	}
	defer f.Close()
	var e entry
	// A file cut at the limit fails to decode: as good as none.
	dec := json.NewDecoder(io.LimitReader(f, maxCacheBytes))
	if err := dec.Decode(&e); err != nil {
		return nil, nil
	}
	if e.Version != cacheVersion || e.Issuer != o.IssuerURL || e.ClientID != o.ClientID || e.Audience != o.Audience || e.User != o.cacheUser() {
		return nil, nil
	}
	return &e, nil
}

// write replaces the cached session atomically: a temporary file in the
// same directory, written and synced, then renamed over the old one, so that
// a reader (or a crash) never sees half a session.
func (c cacheFile) write(e *entry) error {
	e.Version = cacheVersion
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding session cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, "."+filepath.Base(c.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing session cache: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	// CreateTemp makes it 0600 already; a umask cannot widen it, but say so.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("writing session cache: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing session cache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing session cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing session cache: %w", err)
	}
	if err := os.Rename(f.Name(), c.path); err != nil {
		return fmt.Errorf("writing session cache: %w", err)
	}
	// The rename is durable once the directory is synced; failing that
	// loses at most this rotation, not the file's consistency.
	if d, err := os.Open(c.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// remove forgets the cached session.
func (c cacheFile) remove() error {
	if err := os.Remove(c.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing session cache: %w", err)
	}
	return nil
}
