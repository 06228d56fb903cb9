package collector_test

import (
	"testing"

	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestNewRefusesBadOptions: every invalid option value is refused, naming the option.
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	testkit.RefusesBadOptions(t, func(opts ...collector.Option) (*collector.Collector, error) {
		return collector.New(db, opts...)
	}, map[string]collector.Option{
		"WithLocation: nil": collector.WithLocation(nil),
		"WithClock: nil":    collector.WithClock(nil),
		"WithLogger: nil":   collector.WithLogger(nil),
	}, collector.ErrInvalidArgument)
}
