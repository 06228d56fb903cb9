package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/internal/depfail"
)

// Link is a TCP proxy between the code under test and its MySQL server that cuts a
// connection at a chosen statement (COM_QUERY, COMMIT included; or, for a Redis server,
// at a chosen command: see RedisLink): before the statement
// reaches the server, so that it never runs and the transaction it belongs to is rolled
// back (a crash of the server, or of the network, just before it), or once the server
// has answered it, so that it ran — a COMMIT has committed — and its answer is lost (a
// crash just after). The code under test meets a dropped connection either way.
type Link struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	match  func(query string) bool // nil: disarmed
	after  bool
	then   func()   // called at the cut, before the connection is dropped
	cut    []string // the statements cut since Arm
	seen   []string // the statements sent since Arm
}

// MySQLLink starts a Link to the MySQL server of dsn, closed when the test ends, and
// returns it with dsn through it.
func MySQLLink(tb testing.TB, dsn string) (*Link, string) {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatalf("testenv: parsing the DSN to link: %v", err)
	}
	l := &Link{target: cfg.Addr}
	l.ln = ProxyListener(tb, func(c net.Conn) { Proxy(c, l.target, MySQLPacket, l.decide) })
	cfg.Addr = l.ln.Addr().String()
	return l, cfg.FormatDSN()
}

// RedisLink starts a Link to the Redis server at addr, closed when the test ends, and
// returns it with the address through it. Its statements are the commands the clients
// send (RedisCommand's text: "evalsha <sha> 3 key ..."); a cut after a command drops the
// connection at the first answer the server sends once the command was passed on, so a
// command cut after must not be sent in a pipeline behind others still unanswered.
func RedisLink(tb testing.TB, addr string) (*Link, string) {
	tb.Helper()
	l := &Link{target: addr}
	l.ln = ProxyListener(tb, func(c net.Conn) { Proxy(c, l.target, RedisCommand, l.decide) })
	return l, l.ln.Addr().String()
}

// LinkedRedis returns a client on a Redis logical database of the test's own (see Redis)
// twice: rdb connects directly, for setting up and checking, and linked through the
// returned Link, for the code under test. linked sends a command once (MaxRetries -1: a
// client whose retries all failed), so that the code under test meets each cut.
func LinkedRedis(tb testing.TB) (rdb, linked *redis.Client, l *Link) {
	tb.Helper()
	rdb = Redis(tb)
	opts := rdb.Options()
	l, addr := RedisLink(tb, opts.Addr)
	linked = redis.NewClient(&redis.Options{Addr: addr, DB: opts.DB, MaxRetries: -1})
	linked.AddHook(ownDatabaseOnly{})
	tb.Cleanup(func() { linked.Close() })
	return rdb, linked, l
}

// ProxyListener listens on loopback and serves each connection it accepts with serve, on a
// goroutine of its own, until the test ends (then it waits for them).
func ProxyListener(tb testing.TB, serve func(net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: listening for a proxy: %v", err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serve(c) })
		}
	})
	return ln
}

// LinkedMySQL returns a fresh database of the package's MySQL server (see MySQL) twice: db
// connects directly, for setting up and checking, and linked through the returned Link,
// for the code under test.
func LinkedMySQL(tb testing.TB) (db, linked *bun.DB, l *Link) {
	tb.Helper()
	return LinkedMySQLAt(tb, MySQLDSN(tb))
}

// LinkedMySQLAt is LinkedMySQL on the database of dsn (one of OwnMySQL, say, for a test
// that crashes the server at the cut: see ArmThen).
func LinkedMySQLAt(tb testing.TB, dsn string) (db, linked *bun.DB, l *Link) {
	tb.Helper()
	l, ldsn := MySQLLink(tb, dsn)
	db = bun.NewDB(openMySQL(tb, dsn), mysqldialect.New())
	linked = bun.NewDB(openMySQL(tb, ldsn), mysqldialect.New())
	tb.Cleanup(func() { linked.Close(); db.Close() })
	return db, linked, l
}

