package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/sqlitedb"
)

// The consumer process TestConsumerPoisonEventKillingTheProcess runs, again and again, is
// this test binary with these set.
const (
	killerDialect = "OUTBOX_KILLER_DIALECT" // mysql or sqlite
	killerDSN     = "OUTBOX_KILLER_DSN"
	killerEvents  = "OUTBOX_KILLER_EVENTS" // the events to deliver, as JSON; the second is the poison
	killerTries   = "OUTBOX_KILLER_TRIES"  // a file the process adds a line to before it handles the poison
)

// TestConsumerPoisonEventKillingTheProcess: an event whose handling kills the process
// outright — a payload that overflows the handler's stack, which no recover catches — is
// dead-lettered after it has killed the consumer process at 3 deliveries in a row, without
// being handled a fourth time, and the process delivering after it applies every other
// event exactly once. Each delivery is a new process: what counts the crashes is the
// database (outbox_inflight), not memory, and nothing of it is left at the end.
func TestConsumerPoisonEventKillingTheProcess(t *testing.T) {
	if os.Getenv(killerDSN) != "" {
		runKilledConsumer(t)
		return
	}
	dir := t.TempDir()
	sqlitePath := filepath.Join(dir, "killer.db")
	for _, backend := range []struct{ name, dialect, dsn string }{
		{"SQLite", "sqlite", "file:" + sqlitePath + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"},
		{"MySQL", "mysql", testenv.MySQLDSN(t)},
	} {
		t.Run(backend.name, func(t *testing.T) {
			db := openKiller(t, backend.dialect, backend.dsn)
			outboxtest.Prepare(t, db)
			tries := filepath.Join(dir, backend.name+".tries")
			events := fakeEvents(3, 1)
			blob, err := json.Marshal(events)
			require.NoError(t, err)

			crashes := 0
			for run := 0; ; run++ {
				require.Less(t, run, 8, "the poison event still kills the consumer after %d runs", run)
				cmd := exec.Command(os.Args[0], "-test.run=^TestConsumerPoisonEventKillingTheProcess$", "-test.count=1")
				cmd.Env = append(os.Environ(), killerDialect+"="+backend.dialect, killerDSN+"="+backend.dsn, killerEvents+"="+string(blob), killerTries+"="+tries)
				out, err := cmd.CombinedOutput()
				if err == nil {
					break
				}
				var exit *exec.ExitError
				require.ErrorAs(t, err, &exit, "%s", out)
				require.Contains(t, string(out), "stack overflow", "the consumer process died of something else:\n%s", out)
				crashes++
			}
			assert.Equal(t, 3, crashes, "runs the poison event killed")
			handled, err := os.ReadFile(tries)
			require.NoError(t, err)
			assert.Equal(t, "tried\ntried\ntried\n", string(handled), "the poison event is not handled after its third crash")
			requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "killer"), []outbox.Event{events[0], events[2]})
			letters, err := outbox.NewDeadLetterTable(db).List(context.Background(), "killer", 0)
			require.NoError(t, err)
			require.Len(t, letters, 1)
			assert.Equal(t, events[1].ID, letters[0].Event.ID)
			assert.Equal(t, 3, letters[0].Attempts)
			assert.Contains(t, letters[0].Error, "died under its handling at 3 deliveries in a row")
			left, err := db.NewSelect().Table(outbox.TableInflight).Count(context.Background())
			require.NoError(t, err)
			assert.Zero(t, left, "leases left behind")
		})
	}
}

// runKilledConsumer is the consumer process of TestConsumerPoisonEventKillingTheProcess:
// it delivers the events once, the handler overflowing its stack on the second after
// noting in the tries file that it tried.
func runKilledConsumer(t *testing.T) {
	var events []outbox.Event
	require.NoError(t, json.Unmarshal([]byte(os.Getenv(killerEvents)), &events))
	db := openKiller(t, os.Getenv(killerDialect), os.Getenv(killerDSN))
	record := outboxtest.RecordingHandler("killer")
	c, err := outbox.NewConsumer(db, "killer", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		for _, ev := range evs {
			if ev.ID != events[1].ID {
				continue
			}
			f, err := os.OpenFile(os.Getenv(killerTries), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = f.WriteString("tried\n")
			if err = errors.Join(err, f.Close()); err != nil {
				return err
			}
			debug.SetMaxStack(1 << 20)
			return errors.New(string(rune(overflow(0))))
		}
		return record(ctx, tx, evs)
	})
	require.NoError(t, err)
	require.NoError(t, c.Deliver(context.Background(), events))
}

// overflow recurses until the goroutine's stack is exhausted: a fatal error, not a panic.
func overflow(depth int) int {
	var pad [512]byte
	pad[depth%len(pad)] = byte(depth)
	//lint:ignore SA5007 the recursion without end is the point: the process dies of it
	return overflow(depth+1) + int(pad[depth%len(pad)])
}

// openKiller opens the database of dsn, SQLite or MySQL as dialect says.
func openKiller(t *testing.T, dialect, dsn string) *bun.DB {
	if dialect == "mysql" {
		return testenv.MySQLAt(t, dsn)
	}
	db, err := sqlitedb.Open(dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}
