package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestRankings places and pays a few orders over HTTP and reads the rankings and a
// product's metrics, fed by the collector running in the server (off the in-process
// dispatcher embedded, as a Kafka consumer group in full mode), and checks that every paid
// order reached the data platform with its event ID.
func TestRankings(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			platform := platformsim.New()
			dp := httptest.NewServer(platform)
			t.Cleanup(dp.Close)
			a := start(t, b, func(c *server.Config) {
				c.RollupInterval = 20 * time.Millisecond
				c.DataPlatformURL = dp.URL + "/v1/orders"
			})
			admin := setup(t, a, "p1", 1000, 50)
			expect(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: "p2", Name: "Product p2", Price: 2000, Stock: 50}), http.StatusCreated)
			expect(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: "p0", Name: "Product p0", Price: 500, Stock: 50}), http.StatusCreated)
			var paid []string
			for i, o := range []struct {
				user  string
				lines []server.LineJSON
			}{
				{"alice", []server.LineJSON{{ProductID: "p1", Qty: 3}}},
				{"bob", []server.LineJSON{{ProductID: "p2", Qty: 1}, {ProductID: "p1", Qty: 1}}},
				{"carol", []server.LineJSON{{ProductID: "p2", Qty: 2}, {ProductID: "p0", Qty: 1}}},
			} {
				tok := token(t, o.user, false)
				key := "order-" + string(rune('a'+i))
				placed := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", tok, key, server.PlaceOrderJSON{Lines: o.lines}), http.StatusCreated))
				got := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+placed.ID+"/pay", tok, "pay-"+key,
					server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK))
				require.Equal(t, "PAID", got.Status)
				paid = append(paid, got.ID)
			}

			ranking := func(query string) server.RankingJSON {
				return as[server.RankingJSON](t, expect(t, a.call("GET", "/v1/rankings?"+query, "", "", nil), http.StatusOK))
			}
			ids := func(r server.RankingJSON) []string {
				var out []string
				for _, it := range r.Items {
					out = append(out, it.ProductID)
				}
				return out
			}
			for _, period := range []string{"daily", "weekly", "monthly"} {
				require.Eventually(t, func() bool {
					return len(ranking("period="+period).Items) == 3
				}, 30*time.Second, 20*time.Millisecond, period+" ranking")
				r := ranking("period=" + period + "&limit=3")
				// p1: 4 units, p2: 3, p0: 1.
				assert.Equal(t, []string{"p1", "p2", "p0"}, ids(r), period)
				assert.Equal(t, int64(4), r.Items[0].NetUnits)
				assert.Equal(t, int64(4000), r.Items[0].NetRevenue)
				assert.Equal(t, "Asia/Seoul", r.TimeZone)
			}
			assert.Equal(t, []string{"p1"}, ids(ranking("period=weekly&limit=1")))
			m := as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p2/metrics?period=daily", "", "", nil), http.StatusOK))
			require.Len(t, m.Items, 1)
			assert.Equal(t, server.MetricsJSON{Orders: 2, Units: 3, Revenue: 6000, NetUnits: 3, NetRevenue: 6000}, m.Items[0].MetricsJSON)

			for _, bad := range []string{
				"/v1/rankings?period=yearly", "/v1/rankings?date=2026-13-01", "/v1/rankings?limit=0",
				"/v1/rankings?limit=abc", "/v1/rankings?limit=101",
				"/v1/products/p1/metrics?from=2026-03-05&to=2026-03-04", "/v1/products/p1/metrics?period=daily&from=2020-01-01",
				"/v1/products/p%001/metrics", "/v1/products/%FF/metrics", "/v1/rankings?limit=99999999999999999999",
				"/v1/rankings?date=2026-02-30", "/v1/products/p1/metrics?period=weekly&from=0001-01-01&to=9999-12-31",
			} {
				expectProblem(t, a.call("GET", bad, "", "", nil), http.StatusBadRequest, "invalid_request")
			}

			// The data platform got every paid order, each POST carrying its event ID.
			require.Eventually(t, func() bool {
				keys := map[string]bool{}
				for _, r := range platform.Received() {
					keys[r.IdempotencyKey] = true
				}
				return len(keys) == len(paid)
			}, 30*time.Second, 20*time.Millisecond, "the paid orders at the data platform")
			for _, r := range platform.Received() {
				var body struct {
					OrderID string `json:"orderId"`
					Status  string `json:"status"`
				}
				require.NoError(t, json.Unmarshal(r.Body, &body))
				assert.Contains(t, paid, body.OrderID)
				assert.Equal(t, body.OrderID+"-payment-completed", r.IdempotencyKey)
				assert.Equal(t, "PAID", body.Status)
			}
		})
	}
}

