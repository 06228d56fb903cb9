// Package mysqlwatch keeps a MySQL client from waiting on a server that does not answer.
//
// A MySQL server that is paused, hung, or cut off by the network accepts connections
// and data but answers nothing: every statement sent to it waits out the driver's read
// timeout (refserver's is 10 s), and so does every request behind it, holding a pooled
// connection the whole time. A server that is down refuses at once; one that does not
// answer is the costly case, and the one a timeout alone cannot make fast without also
// ending the slow statements of a server that is merely busy.
//
// A Watch probes the server on a connection of its own: a ping every Every, each given
// Timeout, on a connection made again after any ping that failed, given ConnectTimeout
// (by default the larger of Timeout and the driver's own connect timeout: a server that
// accepts connections as slowly as the pool allows is not down). Once Failures probes in
// a row have gone unanswered it takes the server for down, and then
//   - closes every connection of its Connector, so that the statements waiting on them
//     end at once with a connection error (the driver's "invalid connection", which
//     database/sql and commercekit's packages report as a dependency failure);
//   - refuses new connections at once, without dialing, with an *errcode.UnavailableError
//     ("mysql") that matches errcode.ErrUnavailable.
//
// The first probe the server answers takes it for up again. Only a server that does not
// answer counts as down: one that answers with an error of its own (too many
// connections, access denied) is up, and its errors reach the callers as they are.
//
// A server can also answer every ping and read while refusing or holding every write: a
// global read lock (FLUSH TABLES WITH READ LOCK, which backup and snapshot tools take),
// read_only after a failover to a replica, a full disk. Each write then holds a pooled
// connection for the server's whole lock wait, and under load the writes fill the pool
// and the reads wait behind them. With Options.WriteProbe set, every answered ping is
// followed by that write, on the probe's connection, whose lock waits are a second
// (writeLockWait). When the server answers it with a lock wait timeout or an error
// saying it cannot write now (read-only, disk full: depfail's list), the watch takes
// writes for blocked, and Writable answers an *errcode.UnavailableError
// (ErrWritesBlocked), for the caller to refuse its writes at once, until a write probe
// succeeds; while they are, each probe connects anew, so that after a switchover behind
// the address (the old primary demoted to read_only, still answering the connections it
// has) the verdict is that of the server the address names now, as for the pool's new
// connections. Any other answer (the probe's table missing, say) and no answer in time are
// no verdict on writes: the state stays as it was. The watch itself refuses nothing for
// it: only its caller knows which of its work writes.
//
// Closing a connection whose statement may have reached the server leaves its outcome
// unknown to the caller, exactly as the read timeout it replaces would: a COMMIT may
// still happen once the server resumes. Every write path of commercekit is idempotent
// for that case (the caller's retry, or a reconciler, finds what happened).
package mysqlwatch

