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
	// TableInflight holds the consumers' leases: a row per delivery (its token) that began
	// handling an event, committed before the handler runs and removed in the transaction
	// applying the event; a delivery that ends without applying it (a handler error, the
	// context ending) deletes it. So an event's rows there are the deliveries its handling
	// never returned from: the process or the database dying under it, which a poison event
	// does at every delivery (see Consumer.Deliver).
	TableInflight = "outbox_inflight"
	// TableDeadLetters holds the dead letters of consumers that keep them in SQL (the
	// default; Kafka consumers usually send theirs to a dead-letter topic instead).
	TableDeadLetters = "outbox_dead_letters"
	// TableRelayResolutions holds, for good, how an operator resolved each of the relay's
	// dead letters (Relay.Redrive, Relay.Skip), so that a resolution sent again, however
	// late, is answered as the first was.
	TableRelayResolutions = "outbox_relay_resolutions"
	// TableConsumerSkips holds, for good, the dead letters an operator skipped per consumer
	// (Consumer.Skip): a skip sent again, however late, is answered as the first was, and
	// the Cleaner keeps the processed records of skipped events whatever their age.
	TableConsumerSkips = "outbox_consumer_skips"
)

// outbox_events_dead is declared in the MySQL table, where the upgrade below adds it with
// its column; on SQLite CreateSchema creates it after the upgrade (sqliteDeadIndex).
var schema = []sqlutil.Table{
	{Name: TableEvents, Columns: `
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
		KEY outbox_events_dead (dead_at)`,
		SQLiteColumns: `
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
		dead_reason TEXT NULL`,
		Indexes: []sqlutil.Index{
			{Name: "outbox_events_stream", Columns: "topic, aggregate_key, seq", Unique: true},
			{Name: "outbox_events_sent", Columns: "sent_at"},
		}},
	{Name: TableStreams, Columns: `
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		last_seq BIGINT NOT NULL,
		PRIMARY KEY (topic, aggregate_key)`},
	{Name: TableProcessed, Columns: `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		processed_at DATETIME(6) NOT NULL,
		PRIMARY KEY (consumer, id)`,
		SQLiteColumns: `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		processed_at TIMESTAMP NOT NULL,
		PRIMARY KEY (consumer, id)`,
		Indexes: []sqlutil.Index{{Name: "outbox_processed_at", Columns: "processed_at"}}},
	{Name: TableInflight, Columns: `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		token CHAR(36) NOT NULL,
		leased_at DATETIME(6) NOT NULL,
		PRIMARY KEY (consumer, id, token)`,
		SQLiteColumns: `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		token CHAR(36) NOT NULL,
		leased_at TIMESTAMP NOT NULL,
		PRIMARY KEY (consumer, id, token)`},
	{Name: TableDeadLetters, Columns: deadLetterColumns("MEDIUMBLOB", "MEDIUMTEXT", "DATETIME(6)"),
		SQLiteColumns: deadLetterColumns("BLOB", "TEXT", "TIMESTAMP")},
	{Name: TableRelayResolutions, Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		skipped BOOLEAN NOT NULL,
		resolved_at DATETIME(6) NOT NULL`,
		SQLiteColumns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		skipped BOOLEAN NOT NULL,
		resolved_at TIMESTAMP NOT NULL`},
	{Name: TableConsumerSkips, Columns: `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		skipped_at DATETIME(6) NOT NULL,
		PRIMARY KEY (consumer, id)`,
		SQLiteColumns: `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		skipped_at TIMESTAMP NOT NULL,
		PRIMARY KEY (consumer, id)`},
}

// deadLetterColumns are the columns of outbox_dead_letters with the dialect's blob, text
// (for the headers: a Kafka message's can be as large as its value) and time types.
func deadLetterColumns(blob, text, timestamp string) string {
	return `
		consumer VARCHAR(64) NOT NULL,
		id VARCHAR(64) NOT NULL,
		topic VARCHAR(249) NOT NULL,
		aggregate_key VARCHAR(128) NOT NULL,
		seq BIGINT NOT NULL,
		event_type VARCHAR(128) NOT NULL,
		payload ` + blob + ` NOT NULL,
		headers ` + text + ` NULL,
		created_at ` + timestamp + ` NOT NULL,
		last_error TEXT NOT NULL,
		altered TEXT NULL,
		attempts INT NOT NULL,
		dead_at ` + timestamp + ` NOT NULL,
		PRIMARY KEY (consumer, id)`
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
	// outbox_dead_letters created before DeadLetterTable stored hostile events altered:
	// the column saying what was, and headers as large as a Kafka message's.
	mysqlWideHeaders = `ALTER TABLE outbox_dead_letters MODIFY headers MEDIUMTEXT NULL`
)

// CreateSchema creates the outbox tables and their indexes where they do not exist yet, on
// MySQL/MariaDB or SQLite, and brings tables created by an earlier version up to date
// (the relay's dead-letter columns, the dead letters' altered column). It is idempotent. On MySQL the tables use utf8mb4 with a
// binary collation, so IDs and keys compare byte for byte, as they do in Kafka.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("outbox: creating schema: %w", err)
	}
	sqlite := sqlutil.IsSQLite(db)
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
	return upgradeDeadLetters(ctx, db)
}

// upgradeDeadLetters adds the altered column to an outbox_dead_letters table created by an
// earlier version and, on MySQL, widens its headers to MEDIUMTEXT.
func upgradeDeadLetters(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.AddColumn(ctx, db, TableDeadLetters, "altered", "TEXT NULL"); err != nil {
		return fmt.Errorf("outbox: creating schema: %w", err)
	}
	if sqlutil.IsSQLite(db) {
		return nil
	}
	narrow, err := db.NewSelect().TableExpr("information_schema.COLUMNS").
		Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'headers' AND DATA_TYPE = 'text'", TableDeadLetters).
		Count(ctx)
	if err == nil && narrow > 0 {
		_, err = db.ExecContext(ctx, mysqlWideHeaders)
	}
	if err != nil {
		return fmt.Errorf("outbox: creating schema: widening the dead letters' headers: %w", err)
	}
	return nil
}
