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

	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// redisDatabases is how many logical databases the Redis container has; each test holds one
// for its duration, so at most this many Redis tests of one package run at once.
const redisDatabases = 64

// redisServer hands out logical databases of one Redis server, one per test.
type redisServer struct {
	addr string
	// external: the server of COMMERCEKIT_REDIS_ADDR, someone else's, whose data the tests
	// must never touch. Tests then get only databases that are empty when they take them,
	// locked against other test processes, and delete only what is in those.
	external bool
	free     chan int // logical databases not held by a running test

	mu   sync.Mutex
	left int // databases still in the pool (external: those found holding data leave it)
}

var (
	redisOnce   sync.Once
	redisShared *redisServer
	redisErr    error
)

// Redis returns a client on a Redis logical database of the test's own, empty at the start;
// what the test wrote there is deleted at the end. The server is the package's Redis
// container, or the server named by COMMERCEKIT_REDIS_ADDR: there, a test only ever gets a
// database that held nothing when it took it (locked against the tests of other packages
// running at the same time), and data the tests did not create is never touched. Scripts,
// pipelines and transactions work as on any server; FLUSHDB empties the test's database
// only, and commands that reach other databases (FLUSHALL, SWAPDB, MOVE) are refused.
func Redis(tb testing.TB) *redis.Client {
	tb.Helper()
	return redisServerFor(tb).client(tb)
}

func (srv *redisServer) client(tb testing.TB) *redis.Client {
	tb.Helper()
	db, release := srv.take(tb)
	client := redis.NewClient(&redis.Options{Addr: srv.addr, DB: db, PoolSize: 128})
	client.AddHook(ownDatabaseOnly{})
	if !srv.external { // the container is the tests' own: start from a clean database
		if err := client.FlushDB(context.Background()).Err(); err != nil {
			client.Close()
			release()
			tb.Fatalf("testenv: flushing Redis database %d: %v", db, err)
		}
	}
	tb.Cleanup(func() {
		// The database was empty when the test took it and no other test could use it
		// meanwhile: everything in it is the test's.
		if err := client.FlushDB(context.Background()).Err(); err != nil {
			tb.Errorf("testenv: deleting the test's data in Redis database %d: %v", db, err)
		}
		client.Close()
		release()
	})
	return client
}

// take waits for a logical database of the test's own and returns it with the function
// that gives it back.
func (srv *redisServer) take(tb testing.TB) (int, func()) {
	tb.Helper()
	for {
		srv.mu.Lock()
		left := srv.left
		srv.mu.Unlock()
		if left == 0 {
			tb.Fatalf("testenv: no empty logical database on the Redis at %s (COMMERCEKIT_REDIS_ADDR): "+
				"the tests use only databases that hold nothing, so that they never touch data of others", srv.addr)
		}
		var db int
		select {
		case db = <-srv.free:
		case <-tb.Context().Done():
			tb.Fatal("testenv: test ended while waiting for a free Redis database")
		}
		if !srv.external {
			return db, func() { srv.free <- db }
		}
		unlock, ok := lockRedisDB(srv.addr, db)
		if !ok { // a test of another package holds it
			srv.free <- db
			time.Sleep(20 * time.Millisecond)
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: srv.addr, DB: db})
		n, err := c.DBSize(context.Background()).Result()
		c.Close()
		if err != nil {
			unlock()
			srv.free <- db
			tb.Fatalf("testenv: Redis database %d at %s: %v", db, srv.addr, err)
		}
		if n > 0 { // someone's data: never used by the tests of this process again
			unlock()
			srv.mu.Lock()
			srv.left--
			srv.mu.Unlock()
			continue
		}
		return db, func() { unlock(); srv.free <- db }
	}
}

// ownDatabaseOnly refuses the commands that would reach beyond the client's database.
type ownDatabaseOnly struct{}

func (ownDatabaseOnly) DialHook(next redis.DialHook) redis.DialHook { return next }

func (ownDatabaseOnly) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := ownDatabase(cmd); err != nil {
			return err
		}
		return next(ctx, cmd)
	}
}

func (ownDatabaseOnly) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := ownDatabase(cmd); err != nil {
				return err
			}
		}
		return next(ctx, cmds)
	}
}

func ownDatabase(cmd redis.Cmder) error {
	switch strings.ToLower(cmd.Name()) {
	case "flushall", "swapdb", "move":
		err := fmt.Errorf("testenv: %s would reach beyond the test's own Redis database", cmd.Name())
		cmd.SetErr(err)
		return err
	}
	return nil
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
	if a := os.Getenv("COMMERCEKIT_REDIS_ADDR"); a != "" {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("testenv: COMMERCEKIT_REDIS_ADDR: %w", err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("testenv: COMMERCEKIT_REDIS_ADDR points at %q; tests connect only to loopback", host)
		}
		return newRedisServer(a, "the server of COMMERCEKIT_REDIS_ADDR", true, 16)
	}
	addr, origin, err := startRedisContainer()
	if err != nil {
		return nil, err
	}
	return newRedisServer(addr, origin, false, redisDatabases)
}

// startRedisContainer starts a Redis container with redisDatabases logical databases,
// terminated at Shutdown, and returns its address.
func startRedisContainer() (addr, origin string, err error) {
	setupEnv()
	img := image("COMMERCEKIT_REDIS_IMAGE", DefaultRedisImage, LocalRedisImage)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := startRetrying(func() (testcontainers.Container, error) {
		return orNil(tcredis.Run(ctx, img, testcontainers.WithCmdArgs("--databases", fmt.Sprint(redisDatabases))))
	})
	if c != nil {
		terminateAtShutdown("Redis", c)
	}
	if err != nil {
		return "", "", fmt.Errorf("%s", missing("Redis ("+img+")", err))
	}
	host, err := c.Host(ctx)
	if err != nil {
		return "", "", fmt.Errorf("testenv: Redis container host: %w", err)
	}
	port, err := c.MappedPort(ctx, "6379/tcp")
	if err != nil {
		return "", "", fmt.Errorf("testenv: Redis container port: %w", err)
	}
	return net.JoinHostPort(host, port.Port()), "a Testcontainers container from " + img, nil
}

// newRedisServer checks the server at addr answers and returns its pool of databases.
func newRedisServer(addr, origin string, external bool, databases int) (*redisServer, error) {
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	info, err := client.Info(context.Background(), "server").Result()
	if err != nil {
		return nil, fmt.Errorf("%s", missing("Redis", fmt.Errorf("round trip to %s at %s: %w", origin, addr, err)))
	}
	fmt.Fprintf(os.Stderr, "testenv: Redis %s at %s, %s\n", infoField(info, "redis_version"), addr, origin)
	srv := &redisServer{addr: addr, external: external, free: make(chan int, databases), left: databases}
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
