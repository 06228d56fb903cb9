package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// testServer is a Server with the HTTP machinery only (no backends), serving a few test
// routes plus the operations routes that need none.
func testServer() *Server {
	s := &Server{cfg: Defaults(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	s.cfg.MaxBodyBytes = 1024
	s.auth = newAuthenticator([]byte("0123456789abcdef"), time.Now)
	s.limiter = newLimiter(0, 1, DefaultRateLimitRedisTimeout, time.Now, nil)
	s.metrics = newMetrics(s.code)
	mux := http.NewServeMux()
	for _, rt := range []Route{
		{Method: http.MethodGet, Path: "/panic", Handler: func(http.ResponseWriter, *http.Request) { panic("boom") }},
		{Method: http.MethodPost, Path: "/echo", Handler: func(w http.ResponseWriter, r *http.Request) {
			var v map[string]any
			if err := decode(r, &v); err != nil {
				s.writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		}},
		{Method: http.MethodGet, Path: "/slow", Handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // the per-request deadline ends it
			s.writeError(w, r, r.Context().Err())
		}},
		{Method: http.MethodGet, Path: "/openapi.json", Handler: s.handleOpenAPI},
	} {
		mux.Handle(rt.Pattern(), s.route(rt))
	}
	s.handler = s.outer(mux)
	return s
}

func serve(s *Server, method, path string, body io.Reader, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, body)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, r)
	return rec
}

func problemOf(t *testing.T, rec *httptest.ResponseRecorder) Problem {
	t.Helper()
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), rec.Body.String())
	var p Problem
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	assert.Equal(t, rec.Code, p.Status)
	assert.Equal(t, ProblemTypePrefix+p.Code, p.Type)
	return p
}

func TestRecoverAnswersProblem(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodGet, "/panic", nil)
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	p := problemOf(t, rec)
	assert.Equal(t, "internal", p.Code)
	assert.NotEmpty(t, p.RequestID)
	assert.NotContains(t, rec.Body.String(), "boom", "the panic value is logged, not sent")
	assert.Contains(t, mustGather(t, s), `commercekit_http_request_duration_seconds_count{method="GET",route="GET /panic",status="500"} 1`)
}

func TestUnmatchedRoutesAnswerProblems(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodGet, "/nowhere", nil)
	assert.Equal(t, http.StatusNotFound, rec.Code)
	assert.Equal(t, "not_found", problemOf(t, rec).Code)

	rec = serve(s, http.MethodDelete, "/echo", nil)
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	assert.Equal(t, "method_not_allowed", problemOf(t, rec).Code)
	assert.Equal(t, "POST", rec.Header().Get("Allow"))
	assert.Contains(t, mustGather(t, s), `route="unmatched"`)
}

func TestRequestID(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodPost, "/echo", strings.NewReader(`{"a":1}`), RequestIDHeader, "client-id-42")
	assert.Equal(t, "client-id-42", rec.Header().Get(RequestIDHeader), "a valid client ID is kept")
	rec = serve(s, http.MethodPost, "/echo", strings.NewReader(`{"a":1}`), RequestIDHeader, "bad id with spaces")
	assert.Len(t, rec.Header().Get(RequestIDHeader), 32, "an invalid one is replaced")
}

func TestBodyLimitAndMalformedInput(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodPost, "/echo", strings.NewReader(`{"a":"`+strings.Repeat("x", 2000)+`"}`))
	assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	assert.Equal(t, "body_too_large", problemOf(t, rec).Code)

	for _, body := range []string{``, `{`, `[1]`, `{"a":1}{"b":2}`} {
		rec = serve(s, http.MethodPost, "/echo", strings.NewReader(body))
		assert.Equal(t, http.StatusBadRequest, rec.Code, body)
		assert.Equal(t, "malformed_request", problemOf(t, rec).Code, body)
	}
}

