package depfail_test

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/depfail"
)

// A backend wraps the errors of its client once; callers then match
// errcode.ErrUnavailable, and the original error is still there.
func ExampleWrap() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more

	_, err := net.Dial("tcp", addr)
	err = depfail.Wrap("redis", fmt.Errorf("reserving stock: %w", err))
	var u *errcode.UnavailableError
	fmt.Println(errors.Is(err, errcode.ErrUnavailable), errors.As(err, &u) && u.Dependency == "redis")

	// The caller's own context ending is not a dependency failure.
	fmt.Println(depfail.Is(context.Canceled))
	// Output:
	// true true
	// false
}
