package dataplatform_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/outbox"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var ctx = context.Background()

func stores(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		require.NoError(t, outbox.CreateSchema(ctx, db))
		require.NoError(t, dataplatform.CreateSchema(ctx, db))
		fn(t, db)
	})
}

// paidOrders returns n payment-completed events and, mixed in, events of other types.
func paidOrders(n int) []outbox.Event {
	var out []outbox.Event
	for i := range n {
		order := fmt.Sprintf("ord_%03d", i)
		body := fmt.Sprintf(`{"schemaVersion":1,"orderId":%q,"userId":"u%d","status":"PAID","lines":[{"productId":"p","qty":%d,"unitPrice":100,"amount":%d}],`+
			`"subtotal":%d,"discount":0,"points":0,"amountDue":%d,"currency":"KRW","at":"2026-03-02T09:00:00Z"}`, order, i, i+1, 100*(i+1), 100*(i+1), 100*(i+1))
		out = append(out,
			outbox.Event{ID: order + "-order-created", Topic: "commerce-orders", Key: order, Type: commerce.EventOrderCreated, Payload: []byte(`{}`), Seq: 1},
			outbox.Event{ID: order + "-payment-completed", Topic: "payment-completed", Key: order, Type: commerce.EventPaymentCompleted, Payload: []byte(body), Seq: 1})
	}
	return out
}

// states records the breaker's transitions.
type states struct {
	mu  sync.Mutex
	got []string
}

func (s *states) observe(_, to string) { s.mu.Lock(); s.got = append(s.got, to); s.mu.Unlock() }
func (s *states) list() []string       { s.mu.Lock(); defer s.mu.Unlock(); return slices.Clone(s.got) }

func run(t *testing.T, n *dataplatform.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestOutageThenBack takes the platform down, then makes it slow (it records orders but
// answers after the client's timeout, so retries duplicate them), then brings it back:
// every paid order arrives with the body commerce wrote, every copy of it carries its
// event ID, none is dead-lettered, and the breaker opened and closed again.
func TestOutageThenBack(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		platform := platformsim.New()
		srv := httptest.NewServer(platform)
		t.Cleanup(srv.Close)
		var st states
		n, err := dataplatform.New(db, srv.URL+"/v1/orders", dataplatform.WithTimeout(150*time.Millisecond),
			dataplatform.WithRetries(2, 5*time.Millisecond, 10*time.Millisecond), dataplatform.WithBreaker(3, 4, 200*time.Millisecond),
			dataplatform.WithMaxAttempts(1000, 5*time.Millisecond, 50*time.Millisecond), dataplatform.WithInterval(5*time.Millisecond),
			dataplatform.WithBreakerObserver(st.observe))
		require.NoError(t, err)
		consumer, err := n.NewConsumer()
		require.NoError(t, err)
		events := paidOrders(20)
		require.NoError(t, consumer.Deliver(ctx, events))
		require.NoError(t, consumer.Deliver(ctx, events), "a redelivery queues nothing twice")

		platform.SetFaults(platformsim.Faults{Down: true})
		run(t, n)
		require.Eventually(t, func() bool { return slices.Contains(st.list(), "open") }, 10*time.Second, 5*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		assert.Empty(t, platform.Received())

		platform.SetFaults(platformsim.Faults{Latency: platformsim.Duration(300 * time.Millisecond)})
		require.Eventually(t, func() bool { return len(platform.Received()) >= 2 }, 10*time.Second, 5*time.Millisecond)
		platform.SetFaults(platformsim.Faults{})

		want := map[string][]byte{}
		for _, ev := range events {
			if ev.Type == commerce.EventPaymentCompleted {
				want[ev.ID] = ev.Payload
			}
		}
		require.Eventually(t, func() bool {
			sent, err := n.Deliveries(ctx, dataplatform.StateSent, 100)
			return err == nil && len(sent) == len(want)
		}, 20*time.Second, 10*time.Millisecond)

		got := platform.Received()
		keys := map[string]int{}
		for _, r := range got {
			require.Contains(t, want, r.IdempotencyKey)
			assert.Equal(t, string(want[r.IdempotencyKey]), string(r.Body), "the order arrives exactly as sent")
			assert.Equal(t, commerce.EventPaymentCompleted, r.EventType)
			keys[r.IdempotencyKey]++
		}
		assert.Len(t, keys, len(want), "every paid order arrived")
		assert.Greater(t, len(got), len(keys), "the slow phase caused duplicates, each with its event ID")
		dead, err := n.Deliveries(ctx, dataplatform.StateDead, 100)
		require.NoError(t, err)
		assert.Empty(t, dead)
		transitions := st.list()
		assert.Equal(t, "open", transitions[0])
		assert.Equal(t, "closed", transitions[len(transitions)-1], "the breaker closed again: %v", transitions)
		assert.False(t, n.BreakerOpen())
	})
}

// TestDeadLetterAndRedrive has the platform fail every call: each delivery is
// dead-lettered after its last attempt, and sent once redriven after the platform is fixed.
func TestDeadLetterAndRedrive(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		platform := platformsim.New()
		srv := httptest.NewServer(platform)
		t.Cleanup(srv.Close)
		n, err := dataplatform.New(db, srv.URL+"/v1/orders", dataplatform.WithRetries(2, time.Millisecond, time.Millisecond),
			dataplatform.WithBreaker(100, 100, time.Second), dataplatform.WithMaxAttempts(2, time.Millisecond, time.Millisecond))
		require.NoError(t, err)
		consumer, err := n.NewConsumer()
		require.NoError(t, err)
		require.NoError(t, consumer.Deliver(ctx, paidOrders(3)))

		platform.SetFaults(platformsim.Faults{ErrorRate: 1})
		require.Eventually(t, func() bool {
			_, err := n.SendOnce(ctx)
			require.NoError(t, err)
			dead, err := n.Deliveries(ctx, dataplatform.StateDead, 10)
			require.NoError(t, err)
			return len(dead) == 3
		}, 10*time.Second, 5*time.Millisecond)
		dead, err := n.Deliveries(ctx, dataplatform.StateDead, 10)
		require.NoError(t, err)
		for _, d := range dead {
			assert.Equal(t, 2, d.Attempts)
			assert.Contains(t, d.LastError, "status 500")
		}
		assert.Empty(t, platform.Received())

		platform.SetFaults(platformsim.Faults{})
		redriven, err := n.Redrive(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, redriven)
		sent, err := n.SendOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, sent)
		assert.Len(t, platform.Received(), 3)
	})
}

