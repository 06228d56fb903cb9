// Package commercetest builds a complete commerce.Service on real backends for tests and
// benchmarks, in the two configurations commercekit supports:
//
//   - SQLite: the embedded configuration. One in-memory SQLite database holds everything
//     (SQL inventory, SQL coupon issuer, ledger, payments, outbox); the outbox relay hands
//     events to an in-process consumer (outbox.Dispatcher).
//   - MySQL: MySQL/MariaDB for the SQL parts, Redis for the inventory and the coupon issuer,
//     and a Kafka-protocol broker (testenv.NewKafka) behind the outbox relay.
//   - MySQLSQLInventory: the same without Redis: the SQL inventory and coupon issuer on
//     MySQL/MariaDB, joining checkout's transactions under row locks.
//
// Both use the in-process PG simulator (pgsim) and one fake clock shared by every part.
// Test packages that use it call testenv.Main from their TestMain.
package commercetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// Start is the fake clock's initial time.
var Start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// Env is a Service with every part it is built from, for tests to look behind it.
type Env struct {
	Name      string
	DB        *bun.DB
	Clock     *testclock.Clock
	Service   *commerce.Service
	Inventory *inventory.Inventory
	// Stock is the journaled Redis inventory behind Inventory, and Redis its client, in the
	// configuration with Redis; nil otherwise.
	Stock      *redisinventory.Durable
	Redis      *redis.Client
	Coupons    *coupon.Service
	Ledger     *ledger.Ledger
	Payments   *payment.Service
	Reconciler *payment.Reconciler
	Relay      *outbox.Relay
	PG         *pgsim.Simulator
	// Kafka is the broker of the MySQL configurations (nil for SQLite).
	Kafka *testenv.Kafka
	// Gateway sits between the payment service and the simulator; it can reject refunds.
	Gateway *Gateway
	// Topic is where the service's events go: with SQLite the orders' topic of the default
	// per-type topics (commerce.DefaultTopics), with Kafka the one topic of every event.
	Topic string

	// Statements counts what every part sends through DB (BEGIN, COMMIT and ROLLBACK
	// included), for benchmarks to report statements per operation.
	Statements testkit.Statements

	delivered func(tb testing.TB) map[string]string // event ID → type, as delivered
	seq       atomic.Int64
}

// Config selects a configuration.
type Config func(tb testing.TB, opts ...commerce.Option) *Env

// Configs are the configurations every flow is tested on.
var Configs = []struct {
	Name string
	New  Config
}{{"SQLite", SQLite}, {"MySQL+Redis+Kafka", MySQL}, {"MySQL+Kafka", MySQLSQLInventory}}

// SQLite returns the embedded configuration: everything in one in-memory SQLite database,
// events delivered to an in-process consumer.
func SQLite(tb testing.TB, opts ...commerce.Option) *Env {
	tb.Helper()
	clock := testclock.New(Start)
	e := &Env{Name: "SQLite", Clock: clock, Topic: commerce.DefaultTopic}
	db := e.counted(testenv.SQLite(tb))
	e.Inventory = testkit.Must(inventory.New(sqlinventory.New(db), inventory.WithClock(clock.Now)))(tb)
	e.Coupons = testkit.Must(coupon.New(db, sqlcoupon.New(), coupon.WithClock(clock.Now)))(tb)

	var mu sync.Mutex
	got := map[string]string{}
	consumer, err := outbox.NewConsumer(db, "commercetest", func(_ context.Context, _ bun.Tx, events []outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range events {
			got[ev.ID] = ev.Type
		}
		return nil
	}, outbox.WithClock(clock.Now))
	require.NoError(tb, err)
	var subs []outbox.Subscription
	for _, topic := range commerce.DefaultTopics().Names() {
		subs = append(subs, outbox.Subscription{Topic: topic, Consumer: consumer})
	}
	dispatcher, err := outbox.NewDispatcher(subs...)
	require.NoError(tb, err)
	e.delivered = func(testing.TB) map[string]string {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]string, len(got))
		for k, v := range got {
			out[k] = v
		}
		return out
	}
	e.build(tb, dispatcher, opts)
	return e
}

