package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func small() config {
	return config{secret: server.DevJWTSecret, buyers: 200, units: 20, clients: 20, price: 30_000, points: 1_000,
		discount: 2_000, runID: "t"}
}

// TestEmbeddedSale runs the driver as `go run ./examples/flashsale` does, smaller.
func TestEmbeddedSale(t *testing.T) {
	var out strings.Builder
	ok, err := run(t.Context(), small(), &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	assert.True(t, ok)
	for _, line := range []string{"ok   every buyer answered: 20 placed and 20 paid, 180 refused as sold out",
		"ok   no oversell: sold 20 of 20, reserved 0, available 0", "ok   coupons conserved", "ok   points conserved",
		"ok   sold = paid orders", "ok   audit"} {
		assert.Contains(t, out.String(), line)
	}
}

// TestChecksCatchViolations: the checks fail when the end state is wrong. Between the race
// and the checks, an admin puts units back on the shelf and gives a loser points.
func TestChecksCatchViolations(t *testing.T) {
	c := small()
	url, stop, err := startLocal(t.Context(), c)
	require.NoError(t, err)
	defer stop()
	c.url = url
	d, err := newDriver(c)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, d.setup(ctx))
	require.NoError(t, d.each(ctx, d.prepare))
	require.NoError(t, d.each(ctx, d.race))

	_, err = d.call(ctx, d.admin, "PUT", "/v1/products/"+d.product+"/stock", "", server.SetStockJSON{OnHand: 5}, http.StatusOK, nil)
	require.NoError(t, err)
	var loser *buyer
	for _, b := range d.buyers {
		if b.order.Status != "PAID" {
			loser = b
			break
		}
	}
	require.NotNil(t, loser)
	_, err = d.call(ctx, loser.token, "POST", "/v1/points/top-ups", "extra", server.TopUpRequestJSON{Amount: 10, Method: "CARD"}, http.StatusCreated, nil)
	require.NoError(t, err)

	rep := &report{buyers: d.buyers}
	require.NoError(t, d.verify(ctx, rep))
	assert.False(t, rep.ok())
	failed := map[string]bool{}
	for _, ch := range rep.checks {
		failed[ch.name] = !ch.ok
	}
	assert.True(t, failed["no oversell"])
	assert.True(t, failed["points conserved"])
	assert.False(t, failed["coupons conserved"])
}

// TestFullModeSale is the sale in full mode: MySQL and Redis (containers), a Kafka-protocol
// broker (in-process kfake), the PG simulator over HTTP. It prints the figures:
//
//	go test -run TestFullModeSale -v ./examples/flashsale
func TestFullModeSale(t *testing.T) {
	cfg := server.Defaults()
	cfg.JWTSecret, cfg.WebhookSecret, cfg.SeedDemo = "full-mode-test-jwt-secret-0123456789abcdef", "full-mode-test-webhook-secret-0123456789ab", false
	cfg.DBDriver, cfg.DBDSN = server.DriverMySQL, testenv.MySQLDSN(t)
	rdb := testenv.Redis(t)
	cfg.RedisAddr, cfg.RedisDB = rdb.Options().Addr, rdb.Options().DB
	k := testenv.NewKafka(t)
	cfg.KafkaBrokers = k.Brokers
	sim := testkit.Must(pgsim.New())(t)
	pg := httptest.NewServer(pgsim.NewHandler(sim))
	defer func() { pg.Close(); sim.Close() }()
	cfg.PGSimURL = pg.URL

	srv, err := server.New(t.Context(), cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	c := config{url: "http://" + ln.Addr().String(), secret: cfg.JWTSecret, buyers: 2000, units: 100, clients: 100,
		price: 30_000, points: 1_000, discount: 2_000, runID: "full"}
	var out strings.Builder
	ok, err := run(t.Context(), c, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	assert.True(t, ok)
	assert.Equal(t, 100+2000, sim.Stats().Charges, "100 orders and 2,000 top-ups, each charged once")
}

// TestSendRetriesBusyAnswers: a 503 with Retry-After (a dependency busy or down) and a 409
// with Retry-After (request_in_progress: the same key's first request still runs) are sent
// again with the same key, up to maxRetries times; a 503 without Retry-After, and any other
// answer, is returned as is.
func TestSendRetriesBusyAnswers(t *testing.T) {
	var calls, keyless int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.Header.Get(server.IdempotencyKeyHeader) != "k" {
			keyless++
		}
		switch {
		case r.URL.Path == "/no-hint":
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/in-progress" && calls < 3:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusConflict)
		case r.URL.Path == "/conflict":
			w.WriteHeader(http.StatusConflict)
		case r.URL.Path == "/busy" || calls < 3:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer srv.Close()
	d := &driver{c: config{url: srv.URL}, hc: srv.Client()}
	for _, c := range []struct {
		path        string
		status      int
		calls, sent int
	}{{"/ok", http.StatusCreated, 3, 2}, {"/busy", http.StatusServiceUnavailable, 1 + maxRetries, maxRetries}, {"/no-hint", http.StatusServiceUnavailable, 1, 0},
		{"/in-progress", http.StatusCreated, 3, 2}, {"/conflict", http.StatusConflict, 1, 0}} {
		calls = 0
		before := d.retried.Load()
		status, _, err := d.send(t.Context(), "tok", "POST", c.path, "k", []byte("{}"))
		require.NoError(t, err)
		assert.Equal(t, c.status, status, c.path)
		assert.Equal(t, c.calls, calls, c.path)
		assert.EqualValues(t, c.sent, d.retried.Load()-before, c.path)
	}
	assert.Zero(t, keyless, "every attempt carries the idempotency key")
}

// TestStartLocalFailsWithAnError: a server that cannot start is an error, its cleanups run
// (this panicked once: the failing return had set stop to nil before the deferred cleanup).
func TestStartLocalFailsWithAnError(t *testing.T) {
	c := small()
	c.db = filepath.Join(t.TempDir(), "missing", "refserver.db")
	_, stop, err := startLocal(t.Context(), c)
	require.Error(t, err)
	assert.Nil(t, stop)
}
