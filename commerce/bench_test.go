package commerce_test

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/dialect"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/payment"
)

// BenchmarkCheckout measures orders per second from 50 concurrent clients on each
// configuration: PlaceOrder alone (stock, order row and event in one transaction), and
// PlaceOrder followed by a card payment through the in-process PG simulator (three more
// transactions: the move to PAYING with the payment's record, the PG's answer, the
// completion). Every order buys one unit of one of `skus` products; the flash sale's
// checkout ("place+pay+coupon+points") also spends a coupon and points. It reports the SQL
// statements sent per order (BEGIN and COMMIT included), whatever sent them.
func BenchmarkCheckout(b *testing.B) {
	for _, c := range commercetest.Configs {
		for _, run := range []checkoutRun{{1, false, false}, {1, true, false}, {1, true, true}, {100, false, false}, {100, true, false}} {
			name := fmt.Sprintf("%s/skus=%d/place", c.Name, run.skus)
			if run.pay {
				name += "+pay"
			}
			if run.extras {
				name += "+coupon+points"
			}
			b.Run(name, func(b *testing.B) { benchCheckout(b, c.New(b), run) })
		}
	}
}

// checkoutRun is one kind of checkout: over how many products, whether the order is paid,
// and whether it spends a coupon and points.
type checkoutRun struct {
	skus        int
	pay, extras bool
}

func benchCheckout(b *testing.B, e *commercetest.Env, run checkoutRun) {
	ids := make([]string, run.skus)
	for i := range ids {
		ids[i] = e.Product(b, 10_000, 10_000_000)
	}
	coupons := make([]string, b.N+1)
	if run.extras {
		tpl := e.CouponTemplate(b, 2_000)
		for i := 1; i <= b.N; i++ {
			coupons[i] = e.GiveCoupon(b, tpl, fmt.Sprintf("bench-%d", i))
			e.GivePoints(b, fmt.Sprintf("bench-%d", i), 1_000)
		}
	}
	var n atomic.Int64
	b.SetParallelism((50 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	statements := e.Statements.All.Load()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			user := fmt.Sprintf("bench-%d", i)
			req := commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: "k",
				Lines: []commerce.Line{{ProductID: ids[int(i)%run.skus], Qty: 1}}}
			if run.extras {
				req.CouponID, req.Points = coupons[i], 1_000
			}
			o, err := e.Service.PlaceOrder(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if !run.pay {
				continue
			}
			o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: user, Method: payment.MethodCard,
				Token: "tok", IdempotencyKey: "k"})
			if err != nil || o.Status != commerce.StatusPaid {
				b.Error(o.Status, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	b.ReportMetric(float64(e.Statements.All.Load()-statements)/float64(b.N), "statements/order")
}

// BenchmarkPlaceOrderLongHistory measures a buyer's checkout (PlaceOrder, then a card
// payment) when the buyer has `history` paid orders already, on each configuration. The
// unpaid caps count the buyer's unpaid units in every placing transaction, under the
// buyer's lock: with the index commerce_orders_user_status that count reads the buyer's unpaid
// orders only, so a long history must not slow the checkout down.
func BenchmarkPlaceOrderLongHistory(b *testing.B) {
	for _, c := range commercetest.Configs {
		for _, history := range []int{0, 8192} {
			b.Run(fmt.Sprintf("%s/history=%d", c.Name, history), func(b *testing.B) {
				e := c.New(b)
				sku := e.Product(b, 10_000, 10_000_000)
				checkout := func(key string) {
					o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: "long-history", IdempotencyKey: key,
						Lines: []commerce.Line{{ProductID: sku, Qty: 1}}})
					require.NoError(b, err)
					o, err = e.Service.Pay(ctx, cardPayment(o, "tok"))
					require.NoError(b, err)
					require.Equal(b, commerce.StatusPaid, o.Status)
				}
				if history > 0 {
					checkout("seed")
					copyHistory(b, e, "long-history", history, false)
				}
				statements := e.Statements.All.Load()
				b.ResetTimer()
				for i := range b.N {
					checkout(fmt.Sprintf("k-%d", i))
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
				b.ReportMetric(float64(e.Statements.All.Load()-statements)/float64(b.N), "statements/order")
			})
		}
	}
}

// BenchmarkListOrdersLongHistory measures a walk through the history of a buyer with 8,192
// paid orders a microsecond apart, page by page (DefaultPageSize), on each configuration.
func BenchmarkListOrdersLongHistory(b *testing.B) {
	for _, c := range commercetest.Configs {
		b.Run(c.Name, func(b *testing.B) {
			e := c.New(b)
			sku := e.Product(b, 10, 10_000)
			o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: "long-history", IdempotencyKey: "seed",
				Lines: []commerce.Line{{ProductID: sku, Qty: 1}}})
			require.NoError(b, err)
			_, err = e.Service.Pay(ctx, cardPayment(o, "tok"))
			require.NoError(b, err)
			copyHistory(b, e, "long-history", 8191, true)
			pages := 0
			for b.Loop() {
				for cursor := ""; ; {
					page, err := e.Service.ListOrders(ctx, "long-history", commerce.OrderQuery{Cursor: cursor})
					require.NoError(b, err)
					pages++
					if cursor = page.Next; cursor == "" {
						break
					}
				}
			}
			b.ReportMetric(float64(pages)/b.Elapsed().Seconds(), "pages/s")
		})
	}
}

