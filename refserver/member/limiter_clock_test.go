package member

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/testenv"
)

// replyLoss makes a Redis client lose the reply of one command: the command reaches Redis
// and runs, its reply is read off the connection and dropped, between runs, and the client
// sees the connection end (io.EOF), so that it sends the command again on a new
// connection, as go-redis does after a lost reply.
type replyLoss struct {
	mu      sync.Mutex
	match   func(cmd []byte) bool // the command to lose the reply of; nil: none (any more)
	between func()                // runs after Redis answered the command, before the loss
	sent    int                   // commands match accepted, sent on any connection
}

// dialer returns a Dialer for redis.Options whose connections lose the reply match picks.
func (l *replyLoss) dialer(addr string) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &lossyConn{Conn: c, l: l}, nil
	}
}

// arm makes the next command match accepts lose its reply; later ones it accepts are
// counted only.
func (l *replyLoss) arm(match func([]byte) bool, between func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.match, l.between, l.sent = match, between, 0
}

type lossyConn struct {
	net.Conn
	l       *replyLoss
	between func() // not nil: the reply of the command written last is to be lost
}

func (c *lossyConn) Write(b []byte) (int, error) {
	c.l.mu.Lock()
	if c.l.match != nil && c.l.match(b) {
		c.l.sent++
		c.between, c.l.between = c.l.between, nil
	}
	c.l.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *lossyConn) Read(b []byte) (int, error) {
	if c.between == nil {
		return c.Conn.Read(b)
	}
	// Redis answers an integer (one line): once it has come, the command has run.
	var reply []byte
	for !bytes.Contains(reply, []byte("\r\n")) {
		n, err := c.Conn.Read(b)
		if err != nil {
			return 0, err
		}
		reply = append(reply, b[:n]...)
	}
	c.between()
	c.between = nil
	_ = c.Conn.Close()
	return 0, io.EOF
}

// TestRedisLimiterClocksApart: instances sharing a RedisLimiter whose clocks are far apart
// still share one bucket per key that counts each call once and refills with time, not with
// a caller's clock. An instance an hour ahead does not forget the calls another instance
// remembers for its resend window (a resend after a lost reply, with the other instance's
// call in between, counts once), does not refill a bucket the others emptied, and does not
// make the others keep a bucket longer than its refill.
func TestRedisLimiterClocksApart(t *testing.T) {
	rdb := testenv.Redis(t)
	if err := bucketScript.Load(ctx, rdb).Err(); err != nil { // a lost reply is the take's, not NOSCRIPT
		t.Fatal(err)
	}
	const resend = 7 * time.Second // refserver's window
	var loss replyLoss
	opts := rdb.Options()
	lossy := redis.NewClient(&redis.Options{Addr: opts.Addr, DB: opts.DB, Dialer: loss.dialer(opts.Addr)})
	t.Cleanup(func() { _ = lossy.Close() })
	// behind and ahead are two instances sharing the buckets, ahead's clock an hour ahead.
	behind := NewRedisLimiter(lossy, WithResendWindow(resend))
	ahead := NewRedisLimiter(rdb, WithResendWindow(resend))
	now := time.Now()
	later := now.Add(time.Hour)
	// takes counts the takes behind is given before it is refused, up to burst+1.
	takes := func(t *testing.T, key string, burst int, window time.Duration) int {
		t.Helper()
		for n := range burst + 1 {
			wait, err := behind.Take(ctx, key, burst, window, now)
			if err != nil {
				t.Fatal(err)
			}
			if wait > 0 {
				return n
			}
		}
		return burst + 1
	}

	t.Run("resend after a call of an instance ahead", func(t *testing.T) {
		// 3 per 1000 hours: no token comes back during the test, nor for the hour of skew.
		const key, burst, window = "id bob", 3, 1000 * time.Hour
		loss.arm(func(cmd []byte) bool { return bytes.Contains(cmd, []byte(key)) && bytes.Contains(cmd, []byte("take")) }, func() {
			if wait, err := ahead.Take(ctx, key, burst, window, later); err != nil || wait != 0 {
				t.Errorf("ahead's take between: wait %v, %v", wait, err)
			}
		})
		if wait, err := behind.Take(ctx, key, burst, window, now); err != nil || wait != 0 {
			t.Fatalf("behind's take, its reply lost and resent: wait %v, %v", wait, err)
		}
		loss.mu.Lock()
		sent := loss.sent
		loss.mu.Unlock()
		loss.arm(nil, nil)
		if sent != 2 {
			t.Fatalf("behind's take was sent %d times, want 2 (the first, its reply lost, and the resend)", sent)
		}
		if n := takes(t, key, burst, window); n != 1 {
			t.Fatalf("after two takes of a budget of %d, %d more are given, want 1", burst, n)
		}
	})

	t.Run("an instance ahead refills nothing", func(t *testing.T) {
		const key, burst, window = "id carol", 3, time.Hour
		if n := takes(t, key, burst, window); n != burst {
			t.Fatalf("%d takes of a full budget of %d", n, burst)
		}
		if wait, err := ahead.Take(ctx, key, burst, window, later); err != nil || wait == 0 {
			t.Fatalf("ahead's take of the emptied bucket: wait %v, %v; want refused", wait, err)
		}
	})

	t.Run("an instance ahead makes no bucket live longer", func(t *testing.T) {
		const key, burst, window = "id dave", 3, time.Hour
		year := now.AddDate(1, 0, 0)
		if wait, err := ahead.Take(ctx, key, burst, window, year); err != nil || wait != 0 {
			t.Fatalf("ahead's take: wait %v, %v", wait, err)
		}
		if n := takes(t, key, burst, window); n != burst-1 {
			t.Fatalf("%d takes after one of %d, want %d", n, burst, burst-1)
		}
		// The bucket is empty: it refills in an hour, and its calls are forgotten in 7 s.
		ttl, err := rdb.PTTL(ctx, "commercekit:login:"+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > window {
			t.Fatalf("the bucket's key lives %v more, want at most %v (its refill)", ttl, window)
		}
	})
}
