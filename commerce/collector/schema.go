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

// The ranking indexes end in (net_units DESC, product_id): a top-N of one period is a
// range read of the index in order, with ties broken by product ID, and no sort.
var mysqlSchema = []string{
	`CREATE TABLE IF NOT EXISTS commerce_metrics_daily (
		day CHAR(10) NOT NULL,
		product_id VARCHAR(64) NOT NULL,` + mysqlCounters + `
		PRIMARY KEY (day, product_id),
		KEY commerce_metrics_daily_rank (day, net_units DESC, product_id),
		KEY commerce_metrics_daily_product (product_id, day)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS commerce_metrics_rollups (
		period VARCHAR(8) NOT NULL,
		start CHAR(10) NOT NULL,
		product_id VARCHAR(64) NOT NULL,` + mysqlCounters + `
		PRIMARY KEY (period, start, product_id),
		KEY commerce_metrics_rollups_rank (period, start, net_units DESC, product_id),
		KEY commerce_metrics_rollups_product (product_id, period, start)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS commerce_metrics_dirty (
		period VARCHAR(8) NOT NULL,
		start CHAR(10) NOT NULL,
		version BIGINT NOT NULL,
		PRIMARY KEY (period, start)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS commerce_metrics_streams (
		topic VARCHAR(249) NOT NULL,
		stream_key VARCHAR(128) NOT NULL,
		max_seq BIGINT NOT NULL,
		seen BIGINT NOT NULL,
		PRIMARY KEY (topic, stream_key)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
}

var sqliteSchema = []string{
	`CREATE TABLE IF NOT EXISTS commerce_metrics_daily (
		day CHAR(10) NOT NULL,
		product_id VARCHAR(64) NOT NULL,` + sqliteCounters + `
		PRIMARY KEY (day, product_id)
	)`,
	`CREATE INDEX IF NOT EXISTS commerce_metrics_daily_rank ON commerce_metrics_daily (day, net_units DESC, product_id)`,
	`CREATE INDEX IF NOT EXISTS commerce_metrics_daily_product ON commerce_metrics_daily (product_id, day)`,
	`CREATE TABLE IF NOT EXISTS commerce_metrics_rollups (
		period VARCHAR(8) NOT NULL,
		start CHAR(10) NOT NULL,
		product_id VARCHAR(64) NOT NULL,` + sqliteCounters + `
		PRIMARY KEY (period, start, product_id)
	)`,
	`CREATE INDEX IF NOT EXISTS commerce_metrics_rollups_rank ON commerce_metrics_rollups (period, start, net_units DESC, product_id)`,
	`CREATE INDEX IF NOT EXISTS commerce_metrics_rollups_product ON commerce_metrics_rollups (product_id, period, start)`,
	`CREATE TABLE IF NOT EXISTS commerce_metrics_dirty (
		period VARCHAR(8) NOT NULL,
		start CHAR(10) NOT NULL,
		version BIGINT NOT NULL,
		PRIMARY KEY (period, start)
	)`,
	`CREATE TABLE IF NOT EXISTS commerce_metrics_streams (
		topic VARCHAR(249) NOT NULL,
		stream_key VARCHAR(128) NOT NULL,
		max_seq BIGINT NOT NULL,
		seen BIGINT NOT NULL,
		PRIMARY KEY (topic, stream_key)
	)`,
}

// CreateSchema creates the collector's tables and indexes if they do not exist (MySQL 8 or
// MariaDB 10.8+, which honour descending index keys, or SQLite). The consumer also needs
// the outbox's tables (outbox.CreateSchema) in the same database.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	stmts := mysqlSchema
	if sqlutil.IsSQLite(db) {
		stmts = sqliteSchema
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("collector: creating the schema: %w", err)
		}
	}
	return nil
}
