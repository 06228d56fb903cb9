package testenv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// clusterNodes is how many masters RedisCluster's cluster has: the fewest Redis Cluster
// accepts, so that the slots, and the keys of different hash tags, spread over servers.
const clusterNodes = 3

// Cluster is a Redis Cluster of a test's own (RedisCluster).
type Cluster struct {
	// Client is a cluster client on it.
	Client *redis.ClusterClient
	// Addrs are its masters' addresses on loopback.
	Addrs []string
	c     testcontainers.Container
}

// clusterNode is the shell command that starts the cluster node of port p, in the
// background; its data is in memory only, its cluster configuration (node ID, slots) in a
// file, so that a node restarted keeps its place in the cluster and comes back empty.
func clusterNode(p string) string {
	return fmt.Sprintf("redis-server --port %s --cluster-enabled yes --cluster-config-file /tmp/nodes-%s.conf "+
		"--bind 0.0.0.0 --protected-mode no --save '' --appendonly no --daemonize yes --logfile /tmp/%s.log", p, p, p)
}

// RedisCluster starts a Redis Cluster of clusterNodes masters for the calling test alone
// (one container from the Redis image, terminated when the test ends). Each node listens
// inside the container on the same port as it is published on loopback, and the nodes met
// each other at 127.0.0.1, so the slot map the client reads names loopback addresses only:
// every command goes through loopback to the test's own container. Tests sharing one
// cluster keep apart by the keys they use (a hash tag of their own).
func RedisCluster(tb testing.TB) *Cluster {
	tb.Helper()
	setupEnv()
	img := image("COMMERCEKIT_REDIS_IMAGE", DefaultRedisImage, LocalRedisImage)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var addrs []string
	c, err := startRetrying(func() (testcontainers.Container, error) {
		ports := distinctFreePorts(tb, clusterNodes)
		addrs = addrs[:0]
		var script strings.Builder
		bindings := network.PortMap{}
		var exposed []string
		for _, p := range ports {
			// The cluster bus listens on the port + 10000, inside the container only.
			script.WriteString(clusterNode(p) + " && ")
			bindings[network.MustParsePort(p+"/tcp")] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: p}}
			exposed = append(exposed, p+"/tcp")
			addrs = append(addrs, net.JoinHostPort("127.0.0.1", p))
		}
		fmt.Fprintf(&script, "for p in %s; do until redis-cli -p $p ping >/dev/null 2>&1; do sleep 0.05; done; done && "+
			"redis-cli --cluster create %s --cluster-yes && exec sleep infinity", strings.Join(ports, " "), strings.Join(addrs, " "))
		c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image:        img,
				Entrypoint:   []string{"sh", "-c", script.String()},
				ExposedPorts: exposed,
				HostConfigModifier: func(hc *container.HostConfig) {
					hc.PortBindings = bindings
				},
				WaitingFor: wait.ForLog("All 16384 slots covered").WithStartupTimeout(startTimeout),
			},
			Started: true,
		})
		if c == nil || reflect.ValueOf(c).IsNil() { // a nil pointer as a Container would not be nil
			return nil, err
		}
		return c, err
	})
	if c != nil {
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Terminate(ctx); err != nil {
				tb.Errorf("testenv: terminating the Redis Cluster container: %v", err)
			}
		})
	}
	if err != nil {
		tb.Fatal(missing("Redis Cluster ("+img+")", err))
	}
	// The nodes agree on the slot map a moment after redis-cli has assigned it.
	for _, a := range addrs {
		clusterOK(ctx, tb, a)
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 64})
	tb.Cleanup(func() { client.Close() })
	if err := client.ForEachShard(ctx, func(ctx context.Context, shard *redis.Client) error {
		return shard.Ping(ctx).Err()
	}); err != nil {
		tb.Fatalf("testenv: Redis Cluster at %v: %v", addrs, err)
	}
	tb.Logf("testenv: Redis Cluster of %d masters at %v, a Testcontainers container from %s", clusterNodes, addrs, img)
	return &Cluster{Client: client, Addrs: addrs, c: c}
}

// clusterOK waits until the node at addr reports cluster_state:ok.
func clusterOK(ctx context.Context, tb testing.TB, addr string) {
	tb.Helper()
	node := redis.NewClient(&redis.Options{Addr: addr})
	defer node.Close()
	for {
		info, err := node.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		if ctx.Err() != nil {
			tb.Fatalf("testenv: the Redis Cluster node at %s never reported cluster_state:ok: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RestartEmpty shuts the master at addr (one of Addrs) down without saving and starts it
// again: it keeps its node ID and slots and comes back empty, with a new run ID, as a
// Redis without persistence restarted. It returns once the cluster is whole again.
func (cl *Cluster) RestartEmpty(tb testing.TB, addr string) {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("testenv: %q: %v", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	code, _, err := cl.c.Exec(ctx, []string{"sh", "-c", fmt.Sprintf(
		"redis-cli -p %s shutdown nosave; while redis-cli -p %s ping >/dev/null 2>&1; do sleep 0.05; done; %s", p, p, clusterNode(p))})
	if err != nil || code != 0 {
		tb.Fatalf("testenv: restarting the Redis Cluster node at %s: exit %d, %v", addr, code, err)
	}
	clusterOK(ctx, tb, addr)
}

// distinctFreePorts returns n different free ports on loopback, each low enough that its
// cluster bus port (+10000) exists.
func distinctFreePorts(tb testing.TB, n int) []string {
	tb.Helper()
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		p := freePort(tb)
		if v, _ := strconv.Atoi(p); v > 65535-10000 || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}
