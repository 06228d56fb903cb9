package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/sqlitedb"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/mysqlwatch"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// idempotencyDrain bounds how long closing waits for the idempotency store's background
// attempts (responses not yet stored, claims not yet released).
const idempotencyDrain = 5 * time.Second

// eventLogConsumer names the in-process consumer of the embedded mode.
const eventLogConsumer = "refserver-event-log"

// sqlitePragmas make the embedded database file fit for concurrent HTTP load: WAL (readers
// never block the writer), a busy timeout (another process on the file waits instead of
// failing), writers taking the lock at BEGIN (no deadlock-prone lock upgrades), foreign
// keys on. synchronous=NORMAL is durable against a crash of the process, not of the machine.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
	"&_pragma=foreign_keys(1)&_txlock=immediate"

// openDB opens the database of cfg. SQLite gets one connection: SQLite has one writer
// anyway, and a single connection rules out SQLITE_BUSY under load (the packages never use
// the pool while holding one of its transactions). MySQL gets parseTime and UTC times,
// and a watch (mysqlwatch) that fails its connections fast while the server does not
// answer, to Run until shutdown (nil for SQLite); with probeWrites it also probes writes
// (writeProbeTable must exist by the time it runs), for the server to refuse its writes at
// once while they are held (see Server.route). m may be nil.
func openDB(cfg Config, log *slog.Logger, m *metrics, probeWrites bool) (db *bun.DB, watch *mysqlwatch.Watch, err error) {
	switch cfg.DBDriver {
	case DriverMySQL:
		mc, err := mysql.ParseDSN(cfg.DBDSN)
		if err != nil {
			return nil, nil, err
		}
		mc.ParseTime, mc.Loc = true, time.UTC
		mysqlTimeouts(mc)
		opts := mysqlwatch.Options{Log: log.With("component", "mysql"), OnChange: m.mysqlUp, MaxConnAge: mysqlConnMaxLifetime}
		if probeWrites {
			opts.WriteProbe, opts.OnWritable = writeProbe, m.mysqlWritable
		}
		w, err := mysqlwatch.New(mc, opts)
		if err != nil {
			return nil, nil, err
		}
		conn, err := w.Connector()
		if err != nil {
			return nil, nil, err
		}
		sqldb := sql.OpenDB(conn)
		sqldb.SetMaxOpenConns(mysqlMaxOpenConns)
		sqldb.SetMaxIdleConns(mysqlMaxOpenConns)
		sqldb.SetConnMaxLifetime(mysqlConnMaxLifetime)
		sqldb.SetConnMaxIdleTime(mysqlConnMaxIdleTime)
		return bun.NewDB(sqldb, mysqldialect.New()), w, nil
	default:
		dsn := cfg.DBDSN
		if dsn == "" {
			dsn = DefaultSQLiteFile
		}
		if !strings.Contains(dsn, "?") {
			dsn = "file:" + strings.TrimPrefix(dsn, "file:") + "?" + sqlitePragmas
		}
		sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
		if err != nil {
			return nil, nil, err
		}
		sqldb.SetMaxOpenConns(1)
		sqldb.SetMaxIdleConns(1)
		sqldb.SetConnMaxLifetime(0)
		return bun.NewDB(sqldb, sqlitedb.Dialect()), nil, nil
	}
}

// writeProbeTable is the table of the MySQL watch's write probe (writeProbe). It stays
// empty.
var writeProbeTable = sqlutil.Table{Name: "refserver_write_probe", Columns: `id INT NOT NULL PRIMARY KEY`}

// writeProbe is the write the MySQL watch runs after each answered ping (see
// mysqlwatch.Options.WriteProbe): a DELETE of a row that never exists. It opens the table
// for writing, so a global read lock holds it and read_only refuses it, as any write; but
// it changes nothing, logs nothing (no redo, no binlog) and takes no lock another
// instance's probe waits for.
const writeProbe = "DELETE FROM refserver_write_probe WHERE id = 0"

// stack is everything the server runs on, built from a Config.
type stack struct {
	db       *bun.DB
	rdb      *redis.Client
	kafka    *saramaoutbox.Publisher
	relay    *outbox.Relay    // its dead letters are the admin's to redrive or skip
	sim      *pgsim.Simulator // the in-process simulator (nil over HTTP)
	inv      *inventory.Inventory
	coupons  *coupon.Service
	ledger   *ledger.Ledger
	payments *payment.Service
	idem     *idempotency.Store
	svc      *commerce.Service
	// collector keeps the sales metrics the ranking routes read (see analytics.go).
	collector *collector.Collector
	// consumers are the outbox consumers this process runs: their dead letters are the
	// admin's to list and redrive.
	consumers []*outbox.Consumer
	// notifier sends paid orders to the data platform (nil without one): its dead
	// deliveries are the admin's to list and redrive.
	notifier *dataplatform.Notifier
	checks   []check
	// writable, if set, says whether the database takes writes: nil, or the error to
	// refuse a write with at once (mysqlwatch.Watch.Writable).
	writable func() error
	// loops run in the background until shutdown (besides commerce's Run).
	loops []func(ctx context.Context) error
}

