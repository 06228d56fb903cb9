package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// redisDatabases is how many logical databases the Redis fixture has; each test holds one
// for its duration, so at most this many Redis tests of one package run at once.
const redisDatabases = 64

type redisServer struct {
	addr string
	free chan int // logical databases not held by a running test
}

var (
	redisOnce   sync.Once
	redisShared *redisServer
	redisErr    error
)

// Redis returns a client on a Redis logical database of the test's own, empty at the start
// and flushed at the end. The server is the package's Redis container (or the server named
// by COMMERCEKIT_REDIS_ADDR). Scripts, pipelines and transactions work as on any server;
// only FLUSHALL and cross-database commands would reach beyond the test.
func Redis(tb testing.TB) *redis.Client {
	tb.Helper()
	srv := redisServerFor(tb)
	var db int
	select {
	case db = <-srv.free:
	case <-tb.Context().Done():
		tb.Fatal("testenv: test ended while waiting for a free Redis database")
	}
	client := redis.NewClient(&redis.Options{Addr: srv.addr, DB: db, PoolSize: 128})
	if err := client.FlushDB(context.Background()).Err(); err != nil {
		srv.free <- db
		tb.Fatalf("testenv: flushing Redis database %d: %v", db, err)
	}
	tb.Cleanup(func() {
		client.FlushDB(context.Background())
		client.Close()
		srv.free <- db
	})
	return client
}

// RedisAddr returns the address of the package's Redis server, starting it on first use.
// Tests that open their own clients must keep to keys of their own.
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	return redisServerFor(tb).addr
}

func redisServerFor(tb testing.TB) *redisServer {
	tb.Helper()
	redisOnce.Do(func() { redisShared, redisErr = startRedis() })
	if redisErr != nil {
		tb.Fatal(redisErr)
	}
	return redisShared
}

func startRedis() (*redisServer, error) {
	setupEnv()
	databases := redisDatabases
	var addr, origin string
	if a := os.Getenv("COMMERCEKIT_REDIS_ADDR"); a != "" {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("testenv: COMMERCEKIT_REDIS_ADDR: %w", err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("testenv: COMMERCEKIT_REDIS_ADDR points at %q; tests connect only to loopback", host)
		}
		addr, origin, databases = a, "the server of COMMERCEKIT_REDIS_ADDR", 16
	} else {
		img := image("COMMERCEKIT_REDIS_IMAGE", DefaultRedisImage, LocalRedisImage)
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		c, err := tcredis.Run(ctx, img, testcontainers.WithCmdArgs("--databases", fmt.Sprint(redisDatabases)))
		if c != nil {
			terminateAtShutdown("Redis", c)
		}
		if err != nil {
			return nil, fmt.Errorf("%s", missing("Redis ("+img+")", err))
		}
		host, err := c.Host(ctx)
		if err != nil {
			return nil, fmt.Errorf("testenv: Redis container host: %w", err)
		}
		port, err := c.MappedPort(ctx, "6379/tcp")
		if err != nil {
			return nil, fmt.Errorf("testenv: Redis container port: %w", err)
		}
		addr, origin = net.JoinHostPort(host, port.Port()), "a Testcontainers container from "+img
	}

	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	info, err := client.Info(context.Background(), "server").Result()
	if err != nil {
		return nil, fmt.Errorf("%s", missing("Redis", fmt.Errorf("round trip to %s at %s: %w", origin, addr, err)))
	}
	fmt.Fprintf(os.Stderr, "testenv: Redis %s at %s, %s\n", infoField(info, "redis_version"), addr, origin)

	srv := &redisServer{addr: addr, free: make(chan int, databases)}
	for i := range databases {
		srv.free <- i
	}
	return srv, nil
}

// infoField returns one field of an INFO reply.
func infoField(info, key string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), key+":"); ok {
			return v
		}
	}
	return "?"
}
