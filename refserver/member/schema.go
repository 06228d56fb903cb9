package member

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Times are BIGINT microseconds since the Unix epoch (0: none). IDs, login IDs and token
// hashes compare byte for byte (a binary collation on MySQL; SQLite's default).
var schema = []sqlutil.Table{
	{Name: "members", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		login_id VARCHAR(64) NOT NULL,
		password_hash VARCHAR(100) NOT NULL,
		created_at BIGINT NOT NULL,
		` + signUpKeyColumn + ` ` + signUpKeyDefinition,
		Indexes: []sqlutil.Index{{Name: "members_login", Columns: "login_id", Unique: true}}},
	{Name: "member_sessions", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		user_id VARCHAR(64) NOT NULL,
		created_at BIGINT NOT NULL,
		revoked_at BIGINT NOT NULL,
		revoked_why VARCHAR(16) NOT NULL`},
	{Name: "member_refresh_tokens", Columns: `
		hash CHAR(64) NOT NULL PRIMARY KEY,
		session_id VARCHAR(64) NOT NULL,
		access_jti VARCHAR(64) NOT NULL,
		access_expires_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		used_at BIGINT NOT NULL,
		created_at BIGINT NOT NULL`,
		Indexes: []sqlutil.Index{{Name: "member_refresh_tokens_session", Columns: "session_id"}}},
	{Name: "member_denied_tokens", Columns: `
		jti VARCHAR(64) NOT NULL PRIMARY KEY,
		expires_at BIGINT NOT NULL`,
		Indexes: []sqlutil.Index{{Name: "member_denied_tokens_expiry", Columns: "expires_at"}}},
	{Name: "member_denials_unpublished", Columns: `
		jti VARCHAR(64) NOT NULL PRIMARY KEY,
		expires_at BIGINT NOT NULL`,
		// Purge deletes by expiry: without this index it would scan the list.
		Indexes: []sqlutil.Index{{Name: "member_denials_unpublished_expiry", Columns: "expires_at"}}},
}

// The key a member's sign-up ran under (SignUpOnce): an HMAC in hex, "" for none. A later
// version's column: CreateSchema adds it to a members table made before it.
const (
	signUpKeyColumn     = "signup_key"
	signUpKeyDefinition = "CHAR(64) NOT NULL DEFAULT ''"
)

// CreateSchema creates the member tables (members, member_sessions, member_refresh_tokens,
// member_denied_tokens for the SQL denylist, and member_denials_unpublished for the Redis
// denylist) if they do not exist, and adds to them the columns a later version added. It
// is idempotent and works on MySQL/MariaDB and SQLite; on MySQL call it outside a
// transaction.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("member: %w", err)
	}
	if err := sqlutil.AddColumn(ctx, db, "members", signUpKeyColumn, signUpKeyDefinition); err != nil {
		return fmt.Errorf("member: %w", err)
	}
	return nil
}
