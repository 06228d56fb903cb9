package server_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/refserver/server"
)

// consumerLetters is the body of GET /v1/admin/consumers/{name}/dead-letters.
type consumerLetters struct {
	Consumer    string `json:"consumer"`
	DeadLetters []struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Error    string `json:"error"`
		Attempts int    `json:"attempts"`
	} `json:"dead_letters"`
}

// TestConsumerDeadLettersAdmin: an event the collector's consumer dead-letters (its table
// gone while the event is delivered) is listed to admins by the consumer's name and,
// once the cause is fixed, redriven over HTTP: applied once (the sale counted once, a
// second redrive applies nothing) and gone from the listing. A redrive while the cause
// lasts applies nothing and keeps the letter. Users may not touch consumers' dead letters;
// an unknown consumer is 404, a bad limit 400.
func TestConsumerDeadLettersAdmin(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var cfg server.Config
			a := start(t, b, func(c *server.Config) { cfg = *c })
			admin := setup(t, a, "p1", 1000, 50)
			alice := token(t, "alice", false)
			list := "/v1/admin/consumers/" + collector.ConsumerName + "/dead-letters"
			redrive := list + "/redrive"
			letters := func() consumerLetters {
				return as[consumerLetters](t, expect(t, a.call("GET", list, admin, "", nil), http.StatusOK))
			}
			page := letters()
			assert.Equal(t, collector.ConsumerName, page.Consumer)
			assert.Empty(t, page.DeadLetters)

			for _, path := range []string{list, redrive} {
				method := map[string]string{list: "GET", redrive: "POST"}[path]
				expect(t, a.call(method, path, "", "", nil), http.StatusUnauthorized)
				expectProblem(t, a.call(method, path, alice, "", nil), http.StatusForbidden, "forbidden")
				expectProblem(t, a.call(method, "/v1/admin/consumers/no-such-consumer/dead-letters"+path[len(list):], admin, "", nil),
					http.StatusNotFound, "consumer_not_found")
				for _, bad := range []string{"0", "501", "abc", "-1"} {
					expectProblem(t, a.call(method, path+"?limit="+bad, admin, "", nil), http.StatusBadRequest, "malformed_request")
				}
			}

			// The collector cannot count the sale: its payment event is dead-lettered.
			repair := collectorDeadLetter(t, a, cfg, admin, alice, 2)
			page = letters()
			dead := page.DeadLetters[0]
			assert.Equal(t, commerce.EventPaymentCompleted, dead.Type)
			assert.Positive(t, dead.Attempts)
			assert.NotEmpty(t, dead.Error)

			// Redriven before the cause is fixed: it fails again and stays.
			got := as[struct{ Applied int }](t, expect(t, a.call("POST", redrive, admin, "", nil), http.StatusOK))
			assert.Equal(t, 0, got.Applied)
			page = letters()
			require.Len(t, page.DeadLetters, 1)
			assert.Equal(t, dead.ID, page.DeadLetters[0].ID)

			repair()
			got = as[struct{ Applied int }](t, expect(t, a.call("POST", redrive+"?limit=10", admin, "", nil), http.StatusOK))
			assert.Equal(t, 1, got.Applied)
			assert.Empty(t, letters().DeadLetters)
			sales := func() server.MetricsJSON {
				m := as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p1/metrics", "", "", nil), http.StatusOK))
				require.Len(t, m.Items, 1)
				return m.Items[0].MetricsJSON
			}
			want := server.MetricsJSON{Orders: 1, Units: 2, Revenue: 2000, NetUnits: 2, NetRevenue: 2000}
			assert.Equal(t, want, sales())
			// Sent again (its answer lost): nothing left to apply, the sale still counted once.
			got = as[struct{ Applied int }](t, expect(t, a.call("POST", redrive, admin, "", nil), http.StatusOK))
			assert.Equal(t, 0, got.Applied)
			assert.Equal(t, want, sales())
		})
	}
}

