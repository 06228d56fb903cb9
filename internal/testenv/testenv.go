// Package testenv hands tests ready, isolated backends on real servers: MySQL (or MariaDB)
// and Redis started once per test package through Testcontainers, an in-memory SQLite, and
// a Kafka-protocol broker (an in-process kfake cluster, or a real Kafka container when
// COMMERCEKIT_KAFKA_IMAGE names one).
//
// Every test gets its own MySQL database, its own Redis logical database and its own Kafka
// cluster (or its own topic names on a shared real broker), so tests never see each other's
// data. A package that uses the containers calls Main from its TestMain so they are
// terminated when its tests end:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// A backend that cannot be had fails the test with a message naming what is missing; nothing
// is skipped silently.
//
// Environment:
//
//	COMMERCEKIT_MYSQL_IMAGE   image for the MySQL fixture; unset: mysql:8.4 if present locally, else
//	                          commercekit/mariadb:test if present (scripts/testimages.sh builds it
//	                          where no registry is reachable), else mysql:8.4 pulled
//	COMMERCEKIT_REDIS_IMAGE   image for the Redis fixture; likewise redis:7.4 or commercekit/redis:test
//	COMMERCEKIT_KAFKA_IMAGE   a confluentinc/confluent-local image for a real Kafka; unset = kfake
//	COMMERCEKIT_MYSQL_DSN     use this already-running MySQL server instead of a container
//	                          (loopback only; the user must be able to create databases)
//	COMMERCEKIT_REDIS_ADDR    use this already-running Redis server instead of a container (loopback
//	                          only); its data is never touched: a test gets only a logical database
//	                          that is empty when it takes it (locked against other test processes)
//	                          and deletes only what is in it
//
// Testcontainers is pointed at loopback: TESTCONTAINERS_HOST_OVERRIDE defaults to 127.0.0.1
// (every machine here has /.dockerenv, which would otherwise send it to the default gateway)
// and TESTCONTAINERS_RYUK_DISABLED to true (no ryuk image can be pulled; Main terminates the
// containers instead).
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// Default images, overridable through the environment.
const (
	DefaultMySQLImage = "mysql:8.4"
	DefaultRedisImage = "redis:7.4"

	// LocalMySQLImage and LocalRedisImage are what scripts/testimages.sh builds from Debian
	// packages when the defaults cannot be pulled; the fixtures use them when present and
	// the defaults are not.
	LocalMySQLImage = "commercekit/mariadb:test"
	LocalRedisImage = "commercekit/redis:test"
)

// startTimeout bounds the start of one container.
const startTimeout = 3 * time.Minute

var (
	envOnce sync.Once

	cleanupMu sync.Mutex
	cleanups  []func()
)

// setupEnv points Testcontainers at loopback before the first container starts.
func setupEnv() {
	envOnce.Do(func() {
		if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
			os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
		}
		if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
			os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
		}
	})
}

// Main runs the package's tests, then terminates every container they started, and exits
// with the tests' code. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// Shutdown terminates every container the package started. Main calls it; call it yourself
// only from a TestMain that does not use Main.
func Shutdown() {
	cleanupMu.Lock()
	fns := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func atShutdown(fn func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, fn)
	cleanupMu.Unlock()
}

// terminateAtShutdown registers c for termination by Shutdown.
func terminateAtShutdown(name string, c testcontainers.Container) {
	atShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Terminate(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: terminating the %s container: %v\n", name, err)
		}
	})
}

// image picks the image for a fixture: the one named by env; else def when it is present
// locally; else local (built by scripts/testimages.sh) when that is present; else def, which
// Docker will try to pull.
func image(env, def, local string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return def
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, def); err == nil {
		return def
	}
	if _, err := cli.ImageInspect(ctx, local); err == nil {
		return local
	}
	return def
}

// missing explains, in a failure message, what a test needs and how to get it.
func missing(what string, err error) string {
	return fmt.Sprintf("testenv: %s is not available: %v\n"+
		"  This test needs a Docker engine and the %s image. Run `bash scripts/testimages.sh` "+
		"(or `make test`), which starts an engine and builds the images from Debian packages "+
		"when no registry is reachable.", what, err, what)
}

// requireLoopback fails unless host names this machine: tests talk only to loopback.
func requireLoopback(tb testing.TB, what, host string) {
	tb.Helper()
	if host == "" || host == "localhost" {
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return
	}
	tb.Fatalf("testenv: %s points at %q; tests connect only to loopback", what, host)
}

// uniqueName returns a name derived from the test's name, unique within the process,
// made of [a-z0-9_] and at most 48 characters long.
func uniqueName(tb testing.TB, prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(tb.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := b.String()
	if len(base) > 24 {
		base = base[len(base)-24:]
	}
	return fmt.Sprintf("%s_%s_%d", prefix, strings.Trim(base, "_"), seq.next())
}

type counter struct {
	mu sync.Mutex
	n  int64
}

func (c *counter) next() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

// seq makes names unique within one test binary; with the start time it also keeps
// concurrently running test binaries on a shared server apart.
var seq = &counter{n: time.Now().UnixNano() % 1_000_000 * 1000}
