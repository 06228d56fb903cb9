// Package testclock is the one manual clock of the module's tests: time moves only when a
// test calls Advance, so deadlines, retention and expiry are tested without sleeping.
//
//	c := testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
//	svc, err := ledger.New(db, ledger.WithClock(c.Now))
//	c.Advance(time.Hour) // every hold with a shorter deadline is now due
package testclock

import (
	"sync"
	"time"
)

// Clock is a manual clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock standing at t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time; pass the method value c.Now wherever a package takes a
// func() time.Time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backward when d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