// buildStack opens the backends of cfg, creates the tables, and composes commerce.
func buildStack(ctx context.Context, cfg Config, log *slog.Logger, m *metrics) (st *stack, err error) {
	st = &stack{}
	defer func() {
		if err != nil {
			st.close(log)
		}
	}()
	var watch *mysqlwatch.Watch
	if st.db, watch, err = openDB(cfg, log, m, true); err != nil {
		return st, fmt.Errorf("opening the database: %w", err)
	}
	if watch != nil {
		st.loops = append(st.loops, watch.Run)
		st.writable = watch.Writable
		st.checks = append(st.checks, check{name: "mysql_writes", degrades: true,
			fn: func(context.Context) error { return watch.Writable() }})
		if err = sqlutil.CreateTables(ctx, st.db, writeProbeTable); err != nil {
			return st, fmt.Errorf("creating the tables: %w", err)
		}
	}
	st.db = st.db.WithQueryHook(newSQLRoundTrips(m))
	st.checks = append(st.checks, check{name: "database", fn: st.db.PingContext})
	// Every backend's tables, whichever this configuration uses: a later start may use the others.
	if err = commerce.CreateAllSchemas(ctx, st.db, sqlinventory.CreateSchema, redisinventory.CreateJournal,
		sqlcoupon.CreateSchema, sqlidempotency.CreateSchema); err != nil {
		return st, fmt.Errorf("creating the tables: %w", err)
	}

	var invBackend inventory.Backend = sqlinventory.New(st.db)
	var issuer coupon.Issuer = sqlcoupon.New()
	var idemBackend idempotency.Backend = sqlidempotency.New(st.db)
	if cfg.RedisAddr != "" {
		st.rdb = redis.NewClient(redisOptions(cfg))
		st.rdb.AddHook(newRedisRoundTrips(m))
		st.checks = append(st.checks, check{name: "redis", fn: func(ctx context.Context) error { return st.rdb.Ping(ctx).Err() }})
		if invBackend, err = st.durableStock(ctx, log.With("component", "inventory")); err != nil {
			return st, err
		}
		issuer = rediscoupon.New(st.rdb)
		idemBackend = redisidempotency.New(st.rdb)
	}
	if st.inv, err = inventory.New(invBackend, inventory.WithLogger(log.With("component", "inventory")),
		inventory.WithObserver(m)); err != nil {
		return st, err
	}
	if st.coupons, err = coupon.New(st.db, issuer, coupon.WithLogger(log.With("component", "coupon")),
		coupon.WithObserver(m)); err != nil {
		return st, err
	}
	// The configuration started last decides each template's issuer: adding Redis moves
	// every template to it, and instances still without it refuse them until replaced.
	// With Redis down the claim (which rebuilds the template's Redis state) waits for it
	// in the background, as the stock's healer does: the server starts, and refuses the
	// templates still another issuer's meanwhile (503).
	if err = claimCoupons(ctx, st.coupons, issuer.Name(), log); errors.Is(err, errcode.ErrUnavailable) {
		log.Warn("coupon templates not yet claimed for this server's issuer; retrying in the background",
			"issuer", issuer.Name(), "err", err)
		st.loops = append(st.loops, func(ctx context.Context) error { return retryClaims(ctx, st.coupons, issuer.Name(), log) })
	} else if err != nil {
		return st, err
	}
	if st.ledger, err = ledger.New(st.db, ledger.WithLogger(log.With("component", "ledger")),
		ledger.WithObserver(m)); err != nil {
		return st, err
	}
	if st.idem, err = idempotency.New(idemBackend, idempotency.WithLockTimeout(cfg.IdempotencyLock),
		idempotency.WithLogger(log.With("component", "idempotency")), idempotency.WithObserver(m)); err != nil {
		return st, err
	}
	if idemBackend.JoinsTx() { // SQL: expired keys are deleted by a loop; Redis expires them itself
		st.loops = append(st.loops, func(ctx context.Context) error { return ignoreCanceled(st.idem.RunPurger(ctx, time.Minute)) })
	}

	// The payment gateway: the simulator in process or over HTTP, behind the resilience policies.
	webhookSecret := cfg.WebhookSecret
	if webhookSecret == "" { // the embedded default (Validate requires one otherwise)
		if webhookSecret, err = randomSecret(); err != nil {
			return st, err
		}
	}
	var raw payment.Gateway
	var deliver func(ctx context.Context, body []byte, signature string) error // set once commerce exists
	if cfg.PGSimURL != "" {
		client, err := pgsim.NewClient(cfg.PGSimURL)
		if err != nil {
			return st, err
		}
		raw = client
		st.checks = append(st.checks, check{name: "payment_gateway", degrades: true, fn: func(ctx context.Context) error {
			// A status query for a payment that does not exist: "not found" means the PG answers.
			if _, err := client.Status(ctx, "readyz-probe"); err != nil && !errors.Is(err, payment.ErrNotAtGateway) {
				return err
			}
			return nil
		}})
	} else {
		opts := []pgsim.Option{pgsim.WithLogger(log.With("component", "pgsim")),
			pgsim.WithWebhookSecret([]byte(webhookSecret)),
			pgsim.WithWebhook(func(ctx context.Context, body []byte, sig string) error {
				if deliver == nil {
					return errors.New("refserver: not started yet")
				}
				return deliver(ctx, body, sig)
			}, 3)}
		if cfg.PGSimLatency > 0 {
			opts = append(opts, pgsim.WithLatency(cfg.PGSimLatency, cfg.PGSimLatency))
		}
		if cfg.PGSimDeclineRate > 0 {
			opts = append(opts, pgsim.WithDeclineRate(cfg.PGSimDeclineRate))
		}
		if st.sim, err = pgsim.New(opts...); err != nil {
			return st, err
		}
		raw = st.sim
	}
	gw, err := resilient.Wrap(raw, resilient.WithAttemptTimeout(cfg.PGTimeout), resilient.WithLogger(log.With("component", "resilient")),
		resilient.WithObserver(m))
	if err != nil {
		return st, err
	}
	if st.payments, err = payment.New(st.db, gw, payment.WithLogger(log.With("component", "payment")),
		payment.WithObserver(m),
		payment.WithWebhookVerifier(pgsim.NewWebhookVerifier([]byte(webhookSecret)))); err != nil {
		return st, err
	}

	// The outbox: to Kafka, or to in-process consumers (the event log, the collector, the
	// data-platform notifier).
	topics, err := eventTopics(cfg.KafkaTopics)
	if err != nil {
		return st, err
	}
	subs, err := st.buildAnalytics(ctx, cfg, log, m, topics)
	if err != nil {
		return st, err
	}
	var pub outbox.Publisher
	if len(cfg.KafkaBrokers) > 0 {
		if st.kafka, err = saramaoutbox.NewPublisher(cfg.KafkaBrokers, nil); err != nil {
			return st, err
		}
		pub = st.kafka
		st.checks = append(st.checks, check{name: "kafka", degrades: true, fn: func(context.Context) error { return pingKafka(cfg.KafkaBrokers) }})
	} else {
		consumer, err := outbox.NewConsumer(st.db, eventLogConsumer, eventLog(log.With("component", "events")),
			outbox.WithLogger(log.With("component", "outbox")), outbox.WithObserver(m))
		if err != nil {
			return st, err
		}
		st.consumers = append(st.consumers, consumer)
		for _, topic := range topics.Names() {
			subs = append(subs, outbox.Subscription{Topic: topic, Consumer: consumer})
		}
		if pub, err = outbox.NewDispatcher(subs...); err != nil {
			return st, err
		}
	}
	outLog := outbox.WithLogger(log.With("component", "outbox"))
	writer, err := outbox.NewWriter(outLog)
	if err != nil {
		return st, err
	}
	st.relay, err = outbox.NewRelay(st.db, pub, outLog, outbox.WithObserver(m))
	if err != nil {
		return st, err
	}
	cleaner, err := outbox.NewCleaner(st.db, outLog, outbox.WithObserver(m))
	if err != nil {
		return st, err
	}

	reconciler, err := payment.NewReconciler(st.payments)
	if err != nil {
		return st, err
	}
	st.svc, err = commerce.New(commerce.Config{
		DB: st.db, Inventory: st.inv, Coupons: st.coupons, Ledger: st.ledger, Payments: st.payments,
		Reconciler: reconciler, Outbox: writer, Relay: st.relay, Cleaner: cleaner,
	},
		commerce.WithLogger(log.With("component", "commerce")),
		commerce.WithObserver(m),
		commerce.WithOrderExpiry(cfg.OrderExpiry),
		commerce.WithPaymentWindow(cfg.PaymentWindow),
		commerce.WithCancelWindow(cfg.CancelWindow),
		commerce.WithRewardRate(cfg.RewardRateBP),
		commerce.WithUnpaidLimits(cfg.MaxUnpaidPerProduct, cfg.MaxUnpaidUnits),
		commerce.WithTopics(topics),
	)
	if err != nil {
		return st, err
	}
	deliver = st.svc.HandlePaymentWebhook
	st.checks = append(st.checks, check{name: "commerce", fn: st.svc.Ready})
	return st, nil
}

