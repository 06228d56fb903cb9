package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestGracefulShutdown: cancelling Serve's context lets a request in flight finish, then
// stops the listener, the background loops and the stores; Serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	cfg := baseConfig()
	cfg.DBDSN = filepath.Join(t.TempDir(), "refserver.db")
	cfg.PGSimLatency = 500 * time.Millisecond // a payment in flight when the signal comes
	srv, err := server.New(t.Context(), cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	a := &app{t: t, srv: srv, url: "http://" + ln.Addr().String(), hc: &http.Client{Timeout: time.Minute}}
	setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "k", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	done := make(chan resp, 1)
	go func() {
		r, err := a.try("POST", "/v1/orders/"+o.ID+"/pay", alice, "p", server.PayJSON{Method: "CARD"})
		if err != nil {
			r.Body = []byte(err.Error())
		}
		done <- r
	}()
	require.Eventually(t, func() bool { return srv.Simulator().InFlight() > 0 }, 30*time.Second, 20*time.Millisecond, "the payment to reach the PG")
	cancel()

	r := <-done
	assert.Equal(t, http.StatusOK, r.Status, "the request in flight drained: %s", r.Body)
	assert.Equal(t, "PAID", as[server.OrderJSON](t, r).Status)
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Serve did not return")
	}
	_, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	assert.Error(t, err, "the listener is closed")
	_, err = srv.Commerce().GetProduct(context.Background(), "p1")
	assert.True(t, err != nil && !errors.Is(err, context.Canceled), "the database is closed: %v", err)
}

// TestSeedDemo: the demo catalogue is created at the first start and left as it is (an
// admin's price change included) at the next.
func TestSeedDemo(t *testing.T) {
	cfg := baseConfig()
	cfg.DBDSN = filepath.Join(t.TempDir(), "refserver.db")
	cfg.SeedDemo = true
	srv1, err := server.New(t.Context(), cfg)
	require.NoError(t, err)
	ts := httptest.NewServer(srv1.Handler())
	a := &app{t: t, srv: srv1, url: ts.URL, hc: ts.Client()}
	page := as[server.ProductPageJSON](t, expect(t, a.call("GET", "/v1/products", "", "", nil), http.StatusOK))
	require.Len(t, page.Products, 3)
	expect(t, a.call("PUT", "/v1/products/kbd-001/price", token(t, "admin", true), "", server.PriceJSON{Price: 1}), http.StatusOK)
	ts.Close()
	srv1.Close()

	srv, err := server.New(t.Context(), cfg)
	require.NoError(t, err, "seeding again over changed data")
	defer srv.Close()
	p, err := srv.Commerce().GetProduct(t.Context(), "kbd-001")
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Price)
}

// TestNewRefusesBadOptions: an invalid option value fails New, naming the option, before
// anything is opened.
func TestNewRefusesBadOptions(t *testing.T) {
	cfg := baseConfig()
	cfg.DBDSN = filepath.Join(t.TempDir(), "refserver.db")
	testkit.RefusesBadOptions(t, func(opts ...server.Option) (*server.Server, error) {
		return server.New(t.Context(), cfg, opts...)
	}, map[string]server.Option{
		"WithLogger: nil": server.WithLogger(nil),
		"WithClock: nil":  server.WithClock(nil),
	})
	_, err := server.New(t.Context(), cfg, server.WithMemberOptions(member.WithCheckTimeout(0)))
	require.ErrorIs(t, err, errcode.ErrInvalidArgument, "a bad member option fails the start too")
	assert.Equal(t, "WithCheckTimeout", errcode.FieldOf(err))
}

// TestStartRefusesUnjournaledStock: a full-mode start over a Redis that holds stock its
// journal never recorded (a plain redisinventory Backend's, under the same prefix) fails
// with redisinventory.ErrUnjournaledData instead of wiping that stock, and leaves it as it
// was.
func TestStartRefusesUnjournaledStock(t *testing.T) {
	rdb := testenv.Redis(t)
	plain := testkit.Must(inventory.New(testkit.Must(redisinventory.New(rdb))(t)))(t)
	_, err := plain.SetStock(t.Context(), inventory.StockSetting{SKU: "p1", OnHand: 7})
	require.NoError(t, err)
	cfg, _, _ := fullConfig(t, testenv.MySQLDSN(t), rdb.Options().Addr, rdb.Options().DB)
	_, err = server.New(t.Context(), cfg)
	require.ErrorIs(t, err, redisinventory.ErrUnjournaledData)
	st, err := plain.Stock(t.Context(), "p1")
	require.NoError(t, err)
	assert.EqualValues(t, 7, st.Available)
}