// MySQL returns the server configuration: MySQL/MariaDB, the Redis inventory journaled in
// MySQL (redisinventory.NewDurable), the Redis coupon issuer, and events published to a
// Kafka-protocol broker.
func MySQL(tb testing.TB, opts ...commerce.Option) *Env { return mysqlEnv(tb, testenv.Redis(tb), opts) }

// MySQLWithRedis is MySQL on the given Redis client (a Redis of the test's own, say, which
// the test stops and starts).
func MySQLWithRedis(tb testing.TB, rdb *redis.Client, opts ...commerce.Option) *Env {
	return mysqlEnv(tb, rdb, opts)
}

// MySQLSQLInventory is the server configuration without Redis: the SQL inventory and coupon
// issuer on MySQL/MariaDB (joining checkout's transactions, with row locks), and Kafka.
func MySQLSQLInventory(tb testing.TB, opts ...commerce.Option) *Env { return mysqlEnv(tb, nil, opts) }

// createSchemas creates commerce's tables, its leaves', and those of every backend an Env
// may wire.
func createSchemas(ctx context.Context, db bun.IDB) error {
	return commerce.CreateAllSchemas(ctx, db,
		sqlinventory.CreateSchema, redisinventory.CreateJournal, sqlcoupon.CreateSchema, sqlidempotency.CreateSchema)
}

// MySQLLinked is MySQLSQLInventory with every part of it reaching the database through
// the returned testenv.Link, so that a test may cut the connection of any statement of a
// flow (see testenv.Link).
func MySQLLinked(tb testing.TB, opts ...commerce.Option) (*Env, *testenv.Link) {
	tb.Helper()
	_, linked, link := testenv.LinkedMySQL(tb)
	return mysqlEnvOn(tb, linked, nil, opts), link
}

// MySQLLinkedAt is MySQLLinked on the database of dsn (one of testenv.OwnMySQL, say, for a
// test that kills the server at a cut: see testenv.Link.ArmThen).
func MySQLLinkedAt(tb testing.TB, dsn string, opts ...commerce.Option) (*Env, *testenv.Link) {
	tb.Helper()
	_, linked, link := testenv.LinkedMySQLAt(tb, dsn)
	return mysqlEnvOn(tb, linked, nil, opts), link
}

func mysqlEnv(tb testing.TB, rdb *redis.Client, opts []commerce.Option) *Env {
	tb.Helper()
	return mysqlEnvOn(tb, testenv.MySQL(tb), rdb, opts)
}

// mysqlEnvOn is a server configuration on db (MySQL), with the Redis inventory and coupon
// issuer on rdb, or the SQL ones when rdb is nil.
func mysqlEnvOn(tb testing.TB, db *bun.DB, rdb *redis.Client, opts []commerce.Option) *Env {
	tb.Helper()
	kafka := testenv.NewKafka(tb)
	clock := testclock.New(Start)
	e := &Env{Name: "MySQL", Clock: clock, Topic: kafka.Topic(tb, "orders"), Kafka: kafka}
	db = e.counted(db)
	if rdb != nil {
		require.NoError(tb, createSchemas(context.Background(), db))
		e.Stock, e.Redis = testkit.Must(redisinventory.NewDurable(rdb, db))(tb), rdb
		_, err := e.Stock.Heal(context.Background())
		require.NoError(tb, err)
		e.Inventory = testkit.Must(inventory.New(e.Stock, inventory.WithClock(clock.Now)))(tb)
		e.Coupons = testkit.Must(coupon.New(db, rediscoupon.New(rdb), coupon.WithClock(clock.Now)))(tb)
	} else {
		e.Inventory = testkit.Must(inventory.New(sqlinventory.New(db), inventory.WithClock(clock.Now)))(tb)
		e.Coupons = testkit.Must(coupon.New(db, sqlcoupon.New(), coupon.WithClock(clock.Now)))(tb)
	}
	pub, err := saramaoutbox.NewPublisher(kafka.Brokers, saramaoutbox.ProducerConfig())
	require.NoError(tb, err)
	tb.Cleanup(func() { pub.Close() })
	e.delivered = kafkaReader(tb, kafka.Brokers, e.Topic)
	e.build(tb, pub, append([]commerce.Option{commerce.WithTopic(e.Topic)}, opts...))
	return e
}

// counted makes db, with a hook counting its statements in e.Statements, the Env's DB.
func (e *Env) counted(db *bun.DB) *bun.DB {
	e.DB = db.WithQueryHook(&e.Statements)
	return e.DB
}