// durableStock is the full mode's inventory: Redis journaled in the database, so SQL is the
// system of record of every unit. Redis is built from the journal at start and healed by a
// background loop whenever it loses data (a restart without persistence, a failover); until
// then stock requests answer 503 dependency_unavailable with Retry-After. A Redis holding
// stock the journal never recorded (redisinventory.ErrUnjournaledData) is no passing
// failure: the start fails with it.
func (st *stack) durableStock(ctx context.Context, log *slog.Logger) (*redisinventory.Durable, error) {
	d, err := redisinventory.NewDurable(st.rdb, st.db, redisinventory.WithLogger(log))
	if err != nil {
		return nil, err
	}
	if _, err := d.Heal(ctx); errors.Is(err, redisinventory.ErrUnjournaledData) {
		return nil, fmt.Errorf("building Redis stock: %w", err)
	} else if err != nil {
		log.Warn("Redis stock not built yet; the healer keeps trying", "err", err)
	}
	st.loops = append(st.loops, func(ctx context.Context) error { return d.Run(ctx, time.Second) })
	return d, nil
}

// claimCoupons claims every coupon template for this server's issuer (ClaimAllIssuance)
// and logs the templates it moved.
func claimCoupons(ctx context.Context, coupons *coupon.Service, issuer string, log *slog.Logger) error {
	moved, err := coupons.ClaimAllIssuance(ctx)
	if err != nil {
		return fmt.Errorf("claiming the coupon templates for this server's issuer: %w", err)
	}
	if moved > 0 {
		log.Warn("coupon templates moved to this server's issuer", "templates", moved, "issuer", issuer)
	}
	return nil
}

