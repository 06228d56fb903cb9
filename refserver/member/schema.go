package member

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Times are BIGINT microseconds since the Unix epoch (0: none). IDs, login IDs and token
// hashes compare byte for byte (a binary collation on MySQL; SQLite's default).
var schema = []struct{ table, columns, mysqlKeys, sqliteIndexes string }{
	{"members", `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		login_id VARCHAR(64) NOT NULL,
		password_hash VARCHAR(100) NOT NULL,
		created_at BIGINT NOT NULL`,
		`, UNIQUE KEY members_login (login_id)`,
		`CREATE UNIQUE INDEX IF NOT EXISTS members_login ON members (login_id)`},
	{"member_sessions", `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		user_id VARCHAR(64) NOT NULL,
		created_at BIGINT NOT NULL,
		revoked_at BIGINT NOT NULL,
		revoked_why VARCHAR(16) NOT NULL`, "", ""},
	{"member_refresh_tokens", `
		hash CHAR(64) NOT NULL PRIMARY KEY,
		session_id VARCHAR(64) NOT NULL,
		access_jti VARCHAR(64) NOT NULL,
		access_expires_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		used_at BIGINT NOT NULL,
		created_at BIGINT NOT NULL`,
		`, KEY member_refresh_tokens_session (session_id)`,
		`CREATE INDEX IF NOT EXISTS member_refresh_tokens_session ON member_refresh_tokens (session_id)`},
	{"member_denied_tokens", `
		jti VARCHAR(64) NOT NULL PRIMARY KEY,
		expires_at BIGINT NOT NULL`,
		`, KEY member_denied_tokens_expiry (expires_at)`,
		`CREATE INDEX IF NOT EXISTS member_denied_tokens_expiry ON member_denied_tokens (expires_at)`},
}

// CreateSchema creates the member tables (members, member_sessions, member_refresh_tokens,
// and member_denied_tokens for the SQL denylist) if they do not exist. It is idempotent
// and works on MySQL/MariaDB and SQLite; on MySQL call it outside a transaction.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	for _, t := range schema {
		stmts := []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s)", t.table, t.columns)}
		if sqlutil.IsSQLite(db) {
			if t.sqliteIndexes != "" {
				stmts = append(stmts, t.sqliteIndexes)
			}
		} else {
			stmts[0] = fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s%s) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
				t.table, t.columns, t.mysqlKeys)
		}
		for _, q := range stmts {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("member: create %s: %w", t.table, err)
			}
		}
	}
	return nil
}
