package payment_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestRefundWebhookMySQLPaused: a card payment of 5,000 won is approved, and a refund of
// 2,000 of it is made at the PG but its answer lost, so the refund stays PENDING. The PG's
// genuine webhook announcing the refund then arrives while the Service's database server is
// paused (docker pause: connections stay open, nothing answers); the DSN reads and writes
// with a short timeout, so the handler gives up. It must fail as the database being
// unavailable (errcode.ErrUnavailable, which the webhook route answers 503 so the PG
// delivers it again), not with a domain answer (the webhook invalid, unconfirmed, or the
// refund rejected), and nothing may be refunded again at the PG. Once the server resumes,
// the PG's redelivery settles the refund SUCCEEDED, once: the payment PARTIALLY_REFUNDED
// with exactly 2,000 refunded and nothing pending, the PG having made exactly one refund;
// a third delivery changes nothing.
func TestRefundWebhookMySQLPaused(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db := testenv.MySQLAt(t, testenv.Impatient(t, dsn, 2*time.Second))
	ctx := context.Background()
	require.NoError(t, payment.CreateSchema(ctx, db))

	e := newEnv(t, db, nil)
	require.ErrorIs(t, e.refundFaulted(t, "pay-1", "r-1", pgsim.FaultLostResponse), payment.ErrOutcomeUnknown)
	e.requireRefundHeld(t, payment.Refund{PaymentID: "pay-1", State: payment.RefundPending}, 2000)
	require.Equal(t, 1, e.sim.Stats().Cancels, "the PG made the refund whose answer was lost")
	body, sig, err := e.sim.CancelWebhook("r-1")
	require.NoError(t, err)

	server.Pause(t)
	err = e.svc.HandleWebhook(ctx, body, sig)
	t.Logf("while paused: %v", err)
	e.requirePausedUnavailable(t, err)
	server.Unpause(t)

	e.requireRedeliverySettles(t, "pay-1", "r-1", body, sig, 1)
}

// requirePausedUnavailable checks err, the handling of a refund webhook that met the
// database paused: it fails as the database being unavailable (errcode.ErrUnavailable, a
// 503 the PG redelivers on), with no domain answer, and the PG made no refund beyond the
// one whose answer was lost.
func (e *env) requirePausedUnavailable(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err, "the database is paused")
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
	for _, domain := range []error{payment.ErrInvalidWebhook, payment.ErrWebhookUnconfirmed, payment.ErrRefundRejected,
		payment.ErrIllegalTransition, payment.ErrRefundNotFound, payment.ErrPaymentNotFound} {
		assert.NotErrorIs(t, err, domain)
	}
	assert.Equal(t, 1, e.sim.Stats().Cancels, "nothing refunded again while paused")
}

// requireRedeliverySettles delivers the refund webhook (body, sig) of refundFaulted's
// refund refundID of payment id again, the database resumed, and checks the exact end
// state, then again after a third delivery, which changes nothing: the refund SUCCEEDED
// with 2,000, the payment PARTIALLY_REFUNDED with nothing pending, one refund made at the
// PG, the Observer told of the settlement told times (1; 0 for a settlement that committed
// while its outcome could not be read, see payment.Observer) and of no contradiction,
// CrossCheck clean.
func (e *env) requireRedeliverySettles(t *testing.T, id, refundID string, body []byte, sig string, told int) {
	t.Helper()
	ctx := context.Background()
	exact := func(t *testing.T, what string) {
		t.Helper()
		assert.Equal(t, []string{refundID + ":SUCCEEDED:2000"}, e.refunds(t, id), what)
		p := e.get(t, id)
		assert.Equal(t, payment.StatePartiallyRefunded, p.State, what)
		assert.Equal(t, int64(2000), p.Refunded, what)
		assert.Zero(t, p.RefundPending, what)
		st, err := e.sim.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, int64(2000), st.Canceled, what+": refunded once at the PG")
		assert.Equal(t, 1, e.sim.Stats().Cancels, what+": one refund made at the PG")
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>PARTIALLY_REFUNDED:refund"},
			e.history(t, id), what)
		assert.Equal(t, told, e.obs.Count("refund_settled", map[string]string{"refund_id": refundID, "state": string(payment.RefundSucceeded)}),
			what+": the refund's settlement told")
		assert.Equal(t, told, e.obs.count(id, payment.StatePartiallyRefunded), what+": the payment's move told")
		assert.Empty(t, e.obs.contradicted(), what)
	}
	require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "the redelivery once resumed")
	exact(t, "the redelivery")
	before := e.get(t, id)
	require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "a third delivery")
	exact(t, "a third delivery")
	assert.Equal(t, before, e.get(t, id), "a third delivery changes nothing")
	e.noMismatch(t, id)
}