func (e *Env) build(tb testing.TB, pub outbox.Publisher, opts []commerce.Option) {
	tb.Helper()
	ctx := context.Background()
	require.NoError(tb, createSchemas(ctx, e.DB))
	now := e.Clock.Now
	e.Ledger = testkit.Must(ledger.New(e.DB, ledger.WithClock(now)))(tb)
	e.PG = testkit.Must(pgsim.New(pgsim.WithClock(now)))(tb)
	tb.Cleanup(e.PG.Close)
	e.Gateway = &Gateway{Simulator: e.PG}
	var err error
	e.Payments, err = payment.New(e.DB, e.Gateway, payment.WithClock(now),
		payment.WithWebhookVerifier(e.PG.WebhookVerifier()))
	require.NoError(tb, err)
	e.Reconciler = testkit.Must(payment.NewReconciler(e.Payments, payment.WithThreshold(0), payment.WithInterval(10*time.Millisecond)))(tb)
	e.Relay, err = outbox.NewRelay(e.DB, pub, outbox.WithClock(now), outbox.WithInterval(10*time.Millisecond))
	require.NoError(tb, err)
	writer, err := outbox.NewWriter(outbox.WithClock(now))
	require.NoError(tb, err)
	e.Service, err = commerce.New(commerce.Config{
		DB: e.DB, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments,
		Reconciler: e.Reconciler, Outbox: writer, Relay: e.Relay,
	}, append([]commerce.Option{commerce.WithClock(now)}, opts...)...)
	require.NoError(tb, err)
}

// Gateway passes calls to the simulator, except that it rejects refunds while
// RejectRefunds is set (the simulator itself never rejects a valid refund), and calls
// BeforeApprove, if set, before passing an approval on (to hold it in flight).
type Gateway struct {
	*pgsim.Simulator
	RejectRefunds atomic.Bool
	BeforeApprove func()
}

// Approve calls BeforeApprove, then approves through the simulator.
func (g *Gateway) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	if g.BeforeApprove != nil {
		g.BeforeApprove()
	}
	return g.Simulator.Approve(ctx, req)
}

// Cancel refunds through the simulator, or rejects the refund.
func (g *Gateway) Cancel(ctx context.Context, req payment.CancelRequest) (payment.Cancellation, error) {
	if g.RejectRefunds.Load() {
		return payment.Cancellation{}, &payment.DeclineError{Code: "REFUND_DECLINED", Message: "refund rejected by the test"}
	}
	return g.Simulator.Cancel(ctx, req)
}

// ID returns a name unique within the Env, for users, keys and products.
func (e *Env) ID(prefix string) string { return fmt.Sprintf("%s-%d", prefix, e.seq.Add(1)) }

// Product creates a product with a unique ID and returns the ID.
func (e *Env) Product(tb testing.TB, price, stock int64) string {
	tb.Helper()
	id := e.ID("sku")
	_, err := e.Service.CreateProduct(context.Background(), commerce.NewProduct{ID: id, Name: "Product " + id, Price: price, Stock: stock})
	require.NoError(tb, err)
	return id
}

// GivePoints charges points to a user directly in the ledger.
func (e *Env) GivePoints(tb testing.TB, user string, amount int64) {
	tb.Helper()
	_, err := e.Ledger.Charge(context.Background(), ledger.ChargeRequest{ID: e.ID("gift"), User: user, Amount: amount})
	require.NoError(tb, err)
}

// CouponTemplate creates a template of fixed-amount coupons (unlimited) and returns its ID.
func (e *Env) CouponTemplate(tb testing.TB, amount int64) string {
	tb.Helper()
	id := e.ID("tpl")
	_, err := e.Service.CreateCouponTemplate(context.Background(), coupon.Template{
		ID: id, Name: "Coupon " + id, Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: amount}, PerUserLimit: 1000,
	})
	require.NoError(tb, err)
	return id
}

// GiveCoupon issues a coupon of the template to the user and returns its ID.
func (e *Env) GiveCoupon(tb testing.TB, template, user string) string {
	tb.Helper()
	c, err := e.Service.IssueCoupon(context.Background(), template, user, e.ID("req"))
	require.NoError(tb, err)
	return c.ID
}