// copyHistory gives the buyer n more paid orders, copies (with their lines) of the one the
// buyer has, each under a new ID and key, then has MySQL analyse the tables, as a
// production server's statistics would know them. The copies share the original's
// created_at, or with apart the nth is n microseconds older.
func copyHistory(b testing.TB, e *commercetest.Env, buyer string, n int, apart bool) {
	b.Helper()
	exec := func(q string, args ...any) {
		_, err := e.DB.ExecContext(ctx, q, args...)
		require.NoError(b, err)
	}
	concat := func(a string) string { return "CONCAT(" + a + ", '-', s.n)" }
	if e.DB.Dialect().Name() == dialect.SQLite {
		concat = func(a string) string { return a + " || '-' || s.n" }
	}
	// columns lists the table's columns, and what to select for each: copies of the buyer's
	// order, the named columns given a number.
	columns := func(table string, numbered ...string) (cols, exprs string) {
		rows, err := e.DB.QueryContext(ctx, "SELECT * FROM "+table+" LIMIT 0")
		require.NoError(b, err)
		names, err := rows.Columns()
		require.NoError(b, err)
		require.NoError(b, rows.Close())
		es := make([]string, len(names))
		for i, c := range names {
			if es[i] = "t." + c; slices.Contains(numbered, c) {
				es[i] = concat(es[i])
			}
		}
		return strings.Join(names, ", "), strings.Join(es, ", ")
	}
	exec("CREATE TABLE bench_seq (n INTEGER NOT NULL)")
	exec("INSERT INTO bench_seq (n) VALUES (1)")
	for have := 1; have < n; have *= 2 {
		exec("INSERT INTO bench_seq (n) SELECT n + ? FROM bench_seq WHERE n + ? <= ?", have, have, n)
	}
	cols, exprs := columns("commerce_order_lines", "order_id")
	exec("INSERT INTO commerce_order_lines ("+cols+") SELECT "+exprs+
		" FROM commerce_order_lines AS t JOIN commerce_orders AS o ON o.id = t.order_id CROSS JOIN bench_seq AS s WHERE o.user_id = ?", buyer)
	cols, exprs = columns("commerce_orders", "id", "idem_key")
	if apart {
		exprs = strings.Replace(exprs, "t.created_at", "t.created_at - s.n", 1)
	}
	exec("INSERT INTO commerce_orders ("+cols+") SELECT "+exprs+" FROM commerce_orders AS t CROSS JOIN bench_seq AS s WHERE t.user_id = ?", buyer)
	if e.DB.Dialect().Name() == dialect.MySQL {
		exec("ANALYZE TABLE commerce_orders, commerce_order_lines")
	}
}