// Arm makes the link cut the connection of the first statement match accepts from now on
// (nil: none, only recording what is sent): before the statement reaches the server, or,
// after, once the server has answered it. It forgets the statements seen and cut before.
func (l *Link) Arm(match func(query string) bool, after bool) { l.ArmThen(match, after, nil) }

// ArmThen is Arm calling then (if not nil) at the cut, before the connection is dropped
// and while the code under test still waits for its answer: to crash the server there
// (Own.Stop), say.
func (l *Link) ArmThen(match func(query string) bool, after bool, then func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.match, l.after, l.then, l.cut, l.seen = match, after, then, nil, nil
}

// Crash runs call with the link armed to kill server (Stop with no grace: a SIGKILL) at the
// statement match accepts, before it reaches the server or once the server answered it,
// and checks what a crash leaves the caller: exactly that statement cut, and call failing
// as the database being unavailable; then, unless again is nil, again (the caller's retry,
// a redelivery) failing the same way while the server is down. It returns the statement
// cut, with the server down: the test starts it again (server.Start) to check recovery.
func (l *Link) Crash(tb testing.TB, server *Own, match func(query string) bool, after bool, call, again func() error) string {
	tb.Helper()
	stopped := make(chan struct{})
	l.ArmThen(match, after, func() { server.Stop(tb, 0); close(stopped) })
	err := call()
	cut, _ := l.Disarm()
	if len(cut) != 1 {
		tb.Fatalf("testenv: the crash cut %q, not one statement", cut)
	}
	if err == nil || !depfail.Is(err) {
		tb.Fatalf("testenv: the call crashed at %q answered %v, not the database being unavailable", cut[0], err)
	}
	<-stopped
	if again != nil {
		if err := again(); err == nil || !depfail.Is(err) {
			tb.Fatalf("testenv: the call again while the server is down answered %v, not the database being unavailable", err)
		}
	}
	return cut[0]
}

// Disarm stops cutting and returns the statements cut and those sent since Arm.
func (l *Link) Disarm() (cut, seen []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cut, seen = l.cut, l.seen
	l.match, l.then, l.cut, l.seen = nil, nil, nil, nil
	return cut, seen
}

// decide records query and says whether its connection is to be cut, and when.
func (l *Link) decide(query string) Cut {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, query)
	if l.match == nil || len(l.cut) > 0 || !l.match(query) {
		return Cut{}
	}
	l.cut = append(l.cut, query)
	return Cut{Before: !l.after, After: l.after, Then: l.then}
}

// Cut is what Proxy does with a statement: nothing (the zero Cut), or cut the connection,
// both ways, Before the statement reaches the server or After the server's first answer to
// it (so that it ran and its answer is lost), calling Then (when not nil) at the cut,
// while the client still waits.
type Cut struct {
	Before, After bool
	Then          func()
}

// Proxy copies one connection c to a new connection to target and back until either
// side closes it, reading what c sends statement by statement with frame (which returns a
// statement's bytes and its text, "" for what is no statement) and asking act what to do
// with each statement that has a text. act may block, to hold a statement back.
func Proxy(c net.Conn, target string, frame func(*bufio.Reader) ([]byte, string, error), act func(text string) Cut) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	var dropping atomic.Bool
	then := func() {} // set before dropping
	done := make(chan struct{})
	go func() { // the server to the client: cut at the first answer once dropping
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 && dropping.Load() {
				then()
				c.Close()
				s.Close()
				return
			}
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	in := bufio.NewReader(c)
	for {
		raw, text, err := frame(in)
		if err != nil {
			break
		}
		if text != "" {
			cut := act(text)
			if cut.Before {
				if cut.Then != nil {
					cut.Then()
				}
				c.Close()
				s.Close()
				break
			}
			if cut.After {
				if cut.Then != nil {
					then = cut.Then
				}
				dropping.Store(true)
			}
		}
		if _, err := s.Write(raw); err != nil {
			break
		}
		if dropping.Load() {
			break
		}
	}
	if !dropping.Load() {
		s.Close()
	}
	<-done
}

