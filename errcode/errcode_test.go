package errcode_test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/commercekit/commercekit/errcode"
	"github.com/stretchr/testify/assert"
)

func TestUnavailable(t *testing.T) {
	err := fmt.Errorf("reserve: %w", errcode.Unavailable("redis", io.ErrUnexpectedEOF))
	assert.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	var u *errcode.UnavailableError
	assert.True(t, errors.As(err, &u))
	assert.Equal(t, "redis", u.Dependency)
	assert.Equal(t, "reserve: redis unavailable: unexpected EOF", err.Error())

	assert.NoError(t, errcode.Unavailable("redis", nil))
	assert.Same(t, err, errcode.Unavailable("mysql", err), "already unavailable: unchanged")
}

func TestRetryAfter(t *testing.T) {
	assert.Equal(t, time.Second, errcode.RetryAfter(io.EOF, time.Second))
	rebuilding := &errcode.UnavailableError{Dependency: "redis (stock rebuilding)", RetryAfter: 3 * time.Second}
	assert.Equal(t, 3*time.Second, errcode.RetryAfter(fmt.Errorf("x: %w", rebuilding), time.Second))
	assert.Equal(t, "redis (stock rebuilding) unavailable", rebuilding.Error())
}

func ExampleUnavailable() {
	err := errcode.Unavailable("mysql", io.ErrUnexpectedEOF)
	fmt.Println(errors.Is(err, errcode.ErrUnavailable), errcode.RetryAfter(err, time.Second))
	// Output: true 1s
}