// Drain relays the outbox until it is empty.
func (e *Env) Drain(tb testing.TB) {
	tb.Helper()
	for {
		n, err := e.Relay.RelayOnce(context.Background())
		require.NoError(tb, err)
		if n == 0 {
			return
		}
	}
}

// RequireDelivered drains the outbox and waits until every event in it has reached the
// consumer side (the in-process consumer, or the Kafka topic), each with its type.
func (e *Env) RequireDelivered(tb testing.TB) {
	tb.Helper()
	e.Drain(tb)
	type row struct {
		ID   string `bun:"id"`
		Type string `bun:"event_type"`
		Key  string `bun:"aggregate_key"`
		Seq  int64  `bun:"seq"`
		Sent bool   `bun:"sent"`
	}
	var rows []row
	require.NoError(tb, e.DB.NewSelect().Table(outbox.TableEvents).Column("id", "event_type", "aggregate_key", "seq").
		ColumnExpr("sent_at IS NOT NULL AS sent").Scan(context.Background(), &rows))
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := e.delivered(tb)
		var missing []row
		for _, r := range rows {
			if got[r.ID] != r.Type {
				missing = append(missing, r)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d events not delivered (%d delivered): %+v", len(missing), len(rows), len(got), missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RequireClean runs the audit and fails the test with every discrepancy it reports.
func (e *Env) RequireClean(tb testing.TB) commerce.Report {
	tb.Helper()
	rep, err := e.Service.Audit(context.Background())
	require.NoError(tb, err)
	if !rep.OK() {
		for _, d := range rep.Discrepancies {
			tb.Errorf("audit: %s", d)
		}
		tb.FailNow()
	}
	return rep
}

// Settle runs the payment reconciler and then commerce's recovery once.
func (e *Env) Settle(tb testing.TB) commerce.RecoverReport {
	tb.Helper()
	_, err := e.Reconciler.Reconcile(context.Background())
	require.NoError(tb, err)
	rep, err := e.Service.Recover(context.Background())
	require.NoError(tb, err)
	return rep
}

// kafkaReader consumes topic (read_committed, from the oldest offset) in the background
// once the topic exists, and returns a function reporting what it has read.
func kafkaReader(tb testing.TB, brokers []string, topic string) func(testing.TB) map[string]string {
	var (
		mu      sync.Mutex
		got     = map[string]string{}
		started bool
		wg      sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); wg.Wait() })
	return func(tb testing.TB) map[string]string {
		mu.Lock()
		if !started {
			started = true
			consumer, err := sarama.NewConsumer(brokers, saramaoutbox.ConsumerConfig())
			require.NoError(tb, err)
			partitions, err := consumer.Partitions(topic)
			require.NoError(tb, err)
			for _, p := range partitions {
				pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
				require.NoError(tb, err)
				wg.Go(func() {
					for {
						select {
						case <-ctx.Done():
							pc.Close()
							return
						case m := <-pc.Messages():
							ev := saramaoutbox.EventFromMessage(m)
							mu.Lock()
							got[ev.ID] = ev.Type
							mu.Unlock()
						}
					}
				})
			}
			wg.Go(func() { <-ctx.Done(); consumer.Close() })
		}
		out := make(map[string]string, len(got))
		for k, v := range got {
			out[k] = v
		}
		mu.Unlock()
		return out
	}
}

// Steps runs fn with a fault hook that records every step boundary it passes, and returns
// them in order, without duplicates.
func Steps(hook *Hook, fn func()) []string {
	hook.mu.Lock()
	hook.seen, hook.failAt = nil, ""
	hook.mu.Unlock()
	fn()
	hook.mu.Lock()
	defer hook.mu.Unlock()
	return slices.Compact(slices.Clone(hook.seen))
}

// Hook is a fault hook for commerce.WithFaultHook: it records the steps it sees and fails
// once at a chosen one.
type Hook struct {
	mu     sync.Mutex
	seen   []string
	failAt string
}

// Func is the function to pass to commerce.WithFaultHook.
func (h *Hook) Func(step string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, step)
	if step == h.failAt {
		h.failAt = ""
		return fmt.Errorf("process killed at %s", step)
	}
	return nil
}

// FailAt makes the next pass through step fail (once).
func (h *Hook) FailAt(step string) {
	h.mu.Lock()
	h.failAt = step
	h.mu.Unlock()
}