func TestRequestDeadline(t *testing.T) {
	s := testServer()
	s.cfg.RequestTimeout = 50 * time.Millisecond
	rec := serve(s, http.MethodGet, "/slow", nil)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	p := problemOf(t, rec)
	assert.Equal(t, "timeout", p.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
}

func mustGather(t *testing.T, s *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.metrics.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// TestLimiter: the write rate's token buckets, in the process and in Redis. Two instances
// sharing a Redis share each user's budget; with Redis unreachable each limits alone, and
// with Redis paused a write waits for it at most once per cool-down (counted, not timed).
func TestLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	const patient = 5 * time.Second // a deadline for Redis that no Redis answering misses
	check := func(t *testing.T, l *limiter, user string) {
		for i := range 3 {
			ok, _ := l.allow(context.Background(), user)
			assert.True(t, ok, "burst token %d", i)
		}
		ok, retry := l.allow(context.Background(), user)
		assert.False(t, ok)
		assert.Equal(t, 1, retry)
		ok, _ = l.allow(context.Background(), user+"-other")
		assert.True(t, ok, "buckets are per user")

		now = now.Add(500 * time.Millisecond) // one token back
		ok, _ = l.allow(context.Background(), user)
		assert.True(t, ok)
		ok, _ = l.allow(context.Background(), user)
		assert.False(t, ok)
	}
	t.Run("memory", func(t *testing.T) { check(t, newLimiter(2, 3, patient, clock, nil), "a") }) // 2/s, burst 3

	rdb := testenv.Redis(t)
	// The buckets in Redis keep Redis's clock unless given the test's (as a server given
	// WithClock does): member's TestRedisLimiterClocksApart runs them on Redis's.
	onClock := member.WithLimiterClock(clock)
	t.Run("redis", func(t *testing.T) {
		one, other := newLimiter(2, 3, patient, clock, rdb, onClock), newLimiter(2, 3, patient, clock, rdb, onClock)
		check(t, one, "b")
		ok, _ := other.allow(context.Background(), "b")
		assert.False(t, ok, "another instance sees the user's budget spent")
		n, err := rdb.Exists(context.Background(), writeLimitPrefix+"b").Result()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n)
	})
	t.Run("redis unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close()) // nothing listens there: every call is refused
		down := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		t.Cleanup(func() { _ = down.Close() })
		check(t, newLimiter(2, 3, patient, clock, down), "c")
	})
	t.Run("redis paused mid-flight", func(t *testing.T) {
		ctx := context.Background()
		own := testenv.OwnRedis(t)
		// A client that waits for Redis far longer than the limiter does, as the server's
		// does (its read timeout, and once more).
		slow := redis.NewClient(&redis.Options{Addr: own.Addr, ReadTimeout: 2 * time.Second, MaxRetries: -1})
		t.Cleanup(func() { _ = slow.Close() })
		// The limiter waits 1 s: far below the client, and yet a deadline that a Redis
		// answering again does not miss on a loaded machine. 1/s, burst 10.
		l := newLimiter(1, 10, time.Second, clock, slow, onClock)
		counts := func(l *limiter) [3]int64 {
			return [3]int64{l.stats.asked.Load(), l.stats.unanswered.Load(), l.stats.local.Load()}
		}
		ok, _ := l.allow(ctx, "d") // one token taken in Redis
		require.True(t, ok)
		require.Equal(t, [3]int64{1, 0, 0}, counts(l))

		own.Pause(t)
		// Ten writes within one cool-down: the first asks the frozen Redis and gives up
		// after the limiter's deadline, the others do not ask it at all. Each takes a token
		// of this process's own bucket, which starts full: the user keeps a budget, bounded
		// by the burst.
		for i := range 10 {
			ok, _ := l.allow(ctx, "d")
			assert.True(t, ok, "local token %d", i)
		}
		assert.Equal(t, [3]int64{2, 1, 10}, counts(l), "asked, unanswered, local")
		ok, retry := l.allow(ctx, "d")
		assert.False(t, ok, "the burst is spent")
		assert.Equal(t, 1, retry)
		assert.Equal(t, [3]int64{2, 1, 11}, counts(l))

		// Past the cool-down (the call given up on has ended by now) one call asks Redis
		// again. Still frozen: it falls back as well, and the next cool-down begins.
		l.settle()
		now = now.Add(rateLimitCooldown) // one token back
		for i := range 3 {
			ok, _ := l.allow(ctx, "d")
			assert.Equal(t, i == 0, ok, "call %d", i)
		}
		assert.Equal(t, [3]int64{3, 2, 14}, counts(l))

		// No probe while a call given up on is still running (this client would wait a
		// minute): calls do not pile up on a hung Redis.
		hung := redis.NewClient(&redis.Options{Addr: own.Addr, ReadTimeout: time.Minute, MaxRetries: -1})
		t.Cleanup(func() { _ = hung.Close() })
		hungNow := now
		h := newLimiter(1, 10, DefaultRateLimitRedisTimeout, func() time.Time { return hungNow }, hung)
		ok, _ = h.allow(ctx, "h")
		assert.True(t, ok)
		hungNow = hungNow.Add(10 * rateLimitCooldown)
		for range 3 {
			ok, _ = h.allow(ctx, "h")
			assert.True(t, ok)
		}
		assert.Equal(t, [3]int64{1, 1, 4}, counts(h), "cool-downs over, the first call still running")
		require.NoError(t, hung.Close()) // ends the call
		h.settle()
		ok, _ = h.allow(ctx, "h") // a probe again: the closed client fails it at once
		assert.True(t, ok)
		assert.Equal(t, [3]int64{2, 2, 5}, counts(h))

		own.Unpause(t)
		// Redis answers again, but nothing asks it before the cool-down has passed.
		ok, _ = l.allow(ctx, "d")
		assert.False(t, ok)
		assert.Equal(t, [3]int64{3, 2, 15}, counts(l))
		// Once it has, a call asks Redis again; one that gets its answer in time hands the
		// limiting back to the shared buckets. (Each try waits for the previous one to
		// end, and a fresh connection may miss the deadline on a loaded machine.)
		for try := 0; ; try++ {
			require.Less(t, try, 10, "Redis never answered in time again")
			l.settle()
			now = now.Add(rateLimitCooldown)
			before := counts(l)
			_, _ = l.allow(ctx, "probe")
			if after := counts(l); after[1] == before[1] {
				require.Equal(t, [3]int64{before[0] + 1, before[1], before[2]}, after)
				break
			}
		}
		// The shared bucket is used again: every call asks Redis, and an instance that went
		// through none of this sees the budget the first one spent.
		before := counts(l)
		for i := range 10 {
			ok, _ := l.allow(ctx, "e")
			assert.True(t, ok, "shared token %d", i)
		}
		assert.Equal(t, [3]int64{before[0] + 10, before[1], before[2]}, counts(l))
		other := newLimiter(1, 10, time.Second, clock, slow, onClock)
		ok, retry = other.allow(ctx, "e")
		assert.False(t, ok, "the other instance sees the budget spent")
		assert.Equal(t, 1, retry)
		assert.Equal(t, [3]int64{1, 0, 0}, counts(other))
		n, err := slow.Exists(ctx, writeLimitPrefix+"e").Result()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n)
	})

	t.Run("one probe at a time", func(t *testing.T) {
		ctx := context.Background()
		shared := &gatedLimiter{entered: make(chan struct{}, 20), release: make(chan struct{})}
		l := newLimiter(1, 100, time.Minute, clock, nil)
		l.shared = shared
		counts := [3]*atomic.Int64{&l.stats.asked, &l.stats.unanswered, &l.stats.local}
		load := func() [3]int64 { return [3]int64{counts[0].Load(), counts[1].Load(), counts[2].Load()} }
		ok, _ := l.allow(ctx, "g") // the shared limiter fails: a cool-down begins
		require.True(t, ok)
		require.Equal(t, [3]int64{1, 1, 1}, load())

		now = now.Add(rateLimitCooldown)
		const writers = 20
		returned := make(chan bool, writers)
		for range writers {
			go func() {
				ok, _ := l.allow(ctx, "g")
				returned <- ok
			}()
		}
		<-shared.entered // one write probes, and waits for the answer
		for range writers - 1 {
			assert.True(t, <-returned) // the others do not ask
		}
		assert.Equal(t, int64(2), shared.calls.Load())
		assert.Equal(t, [3]int64{2, 1, writers}, load())
		close(shared.release) // the probe is answered: the shared limiter limits again
		assert.True(t, <-returned)
		assert.Equal(t, [3]int64{2, 1, writers}, load())
		ok, _ = l.allow(ctx, "g")
		assert.True(t, ok)
		assert.Equal(t, [3]int64{3, 1, writers}, load())
		assert.Equal(t, int64(3), shared.calls.Load())
		l.settle()
	})

	off := newLimiter(0, 1, patient, time.Now, rdb)
	for range 100 {
		ok, _ := off.allow(context.Background(), "a")
		assert.True(t, ok, "rate 0 disables the limiter")
	}
}