// TestRefundWebhookMySQLPausedMidHandling: as TestRefundWebhookMySQLPaused, but the
// Service's database server is paused (docker pause) in the middle of the webhook's
// handling, once the handler has read the refund PENDING and asked the PG, which confirms
// the refund, and before it has recorded the settlement: right after the PG's answer, to
// the refund sent again under its idempotency key (within the key window) or to the
// Status asked of the payment (past it), and just before each statement of the
// settlement's transaction (the payment locked, the refund's update, the payment's, its
// transition, the COMMIT). The handling must fail as the database being unavailable, with
// no domain answer, within a bound the DSN's 2s timeouts set, and the PG must make no
// refund again. Once the server resumes, the redelivery (or, when the COMMIT reached the
// server before it paused and ran when it resumed, the record as it stands) settles the
// refund exactly as in TestRefundWebhookMySQLPaused, once; a third delivery changes
// nothing. A settlement whose COMMIT ran while the server could not be asked whether it
// had is not told to the Observer (payment.Observer says so); every other is told once.
func TestRefundWebhookMySQLPausedMidHandling(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db := testenv.MySQLAt(t, testenv.Impatient(t, dsn, 2*time.Second))
	ctx := context.Background()
	require.NoError(t, payment.CreateSchema(ctx, db))
	// A handful of statements, each given up on after 2s, and the docker pause itself.
	const bound = 20 * time.Second

	for i, c := range []struct {
		name string
		// late: the refund's key window has passed, so the handler asks the PG for Status
		// rather than sending the refund again.
		late bool
		// call (a gateway call) or else match (the nth statement containing all of them)
		// is where the server is paused: after the PG's answer, before the statement.
		call  string
		n     int
		match []string
		// committed: the settlement commits although the handler fails (its COMMIT was
		// sent, and ran once the server resumed).
		committed bool
	}{
		{name: "after the PG's answer to the refund sent again", call: "Cancel"},
		{name: "after the PG's answer to Status", late: true, call: "Status"},
		{name: "before the payment is locked", n: 1, match: []string{"FOR UPDATE"}},
		{name: "before the refund's update", n: 1, match: []string{"UPDATE `payment_refunds`"}},
		{name: "before the payment's update", n: 1, match: []string{"UPDATE `payment_payments`"}},
		{name: "before the transition's insert", n: 1, match: []string{"INSERT INTO `payment_transitions`"}},
		{name: "before the COMMIT", n: 1, match: []string{"COMMIT"}, committed: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, refundID := "mid-"+string(rune('a'+i)), "r-mid-"+string(rune('a'+i))
			mp := &midPause{server: server}
			t.Cleanup(mp.resume)
			var e *env
			opts := []pgsim.Option{pgsim.WithKeyRetention(pgKeyRetention), pgsim.WithClock(func() time.Time { return e.clock.Now() })}
			e = newEnv(t, db.WithQueryHook(mp), mp.wrap, opts...)
			require.ErrorIs(t, e.refundFaulted(t, id, refundID, pgsim.FaultLostResponse), payment.ErrOutcomeUnknown)
			e.requireRefundHeld(t, payment.Refund{PaymentID: id, State: payment.RefundPending}, 2000)
			require.Equal(t, 1, e.sim.Stats().Cancels, "the PG made the refund whose answer was lost")
			body, sig, err := e.sim.CancelWebhook(refundID)
			require.NoError(t, err)
			if c.late {
				e.clock.Advance(pgKeyRetention + time.Hour)
			}

			mp.arm(t, c.call, c.n, c.match...)
			start := time.Now()
			err = e.svc.HandleWebhook(ctx, body, sig)
			took := time.Since(start)
			at := mp.disarm()
			t.Logf("paused at %q; the handling failed after %v: %v", at, took.Round(time.Millisecond), err)
			require.NotEmpty(t, at, "the server was paused mid-handling")
			e.requirePausedUnavailable(t, err)
			assert.Less(t, took, bound, "the handling gave up within the DSN's timeouts")
			assert.Zero(t, e.obs.Count("refund_settled", nil), "nothing told while paused")
			mp.resume()

			if c.committed {
				// The COMMIT, sent before the pause, runs once the server resumes (its session
				// thaws and reads it before the connection's close): the record holds the
				// settlement before any redelivery.
				require.EventuallyWithT(t, func(c *assert.CollectT) {
					r, err := e.svc.GetRefund(ctx, refundID)
					require.NoError(c, err)
					assert.Equal(c, payment.RefundSucceeded, r.State, "the COMMIT sent before the pause ran")
				}, 10*time.Second, 50*time.Millisecond)
			} else {
				e.requireRefundHeld(t, payment.Refund{PaymentID: id, State: payment.RefundPending}, 2000)
			}
			told := 1
			if c.committed {
				told = 0
			}
			e.requireRedeliverySettles(t, id, refundID, body, sig, told)
		})
	}
}

