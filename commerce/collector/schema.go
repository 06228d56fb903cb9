package collector

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// The collector's tables.
const (
	// TableDaily holds the metrics of each product per day (in the collector's time zone).
	TableDaily = "commerce_metrics_daily"
	// TableRollups holds the weekly and monthly metrics, recomputed from TableDaily.
	TableRollups = "commerce_metrics_rollups"
	// TableDirty lists the weeks and months whose dailies changed since their rollup.
	TableDirty = "commerce_metrics_dirty"
	// TableStreams counts, per event stream (topic, key), the events applied and the
	// highest sequence number seen: their difference is the number of missing events.
	TableStreams = "commerce_metrics_streams"
)

// metricColumns are the counters of a daily or rollup row, in table order.
const metricColumns = "orders, units, revenue, cancellations, units_refunded, revenue_refunded, net_units, net_revenue"

const mysqlCounters = `
		orders BIGINT NOT NULL, units BIGINT NOT NULL, revenue BIGINT NOT NULL,
		cancellations BIGINT NOT NULL, units_refunded BIGINT NOT NULL, revenue_refunded BIGINT NOT NULL,
		net_units BIGINT NOT NULL, net_revenue BIGINT NOT NULL,
		updated_at DATETIME(6) NOT NULL,`

// sqliteCounters check that every counter stays an integer: SQLite turns an integer sum
// that overflows into a floating-point value, which the check refuses, as MySQL refuses
// the overflow itself.
const sqliteCounters = `
		orders BIGINT NOT NULL, units BIGINT NOT NULL, revenue BIGINT NOT NULL,
		cancellations BIGINT NOT NULL, units_refunded BIGINT NOT NULL, revenue_refunded BIGINT NOT NULL,
		net_units BIGINT NOT NULL, net_revenue BIGINT NOT NULL,
		updated_at TIMESTAMP NOT NULL,
		CHECK (typeof(orders) = 'integer' AND typeof(units) = 'integer' AND typeof(revenue) = 'integer'
			AND typeof(cancellations) = 'integer' AND typeof(units_refunded) = 'integer'
			AND typeof(revenue_refunded) = 'integer' AND typeof(net_units) = 'integer'
			AND typeof(net_revenue) = 'integer'),`

// metricsTable is a table of per-product counters keyed by (period columns, product_id).
// The ranking index ends in (net_units DESC, product_id): a top-N of one period is a
// range read of the index in order, with ties broken by product ID, and no sort.
func metricsTable(name, period, periodColumns string) sqlutil.Table {
	columns := func(counters string) string {
		return periodColumns + `
		product_id VARCHAR(64) NOT NULL,` + counters + `
		PRIMARY KEY (` + period + `, product_id)`
	}
	return sqlutil.Table{Name: name, Columns: columns(mysqlCounters), SQLiteColumns: columns(sqliteCounters),
		Indexes: []sqlutil.Index{
			{Name: name + "_rank", Columns: period + ", net_units DESC, product_id"},
			{Name: name + "_product", Columns: "product_id, " + period},
		}}
}

var schema = []sqlutil.Table{
	metricsTable(TableDaily, "day", `
		day CHAR(10) NOT NULL,`),
	metricsTable(TableRollups, "period, start", `
		period VARCHAR(8) NOT NULL,
		start CHAR(10) NOT NULL,`),
	{Name: TableDirty, Columns: `
		period VARCHAR(8) NOT NULL,
		start CHAR(10) NOT NULL,
		version BIGINT NOT NULL,
		PRIMARY KEY (period, start)`},
	{Name: TableStreams, Columns: `
		topic VARCHAR(249) NOT NULL,
		stream_key VARCHAR(128) NOT NULL,
		max_seq BIGINT NOT NULL,
		seen BIGINT NOT NULL,
		PRIMARY KEY (topic, stream_key)`},
}

// CreateSchema creates the collector's tables and indexes if they do not exist (MySQL 8 or
// MariaDB 10.8+, which honour descending index keys, or SQLite). The consumer also needs
// the outbox's tables (outbox.CreateSchema) in the same database.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	return nil
}
