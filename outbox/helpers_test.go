package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type backend struct {
	name string
	open func(testing.TB) *bun.DB
}

var backends = []backend{{"MySQL", testenv.MySQL}, {"SQLite", testenv.SQLite}}

// forEachBackend runs fn on a fresh database with the outbox schema and the test's effect
// table, on MySQL and on SQLite.
func forEachBackend(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, openDB(t, b.open))
		})
	}
}

func openDB(t testing.TB, open func(testing.TB) *bun.DB) *bun.DB {
	db := open(t)
	ctx := context.Background()
	require.NoError(t, outbox.CreateSchema(ctx, db))
	require.NoError(t, outbox.CreateSchema(ctx, db), "CreateSchema is idempotent")
	ddl := `CREATE TABLE test_applied (
		n BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, consumer VARCHAR(64) NOT NULL,
		event_id VARCHAR(64) NOT NULL, aggregate_key VARCHAR(128) NOT NULL, seq BIGINT NOT NULL)`
	if sqlutil.IsSQLite(db) {
		ddl = `CREATE TABLE test_applied (
			n INTEGER PRIMARY KEY AUTOINCREMENT, consumer TEXT NOT NULL,
			event_id TEXT NOT NULL, aggregate_key TEXT NOT NULL, seq BIGINT NOT NULL)`
	}
	_, err := db.ExecContext(ctx, ddl)
	require.NoError(t, err)
	return db
}

// appliedRow is one application of an event by a test handler. The table has no unique
// key on event_id, so a double application shows up as two rows.
type appliedRow struct {
	bun.BaseModel `bun:"table:test_applied"`
	N             int64  `bun:"n,pk,autoincrement"`
	Consumer      string `bun:"consumer"`
	EventID       string `bun:"event_id"`
	Key           string `bun:"aggregate_key"`
	Seq           int64  `bun:"seq"`
}

// recordingHandler writes one test_applied row per event, through the consumer's tx.
func recordingHandler(consumer string) outbox.HandlerFunc {
	return func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		rows := make([]appliedRow, len(events))
		for i, ev := range events {
			rows[i] = appliedRow{Consumer: consumer, EventID: ev.ID, Key: ev.Key, Seq: ev.Seq}
		}
		_, err := tx.NewInsert().Model(&rows).Exec(ctx)
		return err
	}
}

func applied(t testing.TB, db *bun.DB, consumer string) []appliedRow {
	var rows []appliedRow
	require.NoError(t, db.NewSelect().Model(&rows).Where("consumer = ?", consumer).Order("n").Scan(context.Background()))
	return rows
}

// requireExactlyOnceInOrder checks that rows apply every event of want exactly once and,
// per key, in increasing sequence.
func requireExactlyOnceInOrder(t testing.TB, rows []appliedRow, want []outbox.Event) {
	t.Helper()
	count := make(map[string]int)
	last := make(map[string]int64)
	for _, r := range rows {
		count[r.EventID]++
		require.Greater(t, r.Seq, last[r.Key], "key %s: seq %d applied after %d", r.Key, r.Seq, last[r.Key])
		last[r.Key] = r.Seq
	}
	for _, ev := range want {
		require.Equal(t, 1, count[ev.ID], "event %s (key %s seq %d) applied %d times", ev.ID, ev.Key, ev.Seq, count[ev.ID])
	}
	require.Len(t, rows, len(want))
}

func payload(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// addEvents adds perKey events to each of keys keys of topic, one transaction per event,
// round-robin over the keys, and returns them.
func addEvents(t testing.TB, db *bun.DB, topic string, keys, perKey int) []outbox.Event {
	t.Helper()
	ctx := context.Background()
	var out []outbox.Event
	for i := range perKey {
		for k := range keys {
			evs, err := outbox.Add(ctx, db, outbox.Event{
				Topic: topic, Key: fmt.Sprintf("key-%03d", k), Type: "test.happened",
				Payload: payload(map[string]int{"i": i}),
			})
			require.NoError(t, err)
			out = append(out, evs...)
		}
	}
	return out
}

// relayUntilDone runs rounds until the outbox has no unsent event.
func relayUntilDone(t testing.TB, r *outbox.Relay, db *bun.DB) {
	t.Helper()
	ctx := context.Background()
	for range 10000 {
		_, err := r.RelayOnce(ctx)
		require.NoError(t, err)
		if unsent(t, db) == 0 {
			return
		}
	}
	t.Fatal("the relay did not drain the outbox")
}

func unsent(t testing.TB, db *bun.DB) int {
	n, err := db.NewSelect().Table(outbox.TableEvents).Where("sent_at IS NULL").Count(context.Background())
	require.NoError(t, err)
	return int(n)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// metrics records what the library reports.
type metrics struct {
	outbox.NopMetrics
	mu                                            sync.Mutex
	lag                                           []time.Duration
	published, failed, applied, dups, dead, hfail map[string]int
	cleaned, deadRelay                            map[string]int
}

func newMetrics() *metrics {
	return &metrics{published: map[string]int{}, failed: map[string]int{}, applied: map[string]int{},
		dups: map[string]int{}, dead: map[string]int{}, hfail: map[string]int{}, cleaned: map[string]int{},
		deadRelay: map[string]int{}}
}

func (m *metrics) RelayLag(d time.Duration) { m.mu.Lock(); m.lag = append(m.lag, d); m.mu.Unlock() }
func (m *metrics) Published(topic string, n int) {
	m.mu.Lock()
	m.published[topic] += n
	m.mu.Unlock()
}
func (m *metrics) PublishFailed(topic string, n int) {
	m.mu.Lock()
	m.failed[topic] += n
	m.mu.Unlock()
}
func (m *metrics) RelayDeadLettered(topic string, n int) {
	m.mu.Lock()
	m.deadRelay[topic] += n
	m.mu.Unlock()
}
func (m *metrics) Applied(c, topic string, n int) {
	m.mu.Lock()
	m.applied[c+"/"+topic] += n
	m.mu.Unlock()
}
func (m *metrics) Duplicates(c, topic string, n int) {
	m.mu.Lock()
	m.dups[c+"/"+topic] += n
	m.mu.Unlock()
}
func (m *metrics) HandlerFailed(c, topic string) { m.mu.Lock(); m.hfail[c+"/"+topic]++; m.mu.Unlock() }
func (m *metrics) DeadLettered(c, topic string, n int) {
	m.mu.Lock()
	m.dead[c+"/"+topic] += n
	m.mu.Unlock()
}
func (m *metrics) Cleaned(table string, n int) { m.mu.Lock(); m.cleaned[table] += n; m.mu.Unlock() }

func (m *metrics) get(field map[string]int, key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return field[key]
}

// queryCounter counts statements by kind: a pattern "SELECT outbox_processed" counts the
// statements that start with SELECT and mention outbox_processed.
type queryCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (q *queryCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (q *queryCounter) AfterQuery(_ context.Context, ev *bun.QueryEvent) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for pattern := range q.counts {
		verb, table, _ := strings.Cut(pattern, " ")
		if strings.HasPrefix(ev.Query, verb) && strings.Contains(ev.Query, table) {
			q.counts[pattern]++
		}
	}
}

func (q *queryCounter) reset(patterns ...string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.counts = make(map[string]int)
	for _, p := range patterns {
		q.counts[p] = 0
	}
}

func (q *queryCounter) get(pattern string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.counts[pattern]
}