// retryClaims calls claimCoupons every second until it does not fail for a dependency
// down: the start-up claim that met one. Another error stops it.
func retryClaims(ctx context.Context, coupons *coupon.Service, issuer string, log *slog.Logger) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := claimCoupons(ctx, coupons, issuer, log); !errors.Is(err, errcode.ErrUnavailable) {
			return err
		}
	}
}

// eventLog is the handler of the embedded mode's in-process consumer: it logs each event,
// standing in for the data platform of seed 001 that Kafka consumers would be in full mode.
func eventLog(log *slog.Logger) outbox.HandlerFunc {
	return func(ctx context.Context, _ bun.Tx, events []outbox.Event) error {
		for _, e := range events {
			log.DebugContext(ctx, "event", "id", e.ID, "type", e.Type, "key", e.Key, "seq", e.Seq)
		}
		return nil
	}
}

// pingKafka asks the brokers for metadata with short timeouts. The client contacts no
// broker when it is made (Metadata.Full is off, so as not to fetch every topic's
// metadata): the request for the brokers alone is what asks them.
func pingKafka(brokers []string) error {
	c := sarama.NewConfig()
	c.Net.DialTimeout, c.Net.ReadTimeout, c.Net.WriteTimeout = time.Second, time.Second, time.Second
	c.Metadata.Retry.Max = 0
	c.Metadata.Full = false
	client, err := sarama.NewClient(brokers, c)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.RefreshMetadata(); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

// close releases what buildStack opened, in reverse order.
func (st *stack) close(log *slog.Logger) {
	if st.sim != nil {
		st.sim.Close()
	}
	if st.idem != nil { // finishes storing responses Redis or MySQL could not take at once
		ctx, cancel := context.WithTimeout(context.Background(), idempotencyDrain)
		st.idem.Close(ctx)
		cancel()
	}
	if st.kafka != nil {
		if err := st.kafka.Close(); err != nil {
			log.Warn("closing the Kafka publisher", "err", err)
		}
	}
	if st.rdb != nil {
		if err := st.rdb.Close(); err != nil {
			log.Warn("closing Redis", "err", err)
		}
	}
	if st.db != nil {
		if err := st.db.Close(); err != nil {
			log.Warn("closing the database", "err", err)
		}
	}
}

// ignoreCanceled turns the context error a loop returns at shutdown into nil.
func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
