package dataplatform_test

import (
	"net/http/httptest"
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
