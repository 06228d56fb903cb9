// Package redisserver tells which Redis server a client's commands reach, cheaply enough
// to ask after every write whose answer must come from the server a caller built or
// checked (a restarted Redis, or another after a failover, may hold an older copy of the
// data under good markers).
//
// A restart or a failover breaks every pooled connection, so a command that reached
// another server went through a newly opened connection: a pool miss, counted before the
// command returns. A Watch asked after such a command therefore reads the server's INFO
// again whenever the pool has opened a connection since its last read, and otherwise
// answers from memory (one atomic load).
package redisserver

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Server is what a Redis server's INFO (sections server and memory) says of it.
type Server struct {
	// RunID is new at every start of the server.
	RunID string
	// Fields are INFO's fields by name ("maxmemory_policy", ...).
	Fields map[string]string
}

// Evicts reports whether the server may evict keys: it has a memory limit and a policy
// other than noeviction.
func (s Server) Evicts() bool {
	limit := s.Fields["maxmemory"]
	return limit != "" && limit != "0" && s.Fields["maxmemory_policy"] != "noeviction"
}

// Watch caches the Server a client's commands reach. Its methods are safe for concurrent
// use.
type Watch struct {
	c    redis.UniversalClient
	key  string
	last atomic.Pointer[seen]
}

// seen is a Server as read when the client's pool had opened misses connections.
type seen struct {
	srv    Server
	misses uint32
}

// NewWatch returns a Watch of the server c reaches for key (in a cluster, the master of
// key's slot; otherwise the one server).
func NewWatch(c redis.UniversalClient, key string) *Watch { return &Watch{c: c, key: key} }

// Current returns the server the client's commands reach now, reading its INFO again only
// when the pool has opened a connection since the last read. Call it after the command
// whose server matters. Errors are the client's, unwrapped.
func (w *Watch) Current(ctx context.Context) (Server, error) {
	misses := w.c.PoolStats().Misses // before INFO: a value is never newer than its tag
	if s := w.last.Load(); s != nil && s.misses == misses {
		return s.srv, nil
	}
	return w.read(ctx, misses)
}

// Read reads the server's INFO now, whatever the pool did.
func (w *Watch) Read(ctx context.Context) (Server, error) {
	return w.read(ctx, w.c.PoolStats().Misses)
}

// Forget drops what the Watch remembers, so that the next Current reads INFO again (a
// caller that found the server misconfigured asks again until it is fixed).
func (w *Watch) Forget() { w.last.Store(nil) }

func (w *Watch) read(ctx context.Context, misses uint32) (Server, error) {
	var node redis.Cmdable = w.c
	if cc, ok := w.c.(*redis.ClusterClient); ok {
		var err error
		if node, err = cc.MasterForKey(ctx, w.key); err != nil {
			return Server{}, err
		}
	}
	info, err := node.Info(ctx, "server", "memory").Result()
	if err != nil {
		return Server{}, err
	}
	srv := Server{Fields: map[string]string{}}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			srv.Fields[k] = v
		}
	}
	if srv.RunID = srv.Fields["run_id"]; srv.RunID == "" {
		return Server{}, errors.New("redisserver: INFO server has no run_id")
	}
	w.last.Store(&seen{srv: srv, misses: misses})
	return srv, nil
}
