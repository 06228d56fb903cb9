package cart_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// isWrite matches the statements that change something: INSERT, UPDATE, DELETE, COMMIT.
func isWrite(q string) bool {
	q = strings.ToUpper(strings.TrimSpace(q))
	for _, w := range []string{"INSERT", "UPDATE", "DELETE", "COMMIT"} {
		if strings.HasPrefix(q, w) {
			return true
		}
	}
	return false
}

// TestCheckoutPayWithPointsPaused: a checkout paid with points alone, its database server
// paused (docker pause: connections stay open, nothing answers) just as each of its writes
// (INSERT, UPDATE, DELETE, COMMIT) in turn is sent, which then waits in the paused server.
// The client's DSN reads with a timeout, so the checkout gives up while the statement
// waits: it answers a dependency failure, and so does the client's retry with its key
// while the server stays paused. The server resumes, runs what was sent to it (a COMMIT
// the client gave up on commits), and then the client's retry (after the payment
// reconciler and Recover, or alone, by turns) finds the order PAID, once: one order of the buyer,
// its cart empty, the points captured exactly once, the unit sold once, the audit clean,
// and the retry again answers the same.
func TestCheckoutPayWithPointsPaused(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	e, link := commercetest.MySQLLinkedAt(t, testenv.Impatient(t, dsn, 2*time.Second))
	c := newCart(t, e, e.Service)
	p := e.Product(t, 3000, 1000)
	sold := int64(0)

	req := func(user string) cart.CheckoutRequest {
		return cart.CheckoutRequest{UserID: user, IdempotencyKey: "co", Points: 3000, PayWithPoints: true}
	}
	recover := func(t *testing.T, user string, settle bool, first commerce.Order) {
		if settle {
			e.Settle(t)
		}
		o, err := untilAnswered(t, func() (commerce.Order, error) { return c.Checkout(ctx, req(user)) })
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, o.Status)
		if first.ID != "" {
			assert.Equal(t, first.ID, o.ID, "the first answer was the order")
		}
		assert.Equal(t, testkit.Must(e.Service.GetOrder(ctx, o.ID, commerce.Actor{Admin: true}))(t), o)
		again, err := c.Checkout(ctx, req(user))
		require.NoError(t, err)
		assert.Equal(t, o, again)
		page, err := e.Service.ListOrders(ctx, user, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 1, "one order placed")
		assert.Empty(t, lines(t, c, user))
		assert.Equal(t, ledger.Balance{Available: 7000, Total: 7000}, testkit.Must(e.Service.Points(ctx, user))(t))
		sold++
		st := testkit.Must(e.Inventory.Stock(ctx, p))(t)
		assert.Equal(t, [3]int64{1000 - sold, 0, sold}, [3]int64{st.Available, st.Reserved, st.Sold})
		e.RequireClean(t)
	}
	setup := func(t *testing.T, user string) {
		e.GivePoints(t, user, 10_000)
		add(t, c, user, p, 1)
	}

	setup(t, "clean")
	link.Arm(nil, false)
	o, err := c.Checkout(ctx, req("clean"))
	_, seen := link.Disarm()
	require.NoError(t, err)
	recover(t, "clean", false, o)
	writes := 0
	for _, q := range seen {
		if isWrite(q) {
			writes++
		}
	}
	t.Logf("%d statements, %d writes: %q", len(seen), writes, seen)
	require.Contains(t, seen, "COMMIT")

	for n := 1; n <= writes; n++ {
		settle := n%2 == 0 // by turns: the retry alone, or the reconciler and Recover first
		user := fmt.Sprintf("u-%t-%d", settle, n)
		t.Run(user, func(t *testing.T) {
			setup(t, user)
			match := testenv.Nth(n, isWrite)
			var (
				once     sync.Once
				paused   = make(chan struct{})
				pausedAt string
			)
			link.Arm(func(q string) bool {
				if match(q) {
					once.Do(func() { pausedAt = q; server.Pause(t); close(paused) })
				}
				return false // never cut: the statement goes on to the paused server
			}, false)
			o, err := c.Checkout(ctx, req(user))
			link.Disarm()
			select {
			case <-paused:
			default:
				t.Fatalf("write %d was not sent (answered %v)", n, err)
			}
			require.Error(t, err, "paused at %q", pausedAt)
			require.True(t, depfail.Is(err), "paused at %q: %v", pausedAt, err)
			_, err = c.Checkout(ctx, req(user))
			require.True(t, depfail.Is(err), "the retry while paused: %v", err)
			server.Unpause(t)
			recover(t, user, settle, o)
		})
	}
}
