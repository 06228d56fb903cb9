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

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// forEachBackend runs fn on a fresh database with the outbox schema and the test's effect
// table, on MySQL and on SQLite.
func forEachBackend(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	for _, b := range testenv.Databases() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, outboxtest.Prepare(t, b.Open(t)))
		})
	}
}

// requireExactlyOnceInOrder checks that rows apply every event of want exactly once and,
// per key, in increasing sequence.
func requireExactlyOnceInOrder(t testing.TB, rows []outboxtest.AppliedRow, want []outbox.Event) {
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
		if outboxtest.Unsent(t, db) == 0 {
			return
		}
	}
	t.Fatal("the relay did not drain the outbox")
}

// newClock returns a manual clock for the outbox tests.
func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// metrics records what the library reports.
type metrics struct{ observe.Recorder }

func newMetrics() *metrics { return &metrics{} }

// get returns the sum of the Events named name about key: a topic, "consumer/topic" or a
// table.
func (m *metrics) get(name, key string) int {
	n := 0
	for _, e := range m.Events(name) {
		k := e.Labels["topic"]
		if c := e.Labels["consumer"]; c != "" {
			k = c + "/" + k
		} else if t := e.Labels["table"]; t != "" {
			k = t
		}
		if k == key {
			n += int(e.N)
		}
	}
	return n
}

// lags returns the relay lags reported, in order.
func (m *metrics) lags() []time.Duration {
	var out []time.Duration
	for _, e := range m.Events("relay_lag") {
		out = append(out, e.Elapsed)
	}
	return out
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

// markedStatement is what a test handler sends for the event it marks, for a Link to
// crash the database at (deliverCrashing).
const markedStatement = "SELECT 'marked event'"

// markingHandler records events for consumer name, sending markedStatement first for the
// event marked; handled, when not nil, counts those sendings.
func markingHandler(name, marked string, handled *int) outbox.HandlerFunc {
	record := outboxtest.RecordingHandler(name)
	return func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		for _, ev := range evs {
			if ev.ID != marked {
				continue
			}
			if handled != nil {
				*handled++
			}
			if _, err := tx.ExecContext(ctx, markedStatement); err != nil {
				return err
			}
		}
		return record(ctx, tx, evs)
	}
}

// deliverCrashing delivers events with c until a delivery succeeds, as a caller whose
// Deliver failed delivers them again, the database server killed at markedStatement in
// each delivery for which crash (given the crashes so far) says so, then started again.
// Each failed delivery must be such a crash, failing as the database unavailable.
// whileDown, when not nil, runs after each crash before the server starts again. It
// returns the crashes, failing the test after 8 deliveries.
func deliverCrashing(t *testing.T, c *outbox.Consumer, link *testenv.Link, server *testenv.Own, events []outbox.Event, crash func(crashes int) bool, whileDown func()) int {
	t.Helper()
	isMarked := func(q string) bool { return strings.Contains(q, markedStatement) }
	crashes := 0
	for delivery := 0; ; delivery++ {
		require.Less(t, delivery, 8, "still crashing the database after %d deliveries", delivery)
		stopped := make(chan struct{})
		if crash(crashes) {
			link.ArmThen(isMarked, false, func() { server.Stop(t, 0); close(stopped) })
		}
		err := c.Deliver(context.Background(), events)
		cut, _ := link.Disarm()
		if err == nil {
			require.Empty(t, cut)
			return crashes
		}
		require.Len(t, cut, 1, "Deliver failed without a crash: %v", err)
		require.True(t, depfail.Is(err), "Deliver failed with %v, not the database unavailable", err)
		crashes++
		<-stopped
		if whileDown != nil {
			whileDown()
		}
		server.Start(t)
	}
}
