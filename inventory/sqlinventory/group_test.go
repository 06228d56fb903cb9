package sqlinventory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
)

// TestGroupCommitIsolatesCallers: 160 concurrent reservations of one limited SKU, from
// 30 buyers (four each, the fourth over the limit of 3), anonymous callers (refused by
// the limit), conflicting replays, plain replays and buyers asking for more than there is,
// share transactions; each caller gets its own answer and the end state is exact.
func TestGroupCommitIsolatesCallers(t *testing.T) {
	for name, open := range map[string]func(testing.TB) *bun.DB{"MySQL": testenv.MySQL, "SQLite": testenv.SQLite} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := open(t)
			require.NoError(t, CreateSchema(ctx, db))
			be := New(db)
			inv := testkit.Must(inventory.New(be))(t)
			_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "hot", OnHand: 200, BuyerLimit: 3})
			require.NoError(t, err)

			const buyers, each = 30, 4
			type attempt struct {
				req inventory.ReserveRequest
				err error
			}
			var all []*attempt
			for i := range buyers * each {
				all = append(all, &attempt{req: inventory.ReserveRequest{ID: "r" + strconv.Itoa(i), BuyerID: "b" + strconv.Itoa(i%buyers),
					Lines: []inventory.Line{{SKU: "hot", Qty: 1}}, TTL: time.Hour}})
			}
			for i := range 10 {
				all = append(all, &attempt{req: inventory.ReserveRequest{ID: "anon" + strconv.Itoa(i), Lines: []inventory.Line{{SKU: "hot", Qty: 1}}, TTL: time.Hour}})
				// r0..r9 with another quantity: a conflict or, when it came first, r0..r9's own
				// reservation (then r0..r9 conflict).
				all = append(all, &attempt{req: inventory.ReserveRequest{ID: "r" + strconv.Itoa(i), BuyerID: "b" + strconv.Itoa(i),
					Lines: []inventory.Line{{SKU: "hot", Qty: 2}}, TTL: time.Hour}})
				all = append(all, &attempt{req: all[i].req}) // a plain replay of r0..r9
				all = append(all, &attempt{req: inventory.ReserveRequest{ID: "big" + strconv.Itoa(i), BuyerID: "big",
					Lines: []inventory.Line{{SKU: "hot", Qty: 300}}, TTL: time.Hour}})
			}
			var wg sync.WaitGroup
			for _, a := range all {
				wg.Go(func() { _, a.err = inv.Reserve(ctx, a.req) })
			}
			wg.Wait()

			units := map[string]int64{} // per buyer
			var total int64
			for _, a := range all {
				var limit *inventory.BuyerLimitError
				var conflict *inventory.ConflictError
				var short *inventory.InsufficientStockError
				switch {
				case a.req.BuyerID == "big":
					require.ErrorAs(t, a.err, &short)
					assert.Equal(t, int64(300), short.Requested)
					assert.Less(t, short.Available, int64(300))
				case a.err == nil:
					r, err := inv.Get(ctx, a.req.ID)
					require.NoError(t, err)
					if r.Lines[0].Qty != a.req.Lines[0].Qty {
						t.Fatalf("%s: reserved %v, asked %v", a.req.ID, r.Lines, a.req.Lines)
					}
				case a.req.BuyerID == "":
					require.ErrorAs(t, a.err, &limit)
					assert.Equal(t, inventory.BuyerLimitError{SKU: "hot", Limit: 3, Requested: 1}, *limit)
				case errors.As(a.err, &conflict):
					assert.Equal(t, inventory.ConflictError{Kind: "reservation", Key: a.req.ID, Err: inventory.ErrIdempotencyConflict}, *conflict)
				case errors.As(a.err, &limit):
					assert.Equal(t, a.req.BuyerID, limit.BuyerID)
					assert.Greater(t, limit.Used+limit.Requested, int64(3), "refused within the limit")
				default:
					t.Fatalf("%s: %v", a.req.ID, a.err)
				}
			}
			// Count what is held from the rows themselves, once per reservation.
			for i := range buyers * each {
				r, err := inv.Get(ctx, "r"+strconv.Itoa(i))
				if errors.Is(err, inventory.ErrReservationNotFound) {
					continue
				}
				require.NoError(t, err)
				units[r.BuyerID] += r.Lines[0].Qty
				total += r.Lines[0].Qty
			}
			for b, n := range units {
				assert.LessOrEqual(t, n, int64(3), b)
			}
			st, err := inv.Stock(ctx, "hot")
			require.NoError(t, err)
			assert.Equal(t, inventory.Stock{SKU: "hot", OnHand: 200, Available: 200 - total, Reserved: total, BuyerLimit: 3}, st)
			var usage int64
			require.NoError(t, db.NewRaw("SELECT COALESCE(SUM(qty), 0) FROM inventory_buyer_usage").Scan(ctx, &usage))
			assert.Equal(t, total, usage, "usage rows count exactly the held units")
			assert.Equal(t, int64(buyers*3), total, "every buyer got its limit")
			batches, calls := be.group.Stats()
			assert.Less(t, batches, calls, "some reservations shared a transaction")
			t.Logf("%d reservations in %d transactions", calls, batches)
		})
	}
}

