package ledger_test

import (
	"testing"
	"time"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// TestNewRefusesBadOptions checks that New refuses every invalid option value with an
// error naming the option. That valid ones take effect is shown by the tests using them
// (WithSweepBatch in TestSweepPagesPastBlockedLots, WithClock everywhere).
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	construct := func(opts ...ledger.Option) (*ledger.Ledger, error) { return ledger.New(db, opts...) }
	testkit.RefusesBadOptions(t, construct, map[string]ledger.Option{
		"WithSweepInterval: 0s":  ledger.WithSweepInterval(0),
		"WithSweepInterval: -1s": ledger.WithSweepInterval(-time.Second),
		"WithSweepBatch: 0":      ledger.WithSweepBatch(0),
		"WithSweepBatch: -1":     ledger.WithSweepBatch(-1),
		"WithClock: nil":         ledger.WithClock(nil),
		"WithLogger: nil":        ledger.WithLogger(nil),
		"WithObserver: nil":      ledger.WithObserver(nil),
	})
	testkit.Must(construct(ledger.WithSweepInterval(time.Millisecond), ledger.WithSweepBatch(1)))(t)
}