import (
	"cmp"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Defaults of Options.
const (
	DefaultEvery    = 500 * time.Millisecond
	DefaultTimeout  = time.Second
	DefaultFailures = 2
)

// ErrDown is the cause of the errors a Watch answers while it takes the server for down.
var ErrDown = errors.New("mysql server not answering its probes")

// ErrWritesBlocked is the cause of Writable's error while the server refuses or holds
// writes (see the package doc).
var ErrWritesBlocked = errors.New("mysql server not taking writes")

// writeLockWait is the write probe's lock wait (innodb_lock_wait_timeout and
// lock_wait_timeout of the probe's connection, whole seconds): how long a write probe
// waits on a global read lock before the server answers it with a lock wait timeout.
const writeLockWait = time.Second

// Options configure a Watch. Zero fields take their defaults.
type Options struct {
	// Every is the pause between two probes (DefaultEvery).
	Every time.Duration
	// Timeout bounds one ping (DefaultTimeout). It must stay well above the time a busy
	// server takes to answer a ping, since a server taken for down has its statements cut
	// off.
	Timeout time.Duration
	// ConnectTimeout bounds the probe's connecting: before its first ping, after any that
	// failed, and on renewal (MaxConnAge). Default: the larger of Timeout and the
	// mysql.Config's Timeout (the driver's dial timeout). Connecting costs a busy server
	// more than a ping (a thread, the authentication, reverse DNS), and the probe connects
	// again after a single slow ping: judged by Timeout, a server whose connections are
	// slow but within what the pool accepts would be taken for down, and kept down while
	// they stay slow.
	ConnectTimeout time.Duration
	// MaxConnAge, if positive, is how long the probe keeps a connection before it
	// connects again (as a pool renews its connections: sql.DB.SetConnMaxLifetime). Zero:
	// until a ping fails. A connection that lives on watches the server it was made to:
	// after a failover behind the same address (a proxy, a DNS name), while the old server
	// goes on answering, the watch would take the new one for up whatever it does.
	MaxConnAge time.Duration
	// Failures is how many probes in a row must go unanswered before the server is taken
	// for down (DefaultFailures): one lost probe connection is not an outage.
	Failures int
	// Log receives a line when the server goes down or comes back (slog.Default if nil).
	Log *slog.Logger
	// OnChange, if set, is called with the new state each time it changes.
	OnChange func(up bool)
	// WriteProbe, if set, is a statement that writes, run after every answered ping, given
	// Timeout and the probe's lock wait; see the package doc. Best a write that changes
	// nothing (a DELETE of a row that never exists): it opens its table for writing, so a
	// global read lock holds it and read_only refuses it, but it logs nothing and takes no
	// lock that another instance's probe would wait for. Empty: writes are never taken
	// for blocked.
	WriteProbe string
	// OnWritable, if set, is called with the new state of writes each time it changes.
	OnWritable func(writable bool)
}

// Watch watches one MySQL server; see the package doc. Its Connector's connections are
// the ones it closes and refuses. Run must be running for it to notice anything.
type Watch struct {
	cfg   *mysql.Config // the caller's, with DialFunc set to dial
	probe *mysql.Config // the same without it: the probe is never refused
	opts  Options

	// blocked is Writable's answer: nil, or why writes are blocked (read on every write
	// of a caller that asks, so without the mutex).
	blocked atomic.Pointer[errcode.UnavailableError]

	mu    sync.Mutex
	down  bool
	conns map[*conn]struct{} // open connections of the Connector
}

// New returns a Watch of the server cfg names. cfg is not modified; its DialFunc, if
// any, is the one the Watch dials with.
func New(cfg *mysql.Config, opts Options) (*Watch, error) {
	if opts.Every < 0 || opts.Timeout < 0 || opts.ConnectTimeout < 0 || opts.MaxConnAge < 0 || opts.Failures < 0 {
		return nil, fmt.Errorf("mysqlwatch: negative option in %+v", opts)
	}
	opts.Every = cmp.Or(opts.Every, DefaultEvery)
	opts.Timeout = cmp.Or(opts.Timeout, DefaultTimeout)
	opts.Failures = cmp.Or(opts.Failures, DefaultFailures)
	opts.ConnectTimeout = cmp.Or(opts.ConnectTimeout, max(opts.Timeout, cfg.Timeout))
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	w := &Watch{opts: opts, conns: map[*conn]struct{}{}}
	dial := cfg.DialFunc
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	w.probe = cfg.Clone()
	w.probe.DialFunc = dial
	w.probe.Params = maps.Clone(cfg.Params)
	if w.probe.Params == nil {
		w.probe.Params = map[string]string{}
	}
	for _, v := range []string{"innodb_lock_wait_timeout", "lock_wait_timeout"} {
		w.probe.Params[v] = strconv.Itoa(int(writeLockWait / time.Second))
	}
	w.cfg = cfg.Clone()
	w.cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return w.dial(ctx, dial, network, addr)
	}
	return w, nil
}

// Connector returns a connector whose connections the Watch closes and refuses while
// the server is down (for sql.OpenDB).
func (w *Watch) Connector() (driver.Connector, error) { return mysql.NewConnector(w.cfg) }

// Up reports whether the server answered the last probes (true until Run finds otherwise).
func (w *Watch) Up() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.down
}

// Writable returns nil while the server takes writes, as far as the write probe found,
// and otherwise an *errcode.UnavailableError for the caller to answer its writes with
// (ErrWritesBlocked, and the server's answer to the probe). Always nil without
// Options.WriteProbe.
func (w *Watch) Writable() error {
	if b := w.blocked.Load(); b != nil {
		return b
	}
	return nil
}

// unavailable is the error of a connection refused or cut off while the server is down.
func unavailable() error {
	return &errcode.UnavailableError{Dependency: "mysql", RetryAfter: time.Second, Err: ErrDown}
}

// dial dials through dial unless the server is down, and tracks the connection.
func (w *Watch) dial(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), network, addr string) (net.Conn, error) {
	if !w.Up() {
		return nil, unavailable()
	}
	nc, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, w: w}
	w.mu.Lock()
	if w.down { // went down while dialing: the sweep did not see this one
		w.mu.Unlock()
		nc.Close()
		return nil, unavailable()
	}
	w.conns[c] = struct{}{}
	w.mu.Unlock()
	return c, nil
}

