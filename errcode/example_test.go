package errcode_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/commercekit/commercekit/errcode"
)

// A package declares its sentinels once, with a code and a stable reason.
var (
	errOutOfStock = errcode.New(errcode.FailedPrecondition, "out_of_stock", "out of stock")
	errCartReused = errcode.Derive(errcode.ErrKeyReused, "cart: key reused")
)

// status is the short table an HTTP server keeps: one status per code (refserver's, in
// part).
func status(code errcode.Code) int {
	switch code {
	case errcode.OK:
		return http.StatusOK
	case errcode.InvalidArgument:
		return http.StatusBadRequest
	case errcode.NotFound:
		return http.StatusNotFound
	case errcode.Conflict:
		return http.StatusConflict
	case errcode.AlreadyExists, errcode.FailedPrecondition:
		return http.StatusUnprocessableEntity
	case errcode.DependencyUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// An answer to a client is read from any error chain, whichever package produced it: its
// status, its machine-readable reason, the field at fault and, for a dependency that
// failed, how long to wait before a retry.
func Example() {
	errs := []error{
		fmt.Errorf("place order: %w", errOutOfStock),
		fmt.Errorf("place order: line 2: %w", errcode.Invalid("qty", "must be 1..999")),
		&errcode.ReusedError{Kind: "cart", Key: "k-1", Err: errCartReused},
		fmt.Errorf("reserve: %w", &errcode.UnavailableError{Dependency: "redis", RetryAfter: 2 * time.Second, Err: io.ErrUnexpectedEOF}),
		errors.New("no code at all"),
	}
	for _, err := range errs {
		code, reason := errcode.Of(err)
		fmt.Printf("%d %s", status(code), reason)
		if f := errcode.FieldOf(err); f != "" {
			fmt.Printf(" field=%s", f)
		}
		if errors.Is(err, errcode.ErrUnavailable) {
			fmt.Printf(" retry-after=%v", errcode.RetryAfter(err, time.Second))
		}
		fmt.Println()
	}
	fmt.Println(errors.Is(errs[2], errcode.ErrKeyReused), errors.Is(errs[3], io.ErrUnexpectedEOF))
	// Output:
	// 422 out_of_stock
	// 400 invalid_request field=qty
	// 422 idempotency_key_reused
	// 503 dependency_unavailable retry-after=2s
	// 500 unknown
	// true true
}
