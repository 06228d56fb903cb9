package redisidempotency_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
)

// Idempotency keys kept in Redis, shared by every instance of a service: the first request
// with a key runs, a concurrent one with the same key is refused as in progress, a later
// one gets the stored response. (It needs a Redis server, so it is compiled, not run.)
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	store, err := idempotency.New(redisidempotency.New(rdb, redisidempotency.WithKeyPrefix("shop:idem:")))
	if err != nil {
		panic(err)
	}
	body := []byte(`{"order":"o-1","amount":15000}`)
	fp := idempotency.FingerprintRequest("POST", "/v1/payments", body)
	resp, replayed, err := store.Do(ctx, "merchant-42", "9d4c7a6e", fp, func(ctx context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 201, Body: []byte(`{"payment":"p-1"}`)}, nil // charge the card here
	})
	if status, ok := idempotency.HTTPStatus(err); ok {
		fmt.Println(status, err) // 409 in progress, 422 key reused with another request, 503 Redis down
		return
	}
	fmt.Println(resp.Status, string(resp.Body), "replayed:", replayed)
}
