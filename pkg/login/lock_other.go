//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package login

import (
	"errors"
	"os"
)

// tryLock: without flock, concurrent kubectl processes could refresh one
// session twice, which rotor treats as a replay; refuse rather than risk it.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("session locking is not supported on this platform")
}
