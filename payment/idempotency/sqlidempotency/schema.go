package sqlidempotency

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Table is the name of the table the backend keeps its records in.
const Table = "payment_idempotency_keys"

// The id column is the hex SHA-256 of (scope, key) (idempotency.Ref.ID), so uniqueness never
// depends on a collation; scope and idem_key are kept for operators. Times are UTC; on
// SQLite they are TIMESTAMP so drivers read the columns back as times, and bun writes
// them as fixed-zone UTC text, which compares in time order.
var schema = sqlutil.Table{Name: Table, Columns: `
	id           CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	scope        VARCHAR(255) NOT NULL,
	idem_key     VARCHAR(255) NOT NULL,
	fingerprint  VARCHAR(128) NOT NULL,
	token        VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	state        VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	locked_until DATETIME(6)  NOT NULL,
	expires_at   DATETIME(6)  NOT NULL,
	status       INT          NOT NULL DEFAULT 0,
	error_code   VARCHAR(255) NOT NULL DEFAULT '',
	body         LONGBLOB     NULL,
	created_at   DATETIME(6)  NOT NULL,
	updated_at   DATETIME(6)  NOT NULL,
	PRIMARY KEY (id)`,
	SQLiteColumns: `
	id           VARCHAR(64)  NOT NULL PRIMARY KEY,
	scope        VARCHAR(255) NOT NULL,
	idem_key     VARCHAR(255) NOT NULL,
	fingerprint  VARCHAR(128) NOT NULL,
	token        VARCHAR(64)  NOT NULL,
	state        VARCHAR(16)  NOT NULL,
	locked_until TIMESTAMP    NOT NULL,
	expires_at   TIMESTAMP    NOT NULL,
	status       INTEGER      NOT NULL DEFAULT 0,
	error_code   VARCHAR(255) NOT NULL DEFAULT '',
	body         BLOB         NULL,
	created_at   TIMESTAMP    NOT NULL,
	updated_at   TIMESTAMP    NOT NULL`,
	Indexes: []sqlutil.Index{{Name: Table + "_expires_at", Columns: "expires_at"}},
}

// CreateSchema creates the backend's table and index if they do not exist; it is safe to
// call any number of times, on MySQL/MariaDB and SQLite.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema); err != nil {
		return fmt.Errorf("sqlidempotency: %w", err)
	}
	return nil
}
