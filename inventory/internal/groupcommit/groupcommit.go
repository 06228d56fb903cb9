// Package groupcommit combines concurrent reservations into one unit of work of the
// store: a shared SQL transaction (sqlinventory's hot SKUs, the journal of
// redisinventory.NewDurable; see InTx) or one Redis script call (redisinventory). The same
// machinery combines resolutions (Resolve: the journal's commits, releases and returns).
//
// Reservations with the same key that arrive while a batch of that key is in progress
// queue up; the first of them then leads the whole queue through one unit of work, in
// which the store gives every reservation its own answer. A leader that finds nobody
// waiting runs its one reservation at once: there is no timer and no added latency
// without contention; the window is the previous batch (the classic group commit). A
// batch may pass the lead on early (ready), e.g. when its statements are done and only
// its COMMIT is left, so the next batch prepares while this one commits.
//
// Only transactions of the store's own are shared: a reservation in the caller's
// transaction cannot be, and does not come here.
package groupcommit

import (
	"context"
	"errors"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/sqlrow"
)

// MaxBatch caps the reservations one transaction commits.
const MaxBatch = 128

// Call is one reservation in a batch. The store's batch function sets Out (the
// reservation reserved, or the stored one of a replay) or Err (this reservation's own
// failure: a domain error; one that fails the whole transaction is returned instead).
type Call struct {
	Ctx context.Context
	R   inventory.Reservation
	Out inventory.Reservation
	Err error
	// Replay is set by InsertRows when the reservation's row existed.
	Replay bool
	// batch, on the call that is to lead, holds the calls it commits (itself first).
	batch []*Call
	// done receives once: when the result is set, or when the call is to lead.
	done chan struct{}
}

// Run reserves calls (distinct IDs, one key, each with a live context) and sets each
// call's Out or Err. ctx ends only when every caller's context has ended. It may call
// ready once, to pass the lead on before it returns.
type Run func(ctx context.Context, calls []*Call, ready func())

// Batch reserves calls (distinct IDs, one key) in tx. It runs again from the start when
// the transaction is retried.
type Batch func(ctx context.Context, tx bun.Tx, calls []*Call) error

// Committer runs the group commits of one store.
type Committer struct {
	run Run
	max int // the most calls a batch carries
	// lanes is how many batches of one key may be in progress at once (see SetLanes);
	// seed hashes reservation IDs onto them.
	lanes uint32
	seed  maphash.Seed
	mu    sync.Mutex
	// queues holds, per key and lane with a batch in progress, the calls waiting for the
	// next one.
	queues map[queueKey][]*Call
	// batches and calls count the transactions run and the reservations they carried.
	batches, calls atomic.Int64
}

// New returns a Committer running its batches with run.
func New(run Run) *Committer {
	return &Committer{run: run, max: MaxBatch, lanes: 1, seed: maphash.MakeSeed(), queues: map[queueKey][]*Call{}}
}

// queueKey is a key's lane.
type queueKey struct {
	key  string
	lane uint64
}

// SetLanes lets n batches of one key be in progress at once (default 1; n < 1 counts as
// 1): a reservation goes to the lane its ID hashes to, so two calls with one ID still
// meet in one lane, and each lane batches as a key alone does. More than one lane suits a
// store whose units of work do not wait for each other (a Redis script call: the server
// runs one at a time anyway, and the lanes keep it busy while a reply travels), not one
// whose batches would queue on the same row lock. Call it before any Reserve.
func (m *Committer) SetLanes(n int) { m.lanes = uint32(max(n, 1)) }

// SetMaxBatch sets the most calls a batch carries (default MaxBatch; n < 1 counts as 1).
// 1 turns the combining off, for measuring what it brings. Call it before any Reserve.
func (m *Committer) SetMaxBatch(n int) { m.max = max(n, 1) }

// InTx returns a Run that runs batch in a transaction of its own on db (retried on lock
// conflicts as sqlutil.InTx does) and passes the lead on before the COMMIT; fail
// translates a failed transaction's error for each caller (with its own context).
func InTx(db bun.IDB, batch Batch, fail func(ctx context.Context, err error) error) Run {
	return func(ctx context.Context, calls []*Call, ready func()) {
		err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
			for _, c := range calls {
				c.Out, c.Err, c.Replay = inventory.Reservation{}, nil, false
			}
			if err := batch(ctx, tx, calls); err != nil {
				return err
			}
			ready()
			return nil
		})
		if err != nil {
			for _, c := range calls {
				c.Out, c.Err = inventory.Reservation{}, fail(c.Ctx, err)
			}
		}
	}
}

// Stats returns how many transactions the Committer ran and how many reservations they
// carried.
func (m *Committer) Stats() (batches, calls int64) { return m.batches.Load(), m.calls.Load() }

// Reserve reserves r in a batch of key and returns its own answer.
func (m *Committer) Reserve(ctx context.Context, key string, r inventory.Reservation) (inventory.Reservation, error) {
	q := queueKey{key: key}
	if m.lanes > 1 {
		q.lane = maphash.String(m.seed, r.ID) % uint64(m.lanes)
	}
	c := &Call{Ctx: ctx, R: r, done: make(chan struct{}, 1)}
	m.mu.Lock()
	if queue, busy := m.queues[q]; busy {
		m.queues[q] = append(queue, c)
		m.mu.Unlock()
		// No select on ctx: the call may be in a transaction already. A batch is abandoned
		// only when all its callers are gone (see commit), and ends within one commit.
		<-c.done
	} else {
		m.queues[q] = nil
		m.mu.Unlock()
		c.batch = []*Call{c}
	}
	if c.batch != nil {
		m.lead(q, c.batch)
	}
	if c.Err != nil {
		return inventory.Reservation{}, c.Err
	}
	return c.Out, nil
}