// midPause pauses a test's own database server (docker pause) once, at the point it is
// armed for: right after the PG answers a gateway call (wrap puts it in front of the
// simulator), or just before a statement (it is a bun query hook). Both run on the
// goroutine handling the webhook, which the pause leaves with its database frozen.
type midPause struct {
	server *testenv.Own

	mu     sync.Mutex
	t      *testing.T
	call   string
	match  []string
	n      int
	seen   int
	at     string
	paused *testing.T // the test that paused the server, nil while it runs
}

// wrap puts m in front of the simulator (for newEnv).
func (m *midPause) wrap(s *pgsim.Simulator) payment.Gateway { return midPauseGateway{s, m} }

// arm makes m pause the server after the PG's answer to call ("Cancel" or "Status"), or,
// call empty, before the nth statement containing every one of match.
func (m *midPause) arm(t *testing.T, call string, n int, match ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t, m.call, m.n, m.match, m.seen, m.at = t, call, n, match, 0, ""
}

// disarm stops m and returns where it paused the server ("" for nowhere).
func (m *midPause) disarm() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t = nil
	return m.at
}

// resume unpauses the server if m paused it.
func (m *midPause) resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.paused != nil {
		m.server.Unpause(m.paused)
		m.paused = nil
	}
}

// pauseAt pauses the server if m is armed, noting at as where.
func (m *midPause) pauseAt(at string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.t == nil || m.at != "" {
		return
	}
	m.at, m.paused = at, m.t
	m.server.Pause(m.t)
}

// BeforeQuery implements bun.QueryHook.
func (m *midPause) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	m.mu.Lock()
	hit := m.t != nil && m.at == "" && m.call == "" && containsAll(e.Query, m.match)
	if hit {
		m.seen++
		hit = m.seen == m.n
	}
	m.mu.Unlock()
	if hit {
		m.pauseAt(e.Query)
	}
	return ctx
}

// AfterQuery implements bun.QueryHook.
func (m *midPause) AfterQuery(context.Context, *bun.QueryEvent) {}

// containsAll reports whether s contains every one of subs, and subs is not empty.
func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return len(subs) > 0
}

// midPauseGateway is the simulator with m pausing the server after the answer of the call
// m is armed for.
type midPauseGateway struct {
	payment.Gateway
	m *midPause
}

// Cancel implements payment.Gateway.
func (g midPauseGateway) Cancel(ctx context.Context, req payment.CancelRequest) (payment.Cancellation, error) {
	c, err := g.Gateway.Cancel(ctx, req)
	g.m.answered("Cancel", req.CancelID)
	return c, err
}

// Status implements payment.Gateway.
func (g midPauseGateway) Status(ctx context.Context, id string) (payment.GatewayPayment, error) {
	st, err := g.Gateway.Status(ctx, id)
	g.m.answered("Status", id)
	return st, err
}

// answered pauses the server if m is armed for call, which the PG just answered about of.
func (m *midPause) answered(call, of string) {
	m.mu.Lock()
	hit := m.t != nil && m.call == call
	m.mu.Unlock()
	if hit {
		m.pauseAt("the PG's answer to " + call + " " + of)
	}
}
