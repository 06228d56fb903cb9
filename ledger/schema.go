package ledger

import (
	"context"
	"fmt"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/uptrace/bun"
)

// CreateSchema creates the ledger's tables and indexes when they do not exist yet. It is
// idempotent. On MySQL, DDL commits implicitly: call it outside a transaction.
//
// On MySQL the ID columns are VARBINARY, so IDs compare byte for byte (case and trailing
// spaces matter), as they do on SQLite; free text is utf8mb4.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("%w: creating the ledger schema: %w", ErrStorage, err)
	}
	return nil
}

// ledger_accounts: one row per user, created on first credit.
// ledger_transfers: the journal, one row per movement between two accounts; id is the
// caller's transfer ID (NULL for movements derived from a hold or an earn, which name it in
// parent_id); refunded counts what refunds gave back of a spend or captured hold.
// ledger_holds: the state of each hold. ledger_lots: what is left of each expiring earn
// (deleted when used up).
var schema = []sqlutil.Table{
	{Name: "ledger_accounts", Columns: `
	user_id VARBINARY(64) NOT NULL,
	available BIGINT NOT NULL,
	held BIGINT NOT NULL,
	expiring BIGINT NOT NULL,
	created_at DATETIME(6) NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	PRIMARY KEY (user_id),
	CHECK (available >= 0 AND held >= 0 AND expiring >= 0)`,
		SQLiteColumns: `
	user_id TEXT NOT NULL PRIMARY KEY,
	available INTEGER NOT NULL,
	held INTEGER NOT NULL,
	expiring INTEGER NOT NULL,
	created_at TIMESTAMP NOT NULL,
	updated_at TIMESTAMP NOT NULL,
	CHECK (available >= 0 AND held >= 0 AND expiring >= 0)`},
	{Name: "ledger_transfers", Columns: `
	seq BIGINT NOT NULL AUTO_INCREMENT,
	id VARBINARY(64) NULL,
	kind VARCHAR(16) CHARACTER SET ascii NOT NULL,
	user_id VARBINARY(64) NOT NULL,
	src VARBINARY(80) NOT NULL,
	dst VARBINARY(80) NOT NULL,
	amount BIGINT NOT NULL,
	available_after BIGINT NOT NULL,
	held_after BIGINT NOT NULL,
	parent_id VARBINARY(64) NULL,
	reference VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	reason VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	refunded BIGINT NOT NULL,
	expires_at DATETIME(6) NULL,
	created_at DATETIME(6) NOT NULL,
	PRIMARY KEY (seq),
	CHECK (amount > 0 AND refunded >= 0 AND src <> dst)`,
		SQLiteColumns: `
	seq INTEGER PRIMARY KEY,
	id TEXT NULL,
	kind TEXT NOT NULL,
	user_id TEXT NOT NULL,
	src TEXT NOT NULL,
	dst TEXT NOT NULL,
	amount INTEGER NOT NULL,
	available_after INTEGER NOT NULL,
	held_after INTEGER NOT NULL,
	parent_id TEXT NULL,
	reference TEXT NOT NULL,
	reason TEXT NOT NULL,
	refunded INTEGER NOT NULL,
	expires_at TIMESTAMP NULL,
	created_at TIMESTAMP NOT NULL,
	CHECK (amount > 0 AND refunded >= 0 AND src <> dst)`,
		Indexes: []sqlutil.Index{
			{Name: "ledger_transfers_id", Columns: "id", Unique: true},
			{Name: "ledger_transfers_user", Columns: "user_id, seq"},
		}},
	{Name: "ledger_holds", Columns: `
	id VARBINARY(64) NOT NULL,
	user_id VARBINARY(64) NOT NULL,
	amount BIGINT NOT NULL,
	state VARCHAR(16) CHARACTER SET ascii NOT NULL,
	captured BIGINT NOT NULL,
	deadline DATETIME(6) NOT NULL,
	created_at DATETIME(6) NOT NULL,
	resolved_at DATETIME(6) NULL,
	available_after BIGINT NOT NULL,
	held_after BIGINT NOT NULL,
	PRIMARY KEY (id),
	CHECK (amount > 0 AND captured >= 0 AND captured <= amount)`,
		SQLiteColumns: `
	id TEXT NOT NULL PRIMARY KEY,
	user_id TEXT NOT NULL,
	amount INTEGER NOT NULL,
	state TEXT NOT NULL,
	captured INTEGER NOT NULL,
	deadline TIMESTAMP NOT NULL,
	created_at TIMESTAMP NOT NULL,
	resolved_at TIMESTAMP NULL,
	available_after INTEGER NOT NULL,
	held_after INTEGER NOT NULL,
	CHECK (amount > 0 AND captured >= 0 AND captured <= amount)`,
		Indexes: []sqlutil.Index{{Name: "ledger_holds_due", Columns: "state, deadline"}}},
	{Name: "ledger_lots", Columns: `
	id VARBINARY(64) NOT NULL,
	user_id VARBINARY(64) NOT NULL,
	remaining BIGINT NOT NULL,
	expires_at DATETIME(6) NOT NULL,
	PRIMARY KEY (id),
	CHECK (remaining > 0)`,
		SQLiteColumns: `
	id TEXT NOT NULL PRIMARY KEY,
	user_id TEXT NOT NULL,
	remaining INTEGER NOT NULL,
	expires_at TIMESTAMP NOT NULL,
	CHECK (remaining > 0)`,
		Indexes: []sqlutil.Index{
			{Name: "ledger_lots_due", Columns: "expires_at, id"},
			{Name: "ledger_lots_user", Columns: "user_id, expires_at"},
		}},
}