// Resolve resolves reservation id to the state to at now in a batch of key and returns
// its own answer. The batch function finds the ID in R.ID, the state asked for in
// R.State and the time in R.ResolvedAt, and sets Out.State (the state it ends in) or Err.
func (m *Committer) Resolve(ctx context.Context, key, id string, to inventory.State, now time.Time) (inventory.State, error) {
	out, err := m.Reserve(ctx, key, inventory.Reservation{ID: id, State: to, ResolvedAt: now})
	return out.State, err
}

// lead commits batch, passing the lead on before the commit, and wakes its other callers.
func (m *Committer) lead(key queueKey, batch []*Call) {
	var once sync.Once
	handOff := func() { once.Do(func() { m.handOff(key) }) }
	m.commit(batch, handOff)
	handOff()
	for _, c := range batch[1:] {
		c.done <- struct{}{}
	}
}

// handOff gives the lead of key to the first call that queued meanwhile, with the queue
// as its batch, or ends the key's group when nobody queued.
func (m *Committer) handOff(key queueKey) {
	m.mu.Lock()
	queue := m.queues[key]
	if len(queue) == 0 {
		delete(m.queues, key)
		m.mu.Unlock()
		return
	}
	next, rest := take(queue, m.max)
	m.queues[key] = rest
	next[0].batch = next
	m.mu.Unlock()
	next[0].done <- struct{}{}
}

// take splits the next batch off queue: at most limit calls, no two with one ID (a
// second call with an ID waits for the next batch, where it is a replay).
func take(queue []*Call, limit int) (batch, rest []*Call) {
	ids := make(map[string]bool, min(len(queue), limit))
	for _, c := range queue {
		if len(batch) < limit && !ids[c.R.ID] {
			ids[c.R.ID] = true
			batch = append(batch, c)
		} else {
			rest = append(rest, c)
		}
	}
	return batch, rest
}

// commit runs the batch and so sets each call's result. Calls whose context ended while
// they queued get its error and are left out.
func (m *Committer) commit(batch []*Call, ready func()) {
	live := make([]*Call, 0, len(batch))
	for _, c := range batch {
		if err := c.Ctx.Err(); err != nil {
			c.Err = err
		} else {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	m.batches.Add(1)
	m.calls.Add(int64(len(live)))
	ctx, cancel := allDone(live)
	defer cancel()
	m.run(ctx, live, ready)
}

// allDone returns a context that carries the first call's values and ends only when every
// call's context has ended: one caller giving up does not fail the others.
func allDone(calls []*Call) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(calls[0].Ctx))
	var left atomic.Int64
	left.Store(int64(len(calls)))
	stops := make([]func() bool, len(calls))
	for i, c := range calls {
		stops[i] = context.AfterFunc(c.Ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// InsertRows inserts the calls' reservation rows into table (the columns of
// sqlrow.Insert), in one statement when none exists yet; otherwise one by one through
// sqlrow.Insert, answering each call whose row exists as a replay (Replay, with Out or a
// conflict in Err). It returns the calls that are not replays.
func InsertRows(ctx context.Context, tx bun.Tx, table string, calls []*Call, shareLock string) ([]*Call, error) {
	var q strings.Builder
	q.WriteString(`INSERT INTO ` + table + ` (id, state, items, buyer_id, created_at, expires_at) VALUES `)
	args := make([]any, 0, 6*len(calls))
	for i, c := range calls {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?)")
		args = append(args, c.R.ID, string(inventory.StateReserved), inventory.EncodeLines(c.R.Lines), c.R.BuyerID,
			c.R.CreatedAt.UnixMilli(), c.R.ExpiresAt.UnixMilli())
	}
	_, err := tx.ExecContext(ctx, q.String(), args...)
	if err == nil {
		return calls, nil
	}
	if !sqlutil.IsDuplicateKey(err) {
		return nil, err
	}
	fresh := make([]*Call, 0, len(calls))
	for _, c := range calls {
		c.Replay, c.Out, c.Err = sqlrow.Insert(ctx, tx, table, c.R, shareLock)
		switch {
		case c.Err != nil && !errors.Is(c.Err, inventory.ErrIdempotencyConflict):
			return nil, c.Err
		case !c.Replay:
			fresh = append(fresh, c)
		}
	}
	return fresh, nil
}

// Refuse deletes the rows InsertRows inserted for the refused calls from table, and
// from each of the tables in byReservation (keyed by reservation_id).
func Refuse(ctx context.Context, tx bun.Tx, table string, refused []*Call, byReservation ...string) error {
	if len(refused) == 0 {
		return nil
	}
	ids := make([]string, len(refused))
	for i, c := range refused {
		ids[i] = c.R.ID
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE id IN (?)`, bun.List(ids)); err != nil {
		return err
	}
	for _, t := range byReservation {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE reservation_id IN (?)`, bun.List(ids)); err != nil {
			return err
		}
	}
	return nil
}