// MySQLPacket reads a MySQL packet from r: 3 bytes of length, 1 of sequence, the payload.
// It returns the packet as read and, for a COM_QUERY (payload 0x03 and the statement's
// text), the statement (for proxies of tests that act on statements).
func MySQLPacket(r *bufio.Reader) ([]byte, string, error) {
	raw := make([]byte, 4)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, "", err
	}
	n := int(raw[0]) | int(raw[1])<<8 | int(raw[2])<<16
	raw = append(raw, make([]byte, n)...)
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		return nil, "", err
	}
	if n > 0 && raw[4] == 0x03 {
		return raw, string(raw[5:]), nil
	}
	return raw, "", nil
}

// RedisCommand reads one command a Redis client sends from r: an array of bulk strings
// (RESP, as every client library sends them). It returns the command as read and its
// arguments joined by spaces as its text; anything else (an inline command) is passed on
// line by line with no text.
func RedisCommand(r *bufio.Reader) ([]byte, string, error) {
	line, err := r.ReadSlice('\n')
	raw := append([]byte(nil), line...)
	if err != nil {
		return nil, "", err
	}
	n, ok := respLength(raw, '*')
	if !ok {
		return raw, "", nil
	}
	args := make([]string, 0, n)
	for range n {
		head, err := r.ReadSlice('\n')
		raw = append(raw, head...)
		if err != nil {
			return nil, "", err
		}
		size, ok := respLength(head, '$')
		if !ok {
			return nil, "", fmt.Errorf("testenv: a Redis command's argument starts %q, not a bulk string", head)
		}
		body := make([]byte, size+2) // and its CRLF
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, "", err
		}
		raw = append(raw, body...)
		args = append(args, string(body[:size]))
	}
	return raw, strings.Join(args, " "), nil
}

// respLength parses a RESP header line ("*3\r\n", "$5\r\n") of the given type.
func respLength(line []byte, kind byte) (int, bool) {
	s := strings.TrimRight(string(line), "\r\n")
	if len(s) < 2 || s[0] != kind {
		return 0, false
	}
	n, err := strconv.Atoi(s[1:])
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// Nth matches the n-th statement (from 1) that match accepts (nil: any) after it is made.
func Nth(n int, match func(query string) bool) func(query string) bool {
	var mu sync.Mutex
	seen := 0
	return func(q string) bool {
		if match != nil && !match(q) {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		return seen == n
	}
}

// IsCommit matches the COMMIT of a transaction.
func IsCommit(q string) bool { return strings.EqualFold(strings.TrimSpace(q), "COMMIT") }

// CutPoint is one place to cut a run at (see CutPoints): the N-th statement of those the
// sweep cuts at, before it reaches the server (After false) or once it was answered.
type CutPoint struct {
	N     int
	After bool
	only  func(query string) bool
}

// Match returns a fresh matcher of the point's statement, counting from now: arm a Link
// with it (Arm(p.Match(), p.After)).
func (p CutPoint) Match() func(query string) bool { return Nth(p.N, p.only) }

// String names the point, for a subtest: "after=false/3".
func (p CutPoint) String() string { return fmt.Sprintf("after=%t/%d", p.After, p.N) }

// CutPoints returns every point at which to cut a run that sends the statements a clean
// run sent (Link.Disarm's seen): each of those only accepts (nil: every statement; IsCommit:
// each COMMIT), first before it reaches the server, then once answered. A sweep runs the
// call again cut at each point, recovers, and checks the exact end state.
func CutPoints(statements []string, only func(query string) bool) []CutPoint {
	n := 0
	for _, q := range statements {
		if only == nil || only(q) {
			n++
		}
	}
	var points []CutPoint
	for _, after := range []bool{false, true} {
		for k := 1; k <= n; k++ {
			points = append(points, CutPoint{N: k, After: after, only: only})
		}
	}
	return points
}
