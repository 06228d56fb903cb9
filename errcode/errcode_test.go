package errcode_test

import (
	"context"
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

var (
	errShort  = errcode.New(errcode.FailedPrecondition, "out_of_stock", "stock: out of stock")
	errNarrow = errcode.New(errcode.FailedPrecondition, "too_many_lines", "stock: too many lines", errcode.ErrInvalidArgument)
	errMine   = errcode.Derive(errcode.ErrKeyReused, "stock: reservation ID reused")
)

func TestCodeOf(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   errcode.Code
		reason string
	}{
		{nil, errcode.OK, ""},
		{errShort, errcode.FailedPrecondition, "out_of_stock"},
		{fmt.Errorf("place: %w", errShort), errcode.FailedPrecondition, "out_of_stock"},
		{errMine, errcode.AlreadyExists, "idempotency_key_reused"},
		{errcode.Invalid("qty", "must be positive"), errcode.InvalidArgument, "invalid_request"},
		{&errcode.InvalidError{Field: "lines", Reason: "51", Err: errNarrow}, errcode.FailedPrecondition, "too_many_lines"},
		{fmt.Errorf("%w: %w", errShort, errcode.Unavailable("redis", io.EOF)), errcode.DependencyUnavailable, "dependency_unavailable"},
		{fmt.Errorf("x: %w", context.Canceled), errcode.Canceled, "canceled"},
		{context.DeadlineExceeded, errcode.DeadlineExceeded, "deadline_exceeded"},
		{fmt.Errorf("%w (%w)", errShort, context.Canceled), errcode.FailedPrecondition, "out_of_stock"},
		{io.EOF, errcode.Unknown, "unknown"},
	} {
		code, reason := errcode.Of(c.err)
		assert.Equal(t, c.code, code, "%v", c.err)
		assert.Equal(t, c.reason, reason, "%v", c.err)
		assert.Equal(t, c.code, errcode.CodeOf(c.err))
		assert.Equal(t, c.reason, errcode.ReasonOf(c.err))
	}
}

func TestSentinelsMatch(t *testing.T) {
	assert.ErrorIs(t, errMine, errcode.ErrKeyReused, "a derived sentinel matches its parent")
	assert.NotErrorIs(t, errcode.ErrKeyReused, errMine)
	assert.NotErrorIs(t, errcode.Derive(errcode.ErrKeyReused, "other"), errMine, "derived sentinels stay distinct")
	assert.ErrorIs(t, errNarrow, errcode.ErrInvalidArgument)
	assert.NotErrorIs(t, errShort, errcode.ErrInvalidArgument)
	assert.Equal(t, "stock: reservation ID reused", errMine.Error())
}

func TestInvalidError(t *testing.T) {
	err := fmt.Errorf("reserve: %w", errcode.Invalid("qty", "must be positive"))
	assert.ErrorIs(t, err, errcode.ErrInvalidArgument)
	assert.Equal(t, "qty", errcode.FieldOf(err))
	assert.Equal(t, "reserve: invalid qty: must be positive", err.Error())

	narrow := &errcode.InvalidError{Field: "lines", Reason: "more than 50", Err: errNarrow}
	assert.ErrorIs(t, narrow, errNarrow)
	assert.ErrorIs(t, narrow, errcode.ErrInvalidArgument)
	assert.Equal(t, "stock: too many lines: lines: more than 50", narrow.Error())
	assert.Equal(t, "", errcode.FieldOf(io.EOF))
}

func TestCodeString(t *testing.T) {
	assert.Equal(t, "invalid_argument", errcode.InvalidArgument.String())
	assert.Equal(t, "dependency_unavailable", errcode.DependencyUnavailable.String())
	assert.Equal(t, "internal", errcode.Internal.String())
	assert.Equal(t, "code(99)", errcode.Code(99).String())
}

func ExampleCodeOf() {
	errOutOfStock := errcode.New(errcode.FailedPrecondition, "out_of_stock", "shop: out of stock")
	err := fmt.Errorf("checkout: %w", errOutOfStock)
	fmt.Println(errcode.CodeOf(err), errcode.ReasonOf(err))
	err = fmt.Errorf("checkout: %w", errcode.Invalid("qty", "must be positive"))
	fmt.Println(errcode.CodeOf(err), errcode.ReasonOf(err), errcode.FieldOf(err))
	// Output:
	// failed_precondition out_of_stock
	// invalid_argument invalid_request qty
}
