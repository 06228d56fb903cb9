//go:build unix

package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// lockRedisDB takes an exclusive lock, shared by every process of the machine, on logical
// database db of the Redis at addr, so that the tests of two packages running at once never
// share a database of an external server. It reports false if another process holds it.
func lockRedisDB(addr string, db int) (unlock func(), ok bool) {
	name := filepath.Join(os.TempDir(), fmt.Sprintf("commercekit-testenv-redis-%s-%d.lock",
		strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(addr), db))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, true
}