// TestAnalyticsDatesOfYearZero: time.Parse takes year 0, whose weeks and months start on
// days no YYYY-MM-DD names: a weekly ranking of 0000-01-01 answered 200 with the start
// "-0001-12-27". Such a date is a bad query, as 10000-01-01 is.
func TestAnalyticsDatesOfYearZero(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 1000, 10) // the metrics of a product the catalogue lacks are 404
	for _, bad := range []string{
		"/v1/rankings?period=weekly&date=0000-01-01", "/v1/rankings?period=daily&date=0000-06-15",
		"/v1/products/p1/metrics?period=weekly&from=0000-01-01&to=0001-01-07",
		"/v1/products/p1/metrics?period=monthly&from=0000-12-01&to=0000-12-31",
	} {
		expectProblem(t, a.call("GET", bad, "", "", nil), http.StatusBadRequest, "invalid_request")
	}
	r := as[server.RankingJSON](t, expect(t, a.call("GET", "/v1/rankings?period=weekly&date=0001-01-01", "", "", nil), http.StatusOK))
	assert.Equal(t, "0001-01-01", r.Start, "the first day a date names, a Monday")
	expect(t, a.call("GET", "/v1/products/p1/metrics?period=monthly&from=9999-12-31", "", "", nil), http.StatusBadRequest)
	expect(t, a.call("GET", "/v1/products/p1/metrics?period=monthly&from=0001-01-01&to=0001-01-31", "", "", nil), http.StatusOK)
}

// deliveriesJSON is the body of GET /v1/admin/dataplatform/deliveries.
type deliveriesJSON struct {
	Deliveries []struct {
		EventID   string `json:"event_id"`
		OrderID   string `json:"order_id"`
		State     string `json:"state"`
		Attempts  int    `json:"attempts"`
		LastError string `json:"last_error"`
	} `json:"deliveries"`
}

