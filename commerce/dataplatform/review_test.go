package dataplatform_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/outbox"
)

// TestLeaseOutlastsALongAttempt gives the notifier a long call timeout (40s, 3 tries): an
// attempt may then take two minutes. While sender A's call hangs, sender B, whose clock is
// two minutes later, must not take the delivery over and send it a second time.
func TestLeaseOutlastsALongAttempt(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		var posts atomic.Int32
		inFlight, release := make(chan struct{}), make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if posts.Add(1) == 1 {
				close(inFlight)
				<-release
			}
			w.WriteHeader(http.StatusAccepted)
		}))
		t.Cleanup(srv.Close)
		t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
		newSender := func(at time.Time) *dataplatform.Notifier {
			n, err := dataplatform.New(db, srv.URL, dataplatform.WithTimeout(40*time.Second),
				dataplatform.WithClock(func() time.Time { return at }))
			require.NoError(t, err)
			return n
		}
		a, b := newSender(t0), newSender(t0.Add(3*40*time.Second))
		consumer, err := a.NewConsumer()
		require.NoError(t, err)
		require.NoError(t, consumer.Deliver(ctx, paidOrders(1)))

		done := make(chan error, 1)
		go func() { _, err := a.SendOnce(context.Background()); done <- err }()
		<-inFlight
		n, err := b.SendOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 0, n, "B took over a delivery whose attempt may still be running")
		close(release)
		require.NoError(t, <-done)
		assert.Equal(t, int32(1), posts.Load(), "the order was posted twice")
		sent, err := a.Deliveries(ctx, dataplatform.StateSent, 10)
		require.NoError(t, err)
		assert.Len(t, sent, 1)
	})
}

// TestLongOutageKillsNoDelivery: the platform stays down across many breaker cycles (each
// half-open probe fails). The deliveries wait; none is dead-lettered, since an outage
// delays deliveries and does not kill them. Once the platform is back, all are sent.
func TestLongOutageKillsNoDelivery(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		var down atomic.Bool
		down.Store(true)
		var received atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			received.Add(1)
			w.WriteHeader(http.StatusAccepted)
		}))
		t.Cleanup(srv.Close)
		n, err := dataplatform.New(db, srv.URL, dataplatform.WithRetries(1, time.Millisecond, time.Millisecond),
			dataplatform.WithBreaker(2, 4, 10*time.Millisecond), dataplatform.WithMaxAttempts(3, time.Millisecond, 2*time.Millisecond),
			dataplatform.WithInterval(time.Millisecond))
		require.NoError(t, err)
		consumer, err := n.NewConsumer()
		require.NoError(t, err)
		require.NoError(t, consumer.Deliver(ctx, paidOrders(4)))
		for start := time.Now(); time.Since(start) < time.Second; { // some 100 breaker cycles
			_, err := n.SendOnce(ctx)
			require.NoError(t, err)
			time.Sleep(time.Millisecond)
		}
		dead, err := n.Deliveries(context.Background(), dataplatform.StateDead, 10)
		require.NoError(t, err)
		assert.Empty(t, dead, "an outage killed deliveries")

		down.Store(false)
		time.Sleep(20 * time.Millisecond) // the breaker's delay
		require.Eventually(t, func() bool {
			_, err := n.SendOnce(context.Background())
			return err == nil && int(received.Load()) == 4
		}, 5*time.Second, 5*time.Millisecond)
	})
}

// TestStatusClassification: a 4xx refusal dead-letters the delivery at once (no retry can
// change it), except 408 and 429, which are retried like a 5xx.
func TestStatusClassification(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		for _, c := range []struct {
			status int
			state  string
		}{{400, dataplatform.StateDead}, {422, dataplatform.StateDead}, {408, dataplatform.StatePending},
			{429, dataplatform.StatePending}, {500, dataplatform.StatePending}, {503, dataplatform.StatePending}} {
			_, err := db.NewDelete().Table(dataplatform.TableDeliveries).Where("1 = 1").Exec(ctx)
			require.NoError(t, err)
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				calls.Add(1)
				w.WriteHeader(c.status)
			}))
			n, err := dataplatform.New(db, srv.URL, dataplatform.WithRetries(2, time.Millisecond, time.Millisecond),
				dataplatform.WithBreaker(100, 100, time.Second))
			require.NoError(t, err)
			consumer, err := n.NewConsumer()
			require.NoError(t, err)
			ev := paidOrders(1)[1] // another order each time, as commerce writes it
			order := fmt.Sprintf("s%d", c.status)
			ev.ID, ev.Key = order+"-payment-completed", order
			ev.Payload = bytes.Replace(ev.Payload, []byte(`"orderId":"ord_000"`), []byte(`"orderId":"`+order+`"`), 1)
			require.NoError(t, consumer.Deliver(ctx, []outbox.Event{ev}))
			_, err = n.SendOnce(ctx)
			require.NoError(t, err)
			srv.Close()
			got, err := n.Deliveries(ctx, "", 10)
			require.NoError(t, err)
			require.Len(t, got, 1)
			assert.Equal(t, c.state, got[0].State, "status %d", c.status)
			assert.Equal(t, 1, got[0].Attempts, "status %d", c.status)
			want := int32(2)
			if c.state == dataplatform.StateDead {
				want = 1
			}
			assert.Equal(t, want, calls.Load(), "calls for status %d", c.status)
		}
	})
}