// TestGroupCommitSurvivesACrash: MariaDB is killed (SIGKILL) while 40 clients reserve one
// hot SKU through shared transactions, then started again; each client repeats its
// reservation with the same ID until it is answered. Every reservation is then held
// exactly once, and the stock row agrees with the rows: a batch whose COMMIT went
// unanswered neither lost nor doubled a unit.
func TestGroupCommitSurvivesACrash(t *testing.T) {
	ctx := context.Background()
	server, dsn := testenv.OwnMySQL(t)
	sqldb, err := sql.Open("mysql", dsn+"&timeout=2s&readTimeout=3s&writeTimeout=3s")
	require.NoError(t, err)
	db := bun.NewDB(sqldb, mysqldialect.New())
	t.Cleanup(func() { db.Close() })
	require.NoError(t, CreateSchema(ctx, db))
	inv := testkit.Must(inventory.New(New(db)))(t)
	const onHand, clients, each = 100_000, 40, 500
	_, err = inv.SetStock(ctx, inventory.StockSetting{SKU: "hot", OnHand: onHand})
	require.NoError(t, err)

	var answered, failed atomic.Int64
	deadline := time.Now().Add(2 * time.Minute)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				req := inventory.ReserveRequest{ID: fmt.Sprintf("c%d-%d", c, i), Lines: []inventory.Line{{SKU: "hot", Qty: 1}}, TTL: time.Hour}
				for {
					_, err := inv.Reserve(ctx, req)
					if err == nil {
						answered.Add(1)
						break
					}
					if errors.Is(err, inventory.ErrInsufficientStock) || errors.Is(err, inventory.ErrIdempotencyConflict) || time.Now().After(deadline) {
						t.Errorf("%s: %v", req.ID, err)
						return
					}
					failed.Add(1)
					time.Sleep(50 * time.Millisecond) // the server is down: the same ID again
				}
			}
		})
	}
	require.Eventually(t, func() bool { return answered.Load() >= clients*each/10 }, time.Minute, time.Millisecond)
	server.Stop(t, 0)
	atCrash := answered.Load()
	time.Sleep(time.Second)
	server.Start(t)
	wg.Wait()
	t.Logf("%d answered when the server was killed, %d attempts failed meanwhile", atCrash, failed.Load())

	const want = clients * each
	var rows, reserved, available int64
	require.NoError(t, db.NewRaw("SELECT COUNT(*) FROM inventory_reservations WHERE state = 'reserved'").Scan(ctx, &rows))
	require.NoError(t, db.NewRaw("SELECT reserved, available FROM inventory_stock WHERE sku = 'hot'").Scan(ctx, &reserved, &available))
	assert.EqualValues(t, want, answered.Load())
	assert.Positive(t, failed.Load(), "the crash interrupted reservations")
	assert.EqualValues(t, want, rows, "every reservation is held once")
	assert.Equal(t, [2]int64{want, onHand - want}, [2]int64{reserved, available}, "the stock row agrees: reserved, available")
}