// TestConsumersListed: admins find the names the consumer routes take, each with how
// many dead letters it holds: the collector's in both modes, the event log's without
// Kafka. A dead letter is counted under its consumer; users may not list them.
func TestConsumersListed(t *testing.T) {
	type listing struct {
		Consumers []struct {
			Name        string `json:"name"`
			DeadLetters int    `json:"dead_letters"`
		} `json:"consumers"`
	}
	want := map[string][]string{
		embedded.name: {collector.ConsumerName, "refserver-event-log"},
		full.name:     {collector.ConsumerName},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var cfg server.Config
			a := start(t, b, func(c *server.Config) { cfg = *c })
			admin := setup(t, a, "p1", 1000, 50)
			alice := token(t, "alice", false)
			expect(t, a.call("GET", "/v1/admin/consumers", "", "", nil), http.StatusUnauthorized)
			expectProblem(t, a.call("GET", "/v1/admin/consumers", alice, "", nil), http.StatusForbidden, "forbidden")
			counts := func() map[string]int {
				l := as[listing](t, expect(t, a.call("GET", "/v1/admin/consumers", admin, "", nil), http.StatusOK))
				names, out := make([]string, len(l.Consumers)), map[string]int{}
				for i, c := range l.Consumers {
					names[i], out[c.Name] = c.Name, c.DeadLetters
				}
				require.Equal(t, want[b.name], names, "sorted by name")
				return out
			}
			for _, n := range counts() {
				assert.Zero(t, n)
			}
			collectorDeadLetter(t, a, cfg, admin, alice, 1)
			for name, n := range counts() {
				want := 0
				if name == collector.ConsumerName {
					want = 1
				}
				assert.Equal(t, want, n, name)
			}
		})
	}
}

// TestConsumerDeadLetterSkip: an admin gives up for good on an event the collector's
// consumer dead-lettered: POST .../dead-letters/{id}/skip answers 204 (and 204 again when
// sent again), the letter leaves the listing, and the event is never applied: once the
// cause is fixed, a redrive applies nothing and the sale stays uncounted. An ID that was
// never a letter of the consumer is 404 not_dead_letter; an event the consumer applied (a
// later sale's, which is counted), 409 dead_letter_resolved; users may not skip.
func TestConsumerDeadLetterSkip(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var cfg server.Config
			a := start(t, b, func(c *server.Config) { cfg = *c })
			admin := setup(t, a, "p1", 1000, 50)
			alice := token(t, "alice", false)
			list := "/v1/admin/consumers/" + collector.ConsumerName + "/dead-letters"
			letters := func() consumerLetters {
				return as[consumerLetters](t, expect(t, a.call("GET", list, admin, "", nil), http.StatusOK))
			}
			repair := collectorDeadLetter(t, a, cfg, admin, alice, 2)
			skip := list + "/" + letters().DeadLetters[0].ID + "/skip"

			expect(t, a.call("POST", skip, "", "", nil), http.StatusUnauthorized)
			expectProblem(t, a.call("POST", skip, alice, "", nil), http.StatusForbidden, "forbidden")
			expectProblem(t, a.call("POST", "/v1/admin/consumers/no-such-consumer/dead-letters/x/skip", admin, "", nil),
				http.StatusNotFound, "consumer_not_found")
			for _, id := range []string{"no-such-event", "%00", "x%20"} {
				expectProblem(t, a.call("POST", list+"/"+id+"/skip", admin, "", nil), http.StatusNotFound, "not_dead_letter")
			}
			require.Len(t, letters().DeadLetters, 1, "nothing changed")

			expect(t, a.call("POST", skip, admin, "", nil), http.StatusNoContent)
			assert.Empty(t, letters().DeadLetters)
			expect(t, a.call("POST", skip, admin, "", nil), http.StatusNoContent) // its answer lost, sent again

			// The cause fixed: nothing is left to apply, the skipped sale is not counted.
			repair()
			got := as[struct{ Applied int }](t, expect(t, a.call("POST", list+"/redrive", admin, "", nil), http.StatusOK))
			assert.Equal(t, 0, got.Applied)
			m := as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p1/metrics", "", "", nil), http.StatusOK))
			assert.Empty(t, m.Items)

			// A later sale is counted, alone; its event, applied, cannot be skipped.
			second := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o-2", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 3}}}), http.StatusCreated))
			expect(t, a.call("POST", "/v1/orders/"+second.ID+"/pay", alice, "pay-2", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
			require.Eventually(t, func() bool {
				m = as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p1/metrics", "", "", nil), http.StatusOK))
				return len(m.Items) == 1
			}, 30*time.Second, 20*time.Millisecond)
			assert.Equal(t, server.MetricsJSON{Orders: 1, Units: 3, Revenue: 3000, NetUnits: 3, NetRevenue: 3000}, m.Items[0].MetricsJSON)
			expectProblem(t, a.call("POST", list+"/"+commerce.EventID(second.ID, commerce.EventPaymentCompleted)+"/skip", admin, "", nil),
				http.StatusConflict, "dead_letter_resolved")
		})
	}
}

