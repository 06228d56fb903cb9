package idempotencytest

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/commercekit/commercekit/payment/idempotency"
)

// Benchmark measures Store.Do on the backends h makes, with Clients concurrent clients:
//   - "fresh": a new key per request (claim, run an empty fn, store the response);
//   - "replay": requests on 1,000 completed keys (one lookup each).
//
// Besides ns/op it reports req/s, the throughput of all clients together.
func Benchmark(b *testing.B, h Harness) {
	resp := idempotency.Response{Status: 201, Body: []byte(`{"payment":"p-1","status":"APPROVED","amount":15000}`)}
	fn := func(context.Context) (idempotency.Response, error) { return resp, nil }
	fp := idempotency.FingerprintRequest("POST", "/payments", []byte(`{"order":"o-1","amount":15000}`))

	run := func(b *testing.B, store *idempotency.Store, key func(i int64) string) {
		var seq atomic.Int64
		b.SetParallelism(max(1, (Clients+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := store.Do(context.Background(), "bench", key(seq.Add(1)), fp, fn); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}

	b.Run("fresh", func(b *testing.B) {
		store := benchStore(b, h)
		run(b, store, func(i int64) string { return fmt.Sprintf("fresh-%d", i) })
	})
	b.Run("replay", func(b *testing.B) {
		store := benchStore(b, h)
		const keys = 1000
		for i := range keys {
			if _, _, err := store.Do(context.Background(), "bench", fmt.Sprintf("replay-%d", i), fp, fn); err != nil {
				b.Fatal(err)
			}
		}
		run(b, store, func(i int64) string { return fmt.Sprintf("replay-%d", i%keys) })
	})
}

func benchStore(b *testing.B, h Harness) *idempotency.Store {
	s, err := idempotency.New(h.NewBackend(b))
	if err != nil {
		b.Fatal(err)
	}
	return s
}