func TestNewValidates(t *testing.T) {
	db := testenv.SQLite(t)
	for _, target := range []string{"", "ftp://x/y", "http://"} {
		_, err := dataplatform.New(db, target)
		require.ErrorIs(t, err, dataplatform.ErrInvalidConfig, target)
	}
	construct := func(opts ...dataplatform.Option) (*dataplatform.Notifier, error) {
		return dataplatform.New(db, "http://127.0.0.1:1/v1/orders", opts...)
	}
	testkit.RefusesBadOptions(t, construct, map[string]dataplatform.Option{
		"WithTimeout: 0s":              dataplatform.WithTimeout(0),
		"WithRetries: 0 tries":         dataplatform.WithRetries(0, time.Second, time.Second),
		"WithRetries: 1 tries, 2s..1s": dataplatform.WithRetries(1, 2*time.Second, time.Second),
		"WithRetries: 1 tries, 0s..1s": dataplatform.WithRetries(1, 0, time.Second),
		"WithBreaker: 0 of 4":          dataplatform.WithBreaker(0, 4, time.Second),
		"WithBreaker: 5 of 4":          dataplatform.WithBreaker(5, 4, time.Second),
		"WithBreaker: 1 of 4, 0s":      dataplatform.WithBreaker(1, 4, 0),
		"WithMaxAttempts: 0, 1s..1s":   dataplatform.WithMaxAttempts(0, time.Second, time.Second),
		"WithMaxAttempts: 1, 1s..0s":   dataplatform.WithMaxAttempts(1, time.Second, 0),
		"WithInterval: -1s":            dataplatform.WithInterval(-time.Second),
		"WithHTTPClient: nil":          dataplatform.WithHTTPClient(nil),
		"WithClock: nil":               dataplatform.WithClock(nil),
		"WithLogger: nil":              dataplatform.WithLogger(nil),
		"WithBreakerObserver: nil":     dataplatform.WithBreakerObserver(nil),
	}, dataplatform.ErrInvalidConfig)
	_, err := construct(dataplatform.WithTimeout(time.Second), dataplatform.WithRetries(1, time.Millisecond, time.Millisecond),
		dataplatform.WithBreaker(1, 1, time.Second), dataplatform.WithMaxAttempts(1, time.Second, time.Second),
		dataplatform.WithInterval(time.Second))
	require.NoError(t, err)
}

// TestConcurrentSenders runs two notifiers (two processes) on one queue: each delivery is
// claimed by one of them, so with a healthy platform every order arrives exactly once.
func TestConcurrentSenders(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		platform := platformsim.New()
		srv := httptest.NewServer(platform)
		t.Cleanup(srv.Close)
		var senders []*dataplatform.Notifier
		for range 2 {
			n, err := dataplatform.New(db, srv.URL+"/v1/orders", dataplatform.WithInterval(time.Millisecond))
			require.NoError(t, err)
			senders = append(senders, n)
		}
		consumer, err := senders[0].NewConsumer()
		require.NoError(t, err)
		require.NoError(t, consumer.Deliver(ctx, paidOrders(60)))
		for _, n := range senders {
			run(t, n)
		}
		require.Eventually(t, func() bool {
			sent, err := senders[0].Deliveries(ctx, dataplatform.StateSent, 100)
			return err == nil && len(sent) == 60
		}, 20*time.Second, 10*time.Millisecond)
		keys := map[string]int{}
		for _, r := range platform.Received() {
			keys[r.IdempotencyKey]++
		}
		assert.Len(t, keys, 60)
		assert.Len(t, platform.Received(), 60, "no order sent twice")
	})
}