// TestProductMetricsOfUnknownProduct: a product the catalogue does not hold has no
// metrics, as it has no stock: 404 product_not_found on both routes, not 200 with no
// items; a product without sales has metrics with no items.
func TestProductMetricsOfUnknownProduct(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			setup(t, a, "p1", 1000, 50)
			for _, path := range []string{"/v1/products/nope/stock", "/v1/products/nope/metrics", "/v1/products/nope/metrics?period=monthly"} {
				expectProblem(t, a.call("GET", path, "", "", nil), http.StatusNotFound, "product_not_found")
			}
			m := as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p1/metrics", "", "", nil), http.StatusOK))
			assert.Equal(t, "p1", m.ProductID)
			assert.Empty(t, m.Items)
		})
	}
}

// collectorDeadLetter places and pays an order of qty units of p1 as tok while the
// collector's daily table is renamed away, so that the collector dead-letters the sale's
// payment event, and waits until the collector lists one dead letter. It returns the
// repair: the table put back.
func collectorDeadLetter(t *testing.T, a *app, cfg server.Config, admin, tok string, qty int64) (repair func()) {
	t.Helper()
	db := openServerDB(t, cfg)
	rename := func(from, to string) {
		_, err := db.ExecContext(t.Context(), "ALTER TABLE "+from+" RENAME TO "+to)
		require.NoError(t, err)
	}
	placed := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", tok, "o-dead", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: qty}}}), http.StatusCreated))
	rename(collector.TableDaily, "metrics_daily_away")
	expect(t, a.call("POST", "/v1/orders/"+placed.ID+"/pay", tok, "pay-dead", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
	require.Eventually(t, func() bool {
		l := as[consumerLetters](t, expect(t, a.call("GET", "/v1/admin/consumers/"+collector.ConsumerName+"/dead-letters", admin, "", nil), http.StatusOK))
		return len(l.DeadLetters) == 1
	}, 30*time.Second, 20*time.Millisecond)
	return func() { rename("metrics_daily_away", collector.TableDaily) }
}

// openServerDB opens the server's database, as the server's configuration names it.
func openServerDB(t *testing.T, cfg server.Config) *sql.DB {
	t.Helper()
	driver, dsn := "mysql", cfg.DBDSN
	if cfg.DBDriver != server.DriverMySQL {
		driver, dsn = sqliteshim.ShimName, "file:"+dsn+"?_pragma=busy_timeout(10000)"
	}
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConsumerDeadLettersListingReadsNoPayload: a consumer's dead letters keep their
// events whole, payloads of any size included (a Kafka producer's are up to the broker's
// limit). The listing shows none of them and reads none of them: 20 letters of 2 MiB cost
// the request far less than their 40 MiB.
func TestConsumerDeadLettersListingReadsNoPayload(t *testing.T) {
	var cfg server.Config
	a := start(t, embedded, func(c *server.Config) { cfg = *c })
	admin := token(t, "ops", true)
	db := openServerDB(t, cfg)
	const letters, payload = 20, 2 << 20
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for i := range letters {
		_, err := db.ExecContext(t.Context(), `INSERT INTO outbox_dead_letters (consumer, id, topic, aggregate_key, seq, event_type,
			payload, created_at, last_error, attempts, dead_at) VALUES (?, ?, 'commerce-payments', ?, 1, 'payment-completed', zeroblob(?), ?, 'poison', 5, ?)`,
			collector.ConsumerName, fmt.Sprintf("ev-big-%02d", i), fmt.Sprintf("ord-%02d", i), payload, at, at)
		require.NoError(t, err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	page := as[consumerLetters](t, expect(t, a.call("GET", "/v1/admin/consumers/"+collector.ConsumerName+"/dead-letters", admin, "", nil), http.StatusOK))
	runtime.ReadMemStats(&after)
	require.Len(t, page.DeadLetters, letters)
	assert.Equal(t, "ev-big-00", page.DeadLetters[0].ID)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(letters*payload/4),
		"the listing allocated %d MiB for %d letters of %d MiB it does not show", (after.TotalAlloc-before.TotalAlloc)>>20, letters, payload>>20)
	page = as[consumerLetters](t, expect(t, a.call("GET", "/v1/admin/consumers/"+collector.ConsumerName+"/dead-letters?limit=3", admin, "", nil), http.StatusOK))
	require.Len(t, page.DeadLetters, 3)
	assert.Equal(t, "ev-big-02", page.DeadLetters[2].ID)
}
