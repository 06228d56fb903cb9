package member

import "time"

// WithDenylistClock sets the clock a RedisDenylist times its publish check by.
func WithDenylistClock(now func() time.Time) RedisDenylistOption {
	return func(d *RedisDenylist) { d.now = now }
}
