package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcmysql "github.com/testcontainers/testcontainers-go/modules/mysql"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Own is a server started for one test alone, in a container of its own, so that the test
// may pause, stop or restart it without disturbing any other test. Its address on loopback
// stays the same across Restart.
type Own struct {
	c testcontainers.Container
	// Addr is the server's host:port on loopback.
	Addr string
}

// ID returns the container's ID.
func (o *Own) ID() string { return o.c.GetContainerID() }

// Pause freezes every process of the container (docker pause, SIGSTOP-like): connections
// stay open and the kernel still accepts data, but nothing answers.
func (o *Own) Pause(tb testing.TB) {
	tb.Helper()
	o.docker(tb, "pause", func(ctx context.Context, cli *testcontainers.DockerClient) error {
		_, err := cli.ContainerPause(ctx, o.ID(), client.ContainerPauseOptions{})
		return err
	})
}

// Unpause resumes a paused container.
func (o *Own) Unpause(tb testing.TB) {
	tb.Helper()
	o.docker(tb, "unpause", func(ctx context.Context, cli *testcontainers.DockerClient) error {
		_, err := cli.ContainerUnpause(ctx, o.ID(), client.ContainerUnpauseOptions{})
		return err
	})
}

// Stop stops the container: SIGTERM, then SIGKILL after grace (0: at once, a crash).
func (o *Own) Stop(tb testing.TB, grace time.Duration) {
	tb.Helper()
	if err := o.c.Stop(context.Background(), &grace); err != nil {
		tb.Fatalf("testenv: stopping container %s: %v", o.ID(), err)
	}
}

// Start starts the stopped container again and waits until its server is ready.
func (o *Own) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := o.c.Start(ctx); err != nil {
		tb.Fatalf("testenv: starting container %s again: %v", o.ID(), err)
	}
}

func (o *Own) docker(tb testing.TB, what string, fn func(context.Context, *testcontainers.DockerClient) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		tb.Fatalf("testenv: docker client: %v", err)
	}
	defer cli.Close()
	if err := fn(ctx, cli); err != nil {
		tb.Fatalf("testenv: docker %s %s: %v", what, o.ID(), err)
	}
}

// Exec runs cmd in the container and returns its exit code and output; a failure to run it
// at all fails the test.
func (o *Own) Exec(tb testing.TB, cmd ...string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, r, err := o.c.Exec(ctx, cmd, tcexec.Multiplexed())
	if err != nil {
		tb.Fatalf("testenv: exec %v in %s: %v", cmd, o.ID(), err)
	}
	out, _ := io.ReadAll(r)
	return code, string(out)
}

// OwnRedis starts a Redis server for the calling test alone (terminated when it ends).
func OwnRedis(tb testing.TB) *Own {
	tb.Helper()
	img := image("COMMERCEKIT_REDIS_IMAGE", DefaultRedisImage, LocalRedisImage)
	return own(tb, "Redis ("+img+")", "6379/tcp", func(ctx context.Context, opts ...testcontainers.ContainerCustomizer) (testcontainers.Container, error) {
		return orNil(tcredis.Run(ctx, img, opts...))
	}, nil)
}

// OwnMySQL starts a MySQL (or MariaDB) server for the calling test alone (terminated when
// it ends) and returns it with a DSN for an empty database on it.
func OwnMySQL(tb testing.TB) (*Own, string) {
	tb.Helper()
	return ownMySQL(tb, nil)
}

// Impatient returns dsn with the driver's dial, read and write timeouts set to d: a
// statement sent to a paused server (docker pause: its connections stay open and nothing
// answers) fails after d instead of waiting for ever.
func Impatient(tb testing.TB, dsn string, d time.Duration) string {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatalf("testenv: parse the DSN: %v", err)
	}
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = d, d, d
	return cfg.FormatDSN()
}

// OwnMySQLOnDisk is OwnMySQL with the server's data directory on a disk of its own of
// size bytes (a tmpfs, in memory), which a test may fill (Exec) to see the server run out
// of space.
func OwnMySQLOnDisk(tb testing.TB, size int64) (*Own, string) {
	tb.Helper()
	return ownMySQL(tb, func(hc *container.HostConfig) {
		hc.Tmpfs = map[string]string{"/var/lib/mysql": "size=" + strconv.FormatInt(size, 10) + ",mode=1777"}
	})
}

func ownMySQL(tb testing.TB, edit func(*container.HostConfig)) (*Own, string) {
	tb.Helper()
	img := image("COMMERCEKIT_MYSQL_IMAGE", DefaultMySQLImage, LocalMySQLImage)
	const password = "commercekit"
	o := own(tb, "MySQL ("+img+")", "3306/tcp", func(ctx context.Context, opts ...testcontainers.ContainerCustomizer) (testcontainers.Container, error) {
		opts = append([]testcontainers.ContainerCustomizer{
			tcmysql.WithUsername("root"), tcmysql.WithPassword(password), tcmysql.WithDatabase("commercekit"),
			testcontainers.WithWaitStrategy(wait.ForSQL("3306/tcp", "mysql", func(host string, port network.Port) string {
				return fmt.Sprintf("root:%s@tcp(%s)/commercekit", password, net.JoinHostPort(host, port.Port()))
			}).WithStartupTimeout(startTimeout)),
		}, opts...)
		return orNil(tcmysql.Run(ctx, img, opts...))
	}, edit)
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName, cfg.ParseTime = "root", password, "tcp", o.Addr, "commercekit", true
	return o, cfg.FormatDSN()
}

// orNil returns c, or a nil Container when c is a nil pointer: a module's Run returns one
// with its error, and as a Container it would not be nil.
func orNil[P interface {
	*T
	testcontainers.Container
}, T any](c P, err error) (testcontainers.Container, error) {
	if c == nil {
		return nil, err
	}
	return c, err
}

// own starts a container through run with port published on a fixed loopback port (so
// the address survives a restart), its host configuration further edited by edit unless
// nil, and terminates it when the test ends.
func own(tb testing.TB, what, port string, run func(context.Context, ...testcontainers.ContainerCustomizer) (testcontainers.Container, error), edit func(*container.HostConfig)) *Own {
	tb.Helper()
	setupEnv()
	var hostPort string
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := startRetrying(func() (testcontainers.Container, error) {
		hostPort = freePort(tb)
		return run(ctx, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort(port): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: hostPort}}}
			if edit != nil {
				edit(hc)
			}
		}))
	})
	if c != nil {
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if cli, err := testcontainers.NewDockerClientWithOpts(ctx); err == nil {
				_, _ = cli.ContainerUnpause(ctx, c.GetContainerID(), client.ContainerUnpauseOptions{}) // in case the test failed while paused
				cli.Close()
			}
			if err := c.Terminate(ctx); err != nil {
				tb.Errorf("testenv: terminating the %s container: %v", what, err)
			}
		})
	}
	if err != nil {
		tb.Fatal(missing(what, err))
	}
	return &Own{c: c, Addr: net.JoinHostPort("127.0.0.1", hostPort)}
}