// Run probes the server until ctx ends, and returns nil then.
func (w *Watch) Run(ctx context.Context) error {
	var p prober
	defer p.close()
	t := time.NewTicker(w.opts.Every)
	defer t.Stop()
	for {
		w.step(ctx, &p)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// prober is Run's state between probes.
type prober struct {
	conn   driver.Conn // nil until connected, and after a failure
	since  time.Time   // when conn was made
	missed int         // probes unanswered in a row
	// probeFailed: the last write probe was answered with an error that is no verdict
	// (logged once).
	probeFailed bool
}

// close closes p's connection, if any, leaving p without one.
func (p *prober) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// step probes once and records the answer.
func (w *Watch) step(ctx context.Context, p *prober) {
	if p.conn != nil && w.opts.MaxConnAge > 0 && time.Since(p.since) >= w.opts.MaxConnAge {
		p.close() // renewed, as a pool renews its connections
	}
	var err error
	if p.conn, err = w.ping(ctx, p); ctx.Err() != nil {
		return // Run is ending: no answer to take
	}
	var answered *mysql.MySQLError
	switch {
	case err == nil || errors.As(err, &answered):
		p.missed = 0
		w.set(true, nil)
		if err == nil && w.opts.WriteProbe != "" {
			w.probeWrites(ctx, p)
		}
	default:
		if p.missed++; p.missed >= w.opts.Failures {
			w.set(false, err)
		}
	}
}

// ping pings on p's connection, connecting first (given ConnectTimeout) if it has none.
// It returns the connection to ping on next time: nil after a failure, since a
// connection that failed is not to be trusted.
func (w *Watch) ping(ctx context.Context, p *prober) (driver.Conn, error) {
	c := p.conn
	if c == nil {
		var err error
		if c, err = w.connect(ctx); err != nil {
			return nil, err
		}
		p.since = time.Now()
	}
	ctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	if err := c.(driver.Pinger).Ping(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// probeWrites runs the write probe on p's connection and records its verdict. A probe
// that got no answer in time, or found writes blocked, leaves p without a connection.
func (w *Watch) probeWrites(ctx context.Context, p *prober) {
	pctx, cancel := context.WithTimeout(ctx, w.opts.Timeout+writeLockWait)
	defer cancel()
	_, err := p.conn.(driver.ExecerContext).ExecContext(pctx, w.opts.WriteProbe, nil)
	var answered *mysql.MySQLError
	switch {
	case ctx.Err() != nil:
	case err == nil:
		w.setWritable(nil)
	case errors.As(err, &answered) && (sqlutil.IsLockWaitTimeout(err) || depfail.Is(err)):
		w.setWritable(&errcode.UnavailableError{Dependency: "mysql", RetryAfter: time.Second,
			Err: fmt.Errorf("%w: %w", ErrWritesBlocked, err)})
		// The verdict of the server this connection reached: after a switchover behind the
		// address (the old primary demoted to read_only, still answering), the next probe
		// asks on a new connection, as the pool's new connections go, the server the
		// address names now.
		p.close()
	case errors.As(err, &answered):
		if !p.probeFailed { // once, not every probe
			w.opts.Log.Warn("mysql write probe failed; no verdict on writes", "err", err)
		}
		p.probeFailed = true
		return
	default: // no answer in time: the server may still be running it
		p.close()
	}
	p.probeFailed = false
}

// setWritable records the write probe's verdict: nil, or the error to answer writes with.
func (w *Watch) setWritable(blocked *errcode.UnavailableError) {
	if was := w.blocked.Swap(blocked); (was == nil) == (blocked == nil) {
		return
	}
	if blocked == nil {
		w.opts.Log.Info("mysql takes writes again")
	} else {
		w.opts.Log.Warn("mysql is not taking writes; writes refused until it does", "err", blocked)
	}
	if w.opts.OnWritable != nil {
		w.opts.OnWritable(blocked == nil)
	}
}

// connect makes the probe's connection, given ConnectTimeout.
func (w *Watch) connect(ctx context.Context) (driver.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.ConnectTimeout)
	defer cancel()
	connector, err := mysql.NewConnector(w.probe)
	if err != nil {
		return nil, err
	}
	return connector.Connect(ctx)
}

// set records the server as up or down (after err); going down closes every tracked
// connection.
func (w *Watch) set(up bool, err error) {
	w.mu.Lock()
	if w.down == !up {
		w.mu.Unlock()
		return
	}
	w.down = !up
	var cut []*conn
	if !up {
		for c := range w.conns {
			cut = append(cut, c)
		}
		clear(w.conns)
	}
	w.mu.Unlock()
	for _, c := range cut {
		c.Conn.Close()
	}
	if up {
		w.opts.Log.Info("mysql answers again; connections allowed")
	} else {
		w.opts.Log.Warn("mysql is not answering; refusing connections until it does",
			"probes", w.opts.Failures, "timeout", w.opts.Timeout.String(), "connect_timeout", w.opts.ConnectTimeout.String(), "closed", len(cut), "err", err)
	}
	if w.opts.OnChange != nil {
		w.opts.OnChange(up)
	}
}

// conn is a connection of the Connector: closing it forgets it.
type conn struct {
	net.Conn
	w *Watch
}

func (c *conn) Close() error {
	c.w.mu.Lock()
	delete(c.w.conns, c)
	c.w.mu.Unlock()
	return c.Conn.Close()
}

// SyscallConn exposes the socket to the driver's liveness check of a pooled connection
// (mysql.Config.CheckConnLiveness), which it skips for a net.Conn without one.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("mysqlwatch: %T has no raw connection", c.Conn)
	}
	return sc.SyscallConn()
}
