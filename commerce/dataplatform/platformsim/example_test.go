package platformsim_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
)

// The platform records what it accepts; a fault makes it answer 500 without recording.
func Example() {
	p := platformsim.New()
	srv := httptest.NewServer(p)
	defer srv.Close()

	post := func(key string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/orders", strings.NewReader(`{"orderId":"o-1"}`))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("X-Event-Type", "payment-completed")
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	fmt.Println(post("o-1-paid"))
	p.SetFaults(platformsim.Faults{ErrorRate: 1})
	fmt.Println(post("o-2-paid"))
	for _, r := range p.Received() {
		fmt.Println(r.IdempotencyKey, r.EventType, string(r.Body))
	}
	// Output:
	// 202
	// 500
	// o-1-paid payment-completed {"orderId":"o-1"}
}
