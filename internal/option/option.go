// Package option holds the rule every commercekit constructor with functional options
// follows: an option given a value it cannot use (a zero or negative duration or count
// where a positive one is needed, a nil clock, logger or observer) is not ignored and does
// not fall back to the default; the constructor returns no value and an
// *errcode.InvalidError whose Field is the option's name and whose Reason shows the value,
// so errors.Is(err, errcode.ErrInvalidArgument) and errcode.FieldOf(err) work. Leaving an
// option out is how a caller asks for its default.
//
// A constructor's settings embed an Errors; its options set fields through Positive and
// NotNil (or record their own refusal with Reject), and the constructor runs them with
// Apply, which returns the first refusal. A package with a sentinel of its own for a bad configuration sets
// Errors.Sentinel, which the *errcode.InvalidError then matches instead of
// errcode.ErrInvalidArgument.
package option

import (
	"fmt"
	"reflect"

	"github.com/commercekit/commercekit/errcode"
)

// Errors records the first invalid value given to a constructor's options.
type Errors struct {
	// Sentinel is the Err of the *errcode.InvalidError returned; nil means
	// errcode.ErrInvalidArgument.
	Sentinel error
	first    error
}

// Reject records that option name was given an invalid value, reason saying which and
// why ("0 is not positive"), unless an earlier option was refused already.
func (e *Errors) Reject(name, reason string) {
	if e.first == nil {
		e.first = &errcode.InvalidError{Field: name, Reason: reason, Err: e.Sentinel}
	}
}

// Err returns the first refusal as an *errcode.InvalidError, or nil.
func (e *Errors) Err() error { return e.first }

// Positive sets *dst to v when v is positive, and otherwise records the refusal of option
// name in e.
func Positive[T ~int | ~int64 | ~uint](e *Errors, dst *T, name string, v T) {
	if v <= 0 {
		e.Reject(name, fmt.Sprintf("%v is not positive", v))
		return
	}
	*dst = v
}

// NotNil sets *dst to v when v is not nil (a nil func, pointer or interface), and otherwise
// records the refusal of option name in e.
func NotNil[T any](e *Errors, dst *T, name string, v T) {
	if isNil(v) {
		e.Reject(name, "nil is not allowed")
		return
	}
	*dst = v
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// Apply runs opts (nil ones are skipped) on the settings s, which embed an Errors, and
// returns the first refusal they recorded.
func Apply[S interface{ Err() error }, O ~func(S)](s S, opts []O) error {
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	return s.Err()
}