// TestDataPlatformDeadDeliveries: an order the data platform refuses for good (a 4xx) is
// dead-lettered by the notifier; admins list the notifier's deliveries by state and, once
// the platform takes it, redrive the dead ones over HTTP: it is delivered once, and a
// redrive sent again redrives nothing. Without a data platform the routes are 404
// dataplatform_not_configured; a bad state or limit is 400; users may not touch them.
func TestDataPlatformDeadDeliveries(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			platform := platformsim.New()
			var refusing atomic.Bool
			refusing.Store(true)
			dp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if refusing.Load() {
					http.Error(w, "unknown merchant", http.StatusBadRequest)
					return
				}
				platform.ServeHTTP(w, r)
			}))
			t.Cleanup(dp.Close)
			a := start(t, b, func(c *server.Config) { c.DataPlatformURL = dp.URL + "/v1/orders" })
			admin := setup(t, a, "p1", 1000, 50)
			alice := token(t, "alice", false)
			const list, redrive = "/v1/admin/dataplatform/deliveries", "/v1/admin/dataplatform/redrive"
			deliveries := func(query string) deliveriesJSON {
				return as[deliveriesJSON](t, expect(t, a.call("GET", list+query, admin, "", nil), http.StatusOK))
			}
			for _, path := range []string{list, redrive} {
				method := map[string]string{list: "GET", redrive: "POST"}[path]
				expect(t, a.call(method, path, "", "", nil), http.StatusUnauthorized)
				expectProblem(t, a.call(method, path, alice, "", nil), http.StatusForbidden, "forbidden")
			}
			for _, bad := range []string{"?state=lost", "?limit=0", "?limit=501", "?limit=x"} {
				expectProblem(t, a.call("GET", list+bad, admin, "", nil), http.StatusBadRequest, "malformed_request")
			}

			placed := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o-1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
			expect(t, a.call("POST", "/v1/orders/"+placed.ID+"/pay", alice, "pay-1", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
			require.Eventually(t, func() bool { return len(deliveries("?state=dead").Deliveries) == 1 }, 30*time.Second, 20*time.Millisecond)
			dead := deliveries("?state=dead").Deliveries[0]
			assert.Equal(t, placed.ID, dead.OrderID)
			assert.Equal(t, placed.ID+"-payment-completed", dead.EventID)
			assert.Equal(t, 1, dead.Attempts)
			assert.Contains(t, dead.LastError, "400")
			assert.Len(t, deliveries("").Deliveries, 1, "every state")
			assert.Empty(t, deliveries("?state=sent").Deliveries)

			refusing.Store(false)
			got := as[struct{ Redriven int }](t, expect(t, a.call("POST", redrive, admin, "", nil), http.StatusOK))
			assert.Equal(t, 1, got.Redriven)
			require.Eventually(t, func() bool { return len(deliveries("?state=sent&limit=1").Deliveries) == 1 }, 30*time.Second, 20*time.Millisecond)
			assert.Empty(t, deliveries("?state=dead").Deliveries)
			got = as[struct{ Redriven int }](t, expect(t, a.call("POST", redrive, admin, "", nil), http.StatusOK))
			assert.Zero(t, got.Redriven, "sent again: nothing left")
			received := platform.Received()
			require.Len(t, received, 1)
			assert.Equal(t, dead.EventID, received[0].IdempotencyKey)
		})
	}
	t.Run("not configured", func(t *testing.T) {
		a := start(t, embedded, nil)
		admin := token(t, "ops", true)
		expectProblem(t, a.call("GET", "/v1/admin/dataplatform/deliveries", admin, "", nil), http.StatusNotFound, "dataplatform_not_configured")
		expectProblem(t, a.call("POST", "/v1/admin/dataplatform/redrive", admin, "", nil), http.StatusNotFound, "dataplatform_not_configured")
	})
}

// TestDataPlatformRoutesWhileMySQLFails: with MySQL paused, then killed, the notifier's
// admin routes answer 503 with Retry-After, never a 500; once it is back they answer again.
func TestDataPlatformRoutesWhileMySQLFails(t *testing.T) {
	dp := httptest.NewServer(platformsim.New())
	t.Cleanup(dp.Close)
	rdb := testenv.OwnRedis(t)
	db, dsn := testenv.OwnMySQL(t)
	cfg, sim, setHook := fullConfig(t, dsn, rdb.Addr, 0)
	cfg.DataPlatformURL = dp.URL + "/v1/orders"
	a := start(t, backend{name: "dataplatform", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil)
	admin := token(t, "ops", true)
	routes := [][2]string{{"GET", "/v1/admin/dataplatform/deliveries?state=dead"}, {"POST", "/v1/admin/dataplatform/redrive"}}
	for _, f := range []struct {
		name        string
		fault, heal func()
	}{
		{"paused", func() { db.Pause(t) }, func() { db.Unpause(t) }},
		{"down", func() { db.Stop(t, 0) }, func() { db.Start(t) }},
	} {
		f.fault()
		for _, rt := range routes {
			r := a.call(rt[0], rt[1], admin, "", nil)
			assert.Equal(t, http.StatusServiceUnavailable, r.Status, "MySQL %s: %s %s: %s", f.name, rt[0], rt[1], r.Body)
			assert.NotEmpty(t, r.Header.Get("Retry-After"), "MySQL %s: %s %s", f.name, rt[0], rt[1])
		}
		f.heal()
		for _, rt := range routes {
			require.Eventually(t, func() bool { return a.call(rt[0], rt[1], admin, "", nil).Status == http.StatusOK },
				30*time.Second, 100*time.Millisecond, "MySQL %s healed: %s %s", f.name, rt[0], rt[1])
		}
	}
}
