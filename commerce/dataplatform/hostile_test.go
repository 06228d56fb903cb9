package dataplatform_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
	"github.com/commercekit/commercekit/outbox"
)

// TestForeignPaymentEventsAreNotSent: a Kafka topic takes any producer's messages.
// commerce writes an order's payment-completed event once, as "<order>-payment-completed"
// keyed by the order, and the notifier promises that every copy of a paid order carries
// that one event ID. The same sale re-sent under another ID (or key), or a body that is not
// the order the key names, must not reach the platform as another paid order under
// another Idempotency-Key: it is dead-lettered by the consumer, and the genuine order is
// sent once.
func TestForeignPaymentEventsAreNotSent(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		platform := platformsim.New()
		srv := httptest.NewServer(platform)
		t.Cleanup(srv.Close)
		n, err := dataplatform.New(db, srv.URL+"/v1/orders", dataplatform.WithRetries(1, time.Millisecond, time.Millisecond))
		require.NoError(t, err)
		consumer, err := n.NewConsumer(outbox.WithBackoff(time.Millisecond, time.Millisecond), outbox.WithMaxAttempts(2))
		require.NoError(t, err)

		genuine := paidOrders(1)[1] // ord_000-payment-completed
		otherID := genuine
		otherID.ID = "ord_000-payment-completed-again"
		otherKey := genuine
		otherKey.ID, otherKey.Key = "ord_999-payment-completed", "ord_999" // ord_000's body
		garbage := genuine
		garbage.ID, garbage.Key, garbage.Payload = "ord_998-payment-completed", "ord_998", []byte(`not json`)
		foreign := []outbox.Event{otherID, otherKey, garbage}
		require.NoError(t, consumer.Deliver(ctx, append([]outbox.Event{genuine}, foreign...)))

		sent, err := n.SendOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, sent)
		got := platform.Received()
		require.Len(t, got, 1, "one paid order, sent once")
		assert.Equal(t, genuine.ID, got[0].IdempotencyKey)
		assert.JSONEq(t, string(genuine.Payload), string(got[0].Body))

		dead, err := outbox.NewDeadLetterTable(db).List(ctx, dataplatform.ConsumerName, 0)
		require.NoError(t, err)
		var ids []string
		for _, d := range dead {
			ids = append(ids, d.ID)
		}
		assert.ElementsMatch(t, []string{otherID.ID, otherKey.ID, garbage.ID}, ids, "the foreign events are dead-lettered")
	})
}

// TestRedirectToGetIsNotADelivery: the platform (or a proxy in front of it, e.g. one
// sending http to https) answers the POST with a 301, 302 or 303; Go's HTTP client follows
// it with a GET, without the body, and that GET's 200 is no delivery: the order never
// reached the platform. The delivery must stay pending, and arrive once the platform takes
// POSTs again. (A 307/308 redirect repeats the POST with its body and is a delivery.)
func TestRedirectToGetIsNotADelivery(t *testing.T) {
	stores(t, func(t *testing.T, db *bun.DB) {
		for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect} {
			_, err := db.NewDelete().Table(dataplatform.TableDeliveries).Where("1 = 1").Exec(ctx)
			require.NoError(t, err)
			var (
				mu       sync.Mutex
				posted   [][]byte
				redirect = true
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.URL.Path == "/v1/orders" && redirect:
					http.Redirect(w, r, "/v2/orders", status)
				case r.Method == http.MethodPost:
					body, _ := io.ReadAll(r.Body)
					posted = append(posted, body)
					w.WriteHeader(http.StatusAccepted)
				default:
					w.WriteHeader(http.StatusOK) // a landing page
				}
			}))
			n, err := dataplatform.New(db, srv.URL+"/v1/orders", dataplatform.WithRetries(1, time.Millisecond, time.Millisecond),
				dataplatform.WithBreaker(100, 100, time.Second), dataplatform.WithMaxAttempts(5, time.Millisecond, time.Millisecond))
			require.NoError(t, err)
			consumer, err := n.NewConsumer()
			require.NoError(t, err)
			ev := paidOrders(1)[1] // another order each time, as commerce writes it
			order := fmt.Sprintf("r%d", status)
			ev.ID, ev.Key = order+"-payment-completed", order
			ev.Payload = bytes.Replace(ev.Payload, []byte(`"orderId":"ord_000"`), []byte(`"orderId":"`+order+`"`), 1)
			require.NoError(t, consumer.Deliver(ctx, []outbox.Event{ev}))
			sent, err := n.SendOnce(ctx)
			require.NoError(t, err)
			got, err := n.Deliveries(ctx, "", 10)
			require.NoError(t, err)
			require.Len(t, got, 1)
			mu.Lock()
			received := len(posted)
			redirect = false
			mu.Unlock()
			if status == http.StatusTemporaryRedirect {
				assert.Equal(t, 1, sent, "307 repeats the POST")
				assert.Equal(t, 1, received)
				assert.Equal(t, dataplatform.StateSent, got[0].State)
				srv.Close()
				continue
			}
			assert.Equal(t, 0, received, "status %d: nothing was POSTed", status)
			assert.Equal(t, 0, sent, "status %d: not a delivery", status)
			assert.Equal(t, dataplatform.StatePending, got[0].State, "status %d", status)
			// The platform takes POSTs again: the order arrives.
			require.Eventually(t, func() bool {
				_, err := n.SendOnce(ctx)
				require.NoError(t, err)
				mu.Lock()
				defer mu.Unlock()
				return len(posted) == 1
			}, 10*time.Second, 5*time.Millisecond)
			mu.Lock()
			assert.JSONEq(t, string(ev.Payload), string(posted[0]), "status %d", status)
			mu.Unlock()
			srv.Close()
		}
	})
}
