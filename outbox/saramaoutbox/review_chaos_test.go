package saramaoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// killRelayTxs kills, with probability p each, the connections of the test database's
// READ COMMITTED transactions: the relays' rounds (writers run at the default isolation),
// whether they are picking, publishing, marking or committing. It returns how many.
func killRelayTxs(t testing.TB, db *bun.DB, p float64) int {
	t.Helper()
	ctx := context.Background()
	var threads []int64
	require.NoError(t, db.NewRaw(`SELECT t.trx_mysql_thread_id FROM information_schema.innodb_trx t
		JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id
		WHERE p.db = DATABASE() AND t.trx_isolation_level = 'READ COMMITTED'`).Scan(ctx, &threads))
	n := 0
	for _, id := range threads {
		if rand.Float64() < p {
			if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", id)); err == nil { // it may have ended meanwhile
				n++
			}
		}
	}
	return n
}

// TestOverlappingRelaysWithKilledConnections: two relays run with small batches (so Run
// overlaps a round's commit with the next round) while writers add events, and their
// transactions are killed at random points — mid-pick, mid-publish, mid-mark, mid-commit.
// Every event reaches Kafka, per key the first copies come in sequence order, and a
// duplicate never runs ahead of its stream.
func TestOverlappingRelaysWithKilledConnections(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	for _, size := range []int{7, 20} {
		r, err := outbox.NewRelay(db, newPublisher(t, k), outbox.WithBatchSize(size),
			outbox.WithInterval(5*time.Millisecond), outbox.WithBackoff(time.Millisecond, 20*time.Millisecond))
		require.NoError(t, err)
		runRelay(t, r)
	}
	var killed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(1+rand.IntN(10)) * time.Millisecond):
				killed.Add(int64(killRelayTxs(t, db, 0.7)))
			}
		}
	})
	var want []outbox.Event
	for killed.Load() < 10 && len(want) < 8000 {
		want = append(want, addEvents(t, db, topic, 400, 25, 4, 2)...)
	}
	close(stop)
	wg.Wait()
	require.GreaterOrEqual(t, killed.Load(), int64(3), "the relays' transactions were killed")
	require.Eventually(t, outboxtest.Drained(db), 3*time.Minute, 20*time.Millisecond, "the relays to drain the outbox")
	copies := checkDelivery(t, readTopic(t, k, topic, len(want)), want)
	t.Logf("%d relay transactions killed, %d duplicates on the topic", killed.Load(), duplicates(copies))
}
