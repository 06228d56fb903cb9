package outboxtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/outbox"
)

// The fixtures below are shared by the tests of the outbox and of its publishers: a
// database with the outbox schema and an effect table that test handlers write to.

// Fill adds n events of topic over 100 keys to db, 500 per transaction: the backlog the
// relay benchmarks drain.
func Fill(tb testing.TB, db bun.IDB, topic string, n int) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 500 {
		batch := make([]outbox.Event, 0, 500)
		for i := start; i < min(start+500, n); i++ {
			batch = append(batch, outbox.Event{
				Topic: topic, Key: fmt.Sprintf("key-%03d", i%100), Type: "bench.happened",
				Payload: fmt.Appendf(nil, `{"i":%d,"amount":35000,"currency":"KRW"}`, i),
			})
		}
		_, err := outbox.Add(ctx, db, batch...)
		require.NoError(tb, err)
	}
}

// Prepare creates the outbox schema (twice: CreateSchema is idempotent) and the effect
// table of AppliedRow on db, and returns db.
func Prepare(tb testing.TB, db *bun.DB) *bun.DB {
	tb.Helper()
	ctx := context.Background()
	require.NoError(tb, outbox.CreateSchema(ctx, db))
	require.NoError(tb, outbox.CreateSchema(ctx, db), "CreateSchema is idempotent")
	ddl := `CREATE TABLE test_applied (
		n BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, consumer VARCHAR(64) NOT NULL,
		event_id VARCHAR(64) NOT NULL, aggregate_key VARCHAR(128) NOT NULL, seq BIGINT NOT NULL)`
	if sqlutil.IsSQLite(db) {
		ddl = `CREATE TABLE test_applied (
			n INTEGER PRIMARY KEY AUTOINCREMENT, consumer TEXT NOT NULL,
			event_id TEXT NOT NULL, aggregate_key TEXT NOT NULL, seq BIGINT NOT NULL)`
	}
	_, err := db.ExecContext(ctx, ddl)
	require.NoError(tb, err)
	return db
}

// AppliedRow is one application of an event by a test handler. The table has no unique
// key on event_id, so a double application shows up as two rows.
type AppliedRow struct {
	bun.BaseModel `bun:"table:test_applied"`
	N             int64  `bun:"n,pk,autoincrement"`
	Consumer      string `bun:"consumer"`
	EventID       string `bun:"event_id"`
	Key           string `bun:"aggregate_key"`
	Seq           int64  `bun:"seq"`
}

// Record writes one AppliedRow per event through tx, the consumer's transaction.
func Record(ctx context.Context, tx bun.Tx, consumer string, events []outbox.Event) error {
	rows := make([]AppliedRow, len(events))
	for i, ev := range events {
		rows[i] = AppliedRow{Consumer: consumer, EventID: ev.ID, Key: ev.Key, Seq: ev.Seq}
	}
	_, err := tx.NewInsert().Model(&rows).Exec(ctx)
	return err
}

// RecordingHandler is a Consumer handler that Records every event for consumer.
func RecordingHandler(consumer string) outbox.HandlerFunc {
	return func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		return Record(ctx, tx, consumer, events)
	}
}

// Applied returns consumer's AppliedRows in the order they were written.
func Applied(tb testing.TB, db bun.IDB, consumer string) []AppliedRow {
	var rows []AppliedRow
	require.NoError(tb, db.NewSelect().Model(&rows).Where("consumer = ?", consumer).Order("n").Scan(context.Background()))
	return rows
}

// Unsent returns how many events of db's outbox wait for the relay.
func Unsent(tb testing.TB, db bun.IDB) int {
	n, err := unsent(db)
	require.NoError(tb, err)
	return n
}

// Drained reports whether db's outbox has no event left to send (false while it cannot
// tell): a condition for require.Eventually.
func Drained(db bun.IDB) func() bool {
	return func() bool {
		n, err := unsent(db)
		return err == nil && n == 0
	}
}

func unsent(db bun.IDB) (int, error) {
	n, err := db.NewSelect().Table(outbox.TableEvents).Where("sent_at IS NULL").Count(context.Background())
	return int(n), err
}

// LeaseWindow is a Consumer's lease window (outbox.WithLeaseWindow) under a name.
type LeaseWindow struct {
	Name   string
	Window time.Duration
}

// LeaseWindows are the windows the consumer benchmarks compare: "steady", a Consumer past
// its window (a nanosecond), as a healthy stream runs, and "leasing", one leasing every
// batch (outbox.AlwaysLease), as for a minute after it starts or fails.
func LeaseWindows() []LeaseWindow {
	return []LeaseWindow{{"steady", time.Nanosecond}, {"leasing", outbox.AlwaysLease}}
}
