package server_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestTwoInstancesSameKeyStorm: each buyer sends its place, then its pay, six times at once
// to both instances with one Idempotency-Key, four copies with one body and two with
// another. Whichever body wins, its copies all get the one order (or its one payment), the
// others 422 idempotency_key_reused, any copy meeting the first still running 409
// request_in_progress (then, retried, one of those). Once the shared Redis (which holds
// the stored answers) restarted empty, a copy of the losing body sent first is still 422,
// and that 422 does not bind the key to it: the winning body's copies, sent again to both
// at once, still get the one order (the one payment), and the losing body 422 again. Each
// buyer has one order, paid with one charge, and the stock sold is those orders' units.
func TestTwoInstancesSameKeyStorm(t *testing.T) {
	const buyers, copies = 8, 6
	ti := newTwoInstances(t)
	admin := setup(t, ti.apps[0], "hot", 1000, 100)
	c := &flowClient{}

	// storm sends the copies at once (copy j on instance j%2, with body j%3/2, or all with
	// the body that won before, wantWinner, if known) and checks their answers; it returns
	// the winning body and the order answered.
	storm := func(i int, tok, what, path, key string, bodies [2]any, ok int, wantWinner int) (int, server.OrderJSON) {
		type answer struct {
			body int
			r    resp
		}
		answers := make([]answer, copies)
		testkit.Parallel(copies, copies, func(j int) {
			answers[j] = answer{body: j % 3 / 2}
			if wantWinner >= 0 {
				answers[j].body = wantWinner
			}
			r, err := ti.apps[j%2].try("POST", path, tok, key, bodies[answers[j].body])
			p, _ := decodeProblem(r.Body)
			if err != nil || r.Status == http.StatusServiceUnavailable || r.Status == http.StatusConflict && p.Code == "request_in_progress" {
				at := attempt{route: what + " (first)", n: 2, status: r.Status, code: p.Code, retry: r.Header.Get("Retry-After")}
				if err != nil {
					at.failure = err.Error()
				}
				c.mu.Lock()
				c.log = append(c.log, at)
				c.mu.Unlock()
				r = c.on(ti.apps[j%2], what, "POST", path, tok, key, bodies[answers[j].body])
			}
			answers[j].r = r
		})
		winner, id := wantWinner, ""
		var won server.OrderJSON
		for j, a := range answers {
			if a.r.Status == ok && (winner < 0 || a.body == winner) {
				winner = a.body
				var o server.OrderJSON
				require.NoError(t, jsonUnmarshal(a.r.Body, &o), "buyer %d %s copy %d", i, what, j)
				if id == "" {
					id, won = o.ID, o
				}
				assert.Equal(t, id, o.ID, "buyer %d %s copy %d: one order", i, what, j)
			}
		}
		require.GreaterOrEqual(t, winner, 0, "buyer %d %s: no copy succeeded: %+v", i, what, answers)
		for j, a := range answers {
			if a.body == winner {
				assert.Equal(t, ok, a.r.Status, "buyer %d %s copy %d: %s", i, what, j, a.r.Body)
			} else {
				p, _ := decodeProblem(a.r.Body)
				assert.Equal(t, []any{http.StatusUnprocessableEntity, "idempotency_key_reused"}, []any{a.r.Status, p.Code},
					"buyer %d %s copy %d: %s", i, what, j, a.r.Body)
			}
		}
		return winner, won
	}

	type buyer struct {
		tok                string
		place, pay         int // the winning bodies
		placed, paid       server.OrderJSON
		placeBody, payBody [2]any
	}
	bs := make([]buyer, buyers)
	run := func(again bool) {
		for i := range bs {
			b := &bs[i]
			if !again {
				b.tok = token(t, fmt.Sprintf("buyer-%02d", i), false)
				b.placeBody = [2]any{server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "hot", Qty: 1}}},
					server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "hot", Qty: 2}}}}
				b.payBody = [2]any{server.PayJSON{Method: "CARD", Token: "tok_ok"}, server.PayJSON{Method: "CARD", Token: "tok_other"}}
				b.place, b.pay = -1, -1
			}
			// Once Redis forgot the stored answers, the body that lost comes first, and
			// once more after the winner's copies.
			reused := func(what, path string, bodies [2]any, won int) {
				if again {
					expectProblem(t, c.on(ti.apps[i%2], what, "POST", path, b.tok, what, bodies[1-won]), http.StatusUnprocessableEntity, "idempotency_key_reused")
				}
			}
			reused("order", "/v1/orders", b.placeBody, b.place)
			place, placed := storm(i, b.tok, "order", "/v1/orders", "order", b.placeBody, http.StatusCreated, b.place)
			require.NotEmpty(t, placed.ID, "buyer %d", i)
			reused("order", "/v1/orders", b.placeBody, b.place)
			reused("pay", "/v1/orders/"+placed.ID+"/pay", b.payBody, b.pay)
			pay, paid := storm(i, b.tok, "pay", "/v1/orders/"+placed.ID+"/pay", "pay", b.payBody, http.StatusOK, b.pay)
			reused("pay", "/v1/orders/"+placed.ID+"/pay", b.payBody, b.pay)
			if again {
				assert.Equal(t, []any{b.placed.ID, b.paid.ID, "PAID"}, []any{placed.ID, paid.ID, paid.Status}, "buyer %d", i)
			}
			b.place, b.placed, b.pay, b.paid = place, placed, pay, paid
			assert.Equal(t, "PAID", paid.Status, "buyer %d", i)
		}
	}
	run(false)
	rc := redis.NewClient(&redis.Options{Addr: ti.rdb.Addr})
	require.NoError(t, rc.FlushAll(t.Context()).Err())
	require.NoError(t, rc.Close())
	ti.rdb.Stop(t, 0)
	time.Sleep(time.Second)
	ti.rdb.Start(t)
	run(true)
	t.Logf("answers %v", checkHonestRetries(t, c.log))

	var sold int64
	for i, b := range bs {
		orders := as[server.OrderPageJSON](t, expect(t, ti.apps[i%2].call("GET", "/v1/orders", b.tok, "", nil), http.StatusOK)).Orders
		if assert.Len(t, orders, 1, "buyer %d: one order", i) {
			assert.Equal(t, []any{b.placed.ID, "PAID", int64(b.place + 1)}, []any{orders[0].ID, orders[0].Status, orders[0].Lines[0].Qty}, "buyer %d", i)
		}
		sold += int64(b.place + 1)
	}
	assert.Equal(t, buyers, ti.sim.Stats().Charges, "one charge per buyer")
	for n, x := range ti.apps {
		st := as[server.StockJSON](t, expect(t, e2eUntilFinal(t, x, "GET", "/v1/products/hot/stock", "", "", nil), http.StatusOK))
		assert.Equal(t, []int64{100 - sold, 0, sold}, []int64{st.Available, st.Reserved, st.Sold}, "instance %d", n)
		(&attackEnv{app: x, admin: admin}).requireAuditClean(t)
	}
}

// checkHonestRetries is checkHonestAttempts for retries of requests whose first attempt
// was refused 409 request_in_progress (which a retry may meet again).
func checkHonestRetries(t *testing.T, attempts []attempt) map[string]int {
	t.Helper()
	for i := range attempts {
		attempts[i].n++
	}
	return checkHonestAttempts(t, attempts)
}
