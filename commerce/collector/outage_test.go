package collector_test

import (
	"testing"

	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestCallsDuringAnOutage: with the database server down, every call of the collector fails
// with an error matching errcode.ErrUnavailable, so that a caller of the library can tell
// "retry later" from a bug.
func TestCallsDuringAnOutage(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, _, _ := testenv.LinkedMySQLAt(t, dsn)
	e := newEnv(t, db)
	day := date("2026-11-02")

	server.Stop(t, 0)
	calls := map[string]func() error{
		"Ranking": func() error { _, err := e.collector.Ranking(ctx, collector.Daily, day, 10); return err },
		"ProductMetrics": func() error {
			_, err := e.collector.ProductMetrics(ctx, "p1", collector.Daily, day, day)
			return err
		},
		"Gaps":        func() error { _, err := e.collector.Gaps(ctx, 10); return err },
		"Recompute":   func() error { return e.collector.Recompute(ctx, collector.Weekly, day) },
		"RollupDirty": func() error { _, err := e.collector.RollupDirty(ctx); return err },
	}
	testkit.AllUnavailable(t, calls)
}
