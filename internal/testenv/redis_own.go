package testenv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// OwnRedis is a Redis container of one test's own, for fault injection: the test may kill
// it (it comes back empty: no persistence), restart it and pause it, touching no other
// test's server. Its port stays the same across restarts, so clients reconnect by themselves.
type OwnRedis struct {
	c    *tcredis.RedisContainer
	addr string
}

// RedisOwn starts a Redis container for tb alone (terminated when tb ends) and returns it.
// It always runs a container, whatever COMMERCEKIT_REDIS_ADDR says.
func RedisOwn(tb testing.TB) *OwnRedis {
	tb.Helper()
	setupEnv()
	img := image("COMMERCEKIT_REDIS_IMAGE", DefaultRedisImage, LocalRedisImage)
	port := freePort(tb)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := tcredis.Run(ctx, img,
		testcontainers.WithCmdArgs("--save", "", "--appendonly", "no"),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort("6379/tcp"): {{
				HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: fmt.Sprint(port),
			}}}
		}))
	if c != nil {
		tb.Cleanup(func() { _ = testcontainers.TerminateContainer(c) })
	}
	if err != nil {
		tb.Fatal(missing("Redis ("+img+")", err))
	}
	return &OwnRedis{c: c, addr: fmt.Sprintf("127.0.0.1:%d", port)}
}

// freePort returns a loopback port nothing listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the server's address.
func (r *OwnRedis) Addr() string { return r.addr }

// Client returns a new client of the server, closed when tb ends. Short timeouts make a
// stopped or paused server a quick error.
func (r *OwnRedis) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.addr, PoolSize: 64, DialTimeout: 500 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Kill stops the server at once (SIGKILL) and starts it again, empty.
func (r *OwnRedis) Kill(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	zero := time.Duration(0)
	if err := r.c.Stop(ctx, &zero); err != nil {
		tb.Fatalf("testenv: stopping Redis: %v", err)
	}
	if err := r.c.Start(ctx); err != nil {
		tb.Fatalf("testenv: starting Redis again: %v", err)
	}
}

// Pause freezes the server's processes (docker pause) for d, then thaws them: every call
// meanwhile hangs until its client's timeout.
func (r *OwnRedis) Pause(tb testing.TB, d time.Duration) {
	tb.Helper()
	ctx := context.Background()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		tb.Fatalf("testenv: docker client: %v", err)
	}
	defer cli.Close()
	if _, err := cli.ContainerPause(ctx, r.c.GetContainerID(), client.ContainerPauseOptions{}); err != nil {
		tb.Fatalf("testenv: pausing Redis: %v", err)
	}
	time.Sleep(d)
	if _, err := cli.ContainerUnpause(ctx, r.c.GetContainerID(), client.ContainerUnpauseOptions{}); err != nil {
		tb.Fatalf("testenv: unpausing Redis: %v", err)
	}
}
