package commerce

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
)

// Times are BIGINT microseconds since the Unix epoch (0: none), the same on every dialect.
// IDs are compared byte for byte (a binary collation on MySQL).
var schema = []sqlutil.Table{
	{Name: "commerce_products", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		name VARCHAR(200) NOT NULL,
		price BIGINT NOT NULL,
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL`},
	{Name: "commerce_orders", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		user_id VARCHAR(64) NOT NULL,
		idem_key VARCHAR(255) NOT NULL,
		fingerprint CHAR(64) NOT NULL,
		status VARCHAR(20) NOT NULL,
		step VARCHAR(16) NOT NULL,
		stock VARCHAR(16) NOT NULL,
		coupon_id VARCHAR(64) NOT NULL,
		subtotal BIGINT NOT NULL,
		discount BIGINT NOT NULL,
		points BIGINT NOT NULL,
		amount_due BIGINT NOT NULL,
		reward BIGINT NOT NULL,
		` + shortfallColumn + " " + shortfallDefinition + `,
		pay_key VARCHAR(255) NOT NULL,
		pay_fingerprint CHAR(64) NOT NULL,
		pay_method VARCHAR(8) NOT NULL,
		pay_token VARCHAR(255) NOT NULL,
		payment_id VARCHAR(64) NOT NULL,
		cancel_attempt INT NOT NULL,
		failure_code VARCHAR(64) NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		paid_at BIGINT NOT NULL,
		closed_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL`,
		Indexes: []sqlutil.Index{
			{Name: "commerce_orders_user", Columns: "user_id, created_at, id"},
			{Name: "commerce_orders_due", Columns: "status, expires_at"},
			// A user's orders of one status, newest first: a page of ListOrders with a status
			// seeks to its cursor and sorts nothing, however long the user's history. Also
			// the unpaid caps' count (checkUnpaidLimits): a user's unpaid orders, not their
			// whole history, nor every user's unpaid orders (commerce_orders_due), nor, as
			// MariaDB 10.11 chose without it, every order line.
			{Name: "commerce_orders_user_status", Columns: "user_id, status, created_at, id"},
			{Name: "commerce_orders_step", Columns: "step, id"},
		},
		// (user_id, status, expires_at), for the unpaid caps alone until 2026-12-04:
		// commerce_orders_user_status serves them as well, and one index fewer is written.
		// During a rolling upgrade, a process of an earlier version that starts adds it
		// again (an online build) and the next start of this one drops it: either serves.
		Dropped: []string{"commerce_orders_unpaid"}},
	{Name: "commerce_order_lines", Columns: `
		order_id VARCHAR(64) NOT NULL,
		product_id VARCHAR(64) NOT NULL,
		qty BIGINT NOT NULL,
		unit_price BIGINT NOT NULL,
		PRIMARY KEY (order_id, product_id)`},
	{Name: "commerce_topups", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		user_id VARCHAR(64) NOT NULL,
		idem_key VARCHAR(255) NOT NULL,
		fingerprint CHAR(64) NOT NULL,
		amount BIGINT NOT NULL,
		method VARCHAR(8) NOT NULL,
		token VARCHAR(255) NOT NULL,
		status VARCHAR(16) NOT NULL,
		payment_id VARCHAR(64) NOT NULL,
		failure_code VARCHAR(64) NOT NULL,
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL`,
		Indexes: []sqlutil.Index{{Name: "commerce_topups_status", Columns: "status, id"}}},
	{Name: "commerce_user_locks", Columns: `
		user_id VARCHAR(64) NOT NULL PRIMARY KEY,
		updated_at BIGINT NOT NULL`},
}

// The column reward_shortfall was added after commerce_orders (2026-11-30): CreateSchema
// adds it to a table created before.
const shortfallColumn, shortfallDefinition = "reward_shortfall", "BIGINT NOT NULL DEFAULT 0"

// CreateSchema creates commerce's own tables and indexes (commerce_products,
// commerce_orders, commerce_order_lines, commerce_topups, commerce_user_locks) if they do
// not exist, and adds to them the columns a later version added. It is idempotent and
// works on MySQL/MariaDB and SQLite. On MySQL, DDL commits implicitly: call it outside a
// transaction.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("commerce: %w", err)
	}
	if err := sqlutil.AddColumn(ctx, db, "commerce_orders", shortfallColumn, shortfallDefinition); err != nil {
		return fmt.Errorf("commerce: %w", err)
	}
	return nil
}

// CreateAllSchemas creates commerce's tables and those of the leaf packages it composes
// (coupons, the ledger, payments and the outbox), then runs each of backends: the schema
// functions of the backends the caller wires, which commerce does not import (for example
// sqlinventory.CreateSchema, redisinventory.CreateJournal, sqlcoupon.CreateSchema,
// sqlidempotency.CreateSchema). Each is idempotent; on MySQL, DDL commits implicitly: call
// it outside a transaction.
func CreateAllSchemas(ctx context.Context, db bun.IDB, backends ...func(context.Context, bun.IDB) error) error {
	for _, create := range append([]func(context.Context, bun.IDB) error{
		coupon.CreateSchema, ledger.CreateSchema, payment.CreateSchema, outbox.CreateSchema, CreateSchema,
	}, backends...) {
		if err := create(ctx, db); err != nil {
			return err
		}
	}
	return nil
}
