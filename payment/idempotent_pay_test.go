package payment_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestIdempotencyKeyChargesOnce is the end-to-end guarantee of an idempotent payment
// request: 50 clients send the same request with one Idempotency-Key at once (payments on
// MySQL, keys on Redis, a PG that takes a few milliseconds). The PG charges exactly once;
// every client gets either the first request's response or ErrInProgress; every retry after
// the first completes gets the byte-identical stored response; and the key with another
// body is rejected.
func TestIdempotencyKeyChargesOnce(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, payment.CreateSchema(ctx, db))
	sim := pgsim.New(pgsim.WithLatency(5*time.Millisecond, 10*time.Millisecond))
	t.Cleanup(sim.Close)
	svc, err := payment.New(db, sim)
	require.NoError(t, err)
	keys, err := idempotency.New(redisidempotency.New(testenv.Redis(t)))
	require.NoError(t, err)

	pay := func(body []byte) idempotency.Func {
		return func(ctx context.Context) (idempotency.Response, error) {
			var req payment.PayRequest
			if err := json.Unmarshal(body, &req); err != nil {
				return idempotency.Response{Status: 400, ErrorCode: "malformed"}, nil
			}
			p, err := svc.Pay(ctx, req)
			var decline *payment.DeclineError
			switch {
			case err == nil:
			case errors.As(err, &decline):
				return idempotency.Response{Status: 402, ErrorCode: "declined"}, nil
			default:
				return idempotency.Response{}, err // transient: release the key for a retry
			}
			out, err := json.Marshal(p)
			return idempotency.Response{Status: 201, Body: out}, err
		}
	}
	body, err := json.Marshal(payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 12_000, Currency: "KRW", Method: payment.MethodCard})
	require.NoError(t, err)
	fp := idempotency.FingerprintRequest("POST", "/v1/orders/order-1/payments", body)

	const clients = 50
	type result struct {
		resp     idempotency.Response
		replayed bool
		err      error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, replayed, err := keys.Do(ctx, "user-1", "key-1", fp, pay(body))
			results[i] = result{r, replayed, err}
		}()
	}
	close(start)
	wg.Wait()

	var first *idempotency.Response
	inProgress := 0
	for _, r := range results {
		if errors.Is(r.err, idempotency.ErrInProgress) {
			inProgress++
			continue
		}
		require.NoError(t, r.err)
		require.Equal(t, 201, r.resp.Status)
		if first == nil {
			first = &r.resp
		}
		assert.Equal(t, first.Body, r.resp.Body, "every completed answer is the first request's response")
	}
	require.NotNil(t, first, "one request ran")
	assert.Equal(t, 1, sim.Stats().Charges, "the PG charged exactly once")
	assert.Equal(t, 1, sim.Charges("pay-1"))
	t.Logf("%d clients: %d got the response, %d got ErrInProgress; PG charges: %d",
		clients, clients-inProgress, inProgress, sim.Stats().Charges)

	for range 5 {
		r, replayed, err := keys.Do(ctx, "user-1", "key-1", fp, pay(body))
		require.NoError(t, err)
		assert.True(t, replayed)
		assert.Equal(t, first.Body, r.Body, "a retry replays the stored response byte for byte")
	}
	other, err := json.Marshal(payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 99_000, Currency: "KRW", Method: payment.MethodCard})
	require.NoError(t, err)
	_, _, err = keys.Do(ctx, "user-1", "key-1", idempotency.FingerprintRequest("POST", "/v1/orders/order-1/payments", other), pay(other))
	assert.ErrorIs(t, err, idempotency.ErrKeyReused)
	assert.Equal(t, 1, sim.Stats().Charges, "nothing more was charged")
}
