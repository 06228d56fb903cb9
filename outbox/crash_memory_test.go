package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// TestConsumerPoisonEventCrashingTheDatabaseAfterAnotherFailure: an event under whose
// handling the whole database goes down at every delivery is dead-lettered after 3 of
// them, as Deliver documents, even when, within each delivery, its handling first fails
// in another way before the crash: its connection lost while the database still answers
// (a poison statement killing one node of a cluster behind a proxy, the next answering,
// the next crashing too), or a handler error. Neither is its handling succeeding, and
// neither may wipe the crashes counted against it: otherwise each delivery counts one
// crash, then forgets it at the next, and the event crashes the database for ever.
func TestConsumerPoisonEventCrashingTheDatabaseAfterAnotherFailure(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	for _, first := range []string{"lost", "error"} {
		t.Run(first, func(t *testing.T) {
			name := "crash-after-" + first
			events := fakeEvents(3, 1)
			marked := events[1].ID
			record := outboxtest.RecordingHandler(name)
			handled := 0   // times the marked event's handling began
			failed := true // whether its handling in this delivery already failed the other way
			c, err := outbox.NewConsumer(linked, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
				for _, ev := range evs {
					if ev.ID != marked {
						continue
					}
					handled++
					if !failed {
						failed = true
						if first == "error" {
							return errors.New("the marked event's handler failed")
						}
						var id int64
						if err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
						return err
					}
					if _, err := tx.ExecContext(ctx, "SELECT 'marked event'"); err != nil {
						return err
					}
				}
				return record(ctx, tx, evs)
			}, outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
			require.NoError(t, err)
			isMarked := func(q string) bool { return strings.Contains(q, "marked event") }
			crashes := 0
			for delivery := 0; ; delivery++ {
				require.Less(t, delivery, 8, "still crashing the database after %d deliveries", delivery)
				failed = false
				stopped := make(chan struct{})
				link.ArmThen(isMarked, false, func() { server.Stop(t, 0); close(stopped) })
				err := c.Deliver(ctx, events)
				cut, _ := link.Disarm()
				if err == nil {
					require.Empty(t, cut)
					break
				}
				require.Len(t, cut, 1, "Deliver failed without a crash: %v", err)
				require.True(t, depfail.Is(err), "Deliver failed with %v, not the database unavailable", err)
				crashes++
				<-stopped
				server.Start(t)
			}
			assert.Equal(t, 3, crashes)
			assert.Equal(t, 6, handled, "handled again after its third crash")
			requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{events[0], events[2]})
			letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
			require.NoError(t, err)
			require.Len(t, letters, 1)
			assert.Equal(t, marked, letters[0].Event.ID)
			assert.Equal(t, 3, letters[0].Attempts)
		})
	}
}
