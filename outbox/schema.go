package outbox

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Tables created by CreateSchema.
const (
	// TableEvents holds the outbox itself: one row per event, sent_at set once published
	// (or skipped), dead_at and dead_reason set while the relay holds it aside as a dead
	// letter.
	TableEvents = "outbox_events"
	// TableStreams holds one row per (topic, key) with the last sequence number handed out.
	TableStreams = "outbox_streams"
	// TableProcessed holds, per consumer, the IDs of the events it has applied.
	TableProcessed = "outbox_processed"
	// TableDeadLetters holds the dead letters of consumers that keep them in SQL (the
	// default; Kafka consumers usually send theirs to a dead-letter topic instead).
	TableDeadLetters = "outbox_dead_letters"
)

var mysqlSchema = []string{
	`CREATE TABLE IF NOT EXISTS outbox_events (
		pos BIGINT NOT NULL AUTO_INCREMENT,
		id VARCHAR(64) NOT NULL,
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		seq BIGINT NOT NULL,
		event_type VARCHAR(128) NOT NULL,
		payload MEDIUMBLOB NOT NULL,
		headers TEXT NULL,
		created_at DATETIME(6) NOT NULL,
		sent_at DATETIME(6) NULL,
		dead_at DATETIME(6) NULL,
		dead_reason TEXT NULL,
		PRIMARY KEY (pos),
		UNIQUE KEY outbox_events_id (id),
		UNIQUE KEY outbox_events_stream (topic, aggregate_key, seq),
		KEY outbox_events_sent (sent_at),
		KEY outbox_events_dead (dead_at)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS outbox_streams (
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		last_seq BIGINT NOT NULL,
		PRIMARY KEY (topic, aggregate_key)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS outbox_processed (
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		processed_at DATETIME(6) NOT NULL,
		PRIMARY KEY (consumer, id),
		KEY outbox_processed_at (processed_at)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS outbox_dead_letters (
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		seq BIGINT NOT NULL,
		event_type VARCHAR(128) NOT NULL,
		payload MEDIUMBLOB NOT NULL,
		headers TEXT NULL,
		created_at DATETIME(6) NOT NULL,
		last_error TEXT NOT NULL,
		attempts INT NOT NULL,
		dead_at DATETIME(6) NOT NULL,
		PRIMARY KEY (consumer, id)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
}

var sqliteSchema = []string{
	`CREATE TABLE IF NOT EXISTS outbox_events (
		pos INTEGER PRIMARY KEY AUTOINCREMENT,
		id VARCHAR(64) NOT NULL UNIQUE,
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		seq BIGINT NOT NULL,
		event_type VARCHAR(128) NOT NULL,
		payload BLOB NOT NULL,
		headers TEXT NULL,
		created_at TIMESTAMP NOT NULL,
		sent_at TIMESTAMP NULL,
		dead_at TIMESTAMP NULL,
		dead_reason TEXT NULL
	)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_stream ON outbox_events (topic, aggregate_key, seq)`,
	`CREATE INDEX IF NOT EXISTS outbox_events_sent ON outbox_events (sent_at)`,
	`CREATE TABLE IF NOT EXISTS outbox_streams (
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		last_seq BIGINT NOT NULL,
		PRIMARY KEY (topic, aggregate_key)
	)`,
	`CREATE TABLE IF NOT EXISTS outbox_processed (
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		processed_at TIMESTAMP NOT NULL,
		PRIMARY KEY (consumer, id)
	)`,
	`CREATE INDEX IF NOT EXISTS outbox_processed_at ON outbox_processed (processed_at)`,
	`CREATE TABLE IF NOT EXISTS outbox_dead_letters (
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		seq BIGINT NOT NULL,
		event_type VARCHAR(128) NOT NULL,
		payload BLOB NOT NULL,
		headers TEXT NULL,
		created_at TIMESTAMP NOT NULL,
		last_error TEXT NOT NULL,
		attempts INT NOT NULL,
		dead_at TIMESTAMP NOT NULL,
		PRIMARY KEY (consumer, id)
	)`,
}

// Upgrades of outbox_events created before the relay kept dead letters.
var (
	mysqlDeadColumns = `ALTER TABLE outbox_events ADD COLUMN dead_at DATETIME(6) NULL,
		ADD COLUMN dead_reason TEXT NULL, ADD KEY outbox_events_dead (dead_at)`
	sqliteDeadColumns = []string{
		`ALTER TABLE outbox_events ADD COLUMN dead_at TIMESTAMP NULL`,
		`ALTER TABLE outbox_events ADD COLUMN dead_reason TEXT NULL`,
	}
	sqliteDeadIndex = `CREATE INDEX IF NOT EXISTS outbox_events_dead ON outbox_events (dead_at)`
)

// CreateSchema creates the outbox tables and their indexes where they do not exist yet, on
// MySQL/MariaDB or SQLite, and adds the dead-letter columns to an outbox_events table
// created by an earlier version. It is idempotent. On MySQL the tables use utf8mb4 with a
// binary collation, so IDs and keys compare byte for byte, as they do in Kafka.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	sqlite := sqlutil.IsSQLite(db)
	stmts := mysqlSchema
	if sqlite {
		stmts = sqliteSchema
	}
	for _, stmt := range stmts {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("outbox: creating schema: %w", err)
		}
	}
	q := db.NewSelect().TableExpr("information_schema.COLUMNS").
		Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'dead_at'", TableEvents)
	upgrade := []string{mysqlDeadColumns}
	if sqlite {
		q = db.NewSelect().TableExpr("pragma_table_info(?)", TableEvents).Where("name = 'dead_at'")
		upgrade = sqliteDeadColumns
	}
	n, err := q.Count(ctx)
	if err != nil {
		return fmt.Errorf("outbox: creating schema: looking for dead_at: %w", err)
	}
	if n == 0 {
		for _, stmt := range upgrade {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: adding the dead-letter columns: %w", err)
			}
		}
	}
	if sqlite {
		if _, err := db.ExecContext(ctx, sqliteDeadIndex); err != nil {
			return fmt.Errorf("outbox: creating schema: %w", err)
		}
	}
	return nil
}