// gatedLimiter is a shared limiter that fails its first call at once and holds every
// later one until release is closed (each tells entered it has begun), then answers it.
type gatedLimiter struct {
	calls   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func (g *gatedLimiter) Take(context.Context, string, int, time.Duration, time.Time) (time.Duration, error) {
	if g.calls.Add(1) == 1 {
		return 0, errors.New("gated: down")
	}
	g.entered <- struct{}{}
	<-g.release
	return 0, nil
}

func (g *gatedLimiter) Refund(context.Context, string, int, time.Duration, time.Time) error {
	return nil
}

func (g *gatedLimiter) Reset(context.Context, string) error { return nil }

// TestBodyCutOffIsTheClients: a client whose request body ends before its Content-Length
// (it went away or its connection broke mid-upload) gets 400 malformed_request on the
// routes that read the raw body (the Idempotency-Key middleware, the PG webhook). A cut
// body is the client's failure, not a dependency's: it must not be answered and counted
// as 503 dependency_unavailable (which pages whoever watches the backends).
func TestBodyCutOffIsTheClients(t *testing.T) {
	s := testServer()
	ran := false
	srv := httptest.NewServer(s.outer(s.idempotent(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))))
	defer srv.Close()
	webhook := httptest.NewServer(s.outer(http.HandlerFunc(s.paymentWebhook)))
	defer webhook.Close()

	for name, url := range map[string]string{"idempotent route": srv.URL, "webhook": webhook.URL} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", url[len("http://"):])
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("POST /v1/orders HTTP/1.1\r\nHost: test\r\nIdempotency-Key: k1\r\n" +
				"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"lines\":"))
			require.NoError(t, err)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // the body stops 91 bytes short
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			defer resp.Body.Close()
			var p Problem
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%+v", p)
			assert.Equal(t, "malformed_request", p.Code)
		})
	}
	assert.False(t, ran, "nothing ran")
}
