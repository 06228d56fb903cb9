package testkit

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Plan returns how db would run query, one line per step: on SQLite the detail of each
// row of EXPLAIN QUERY PLAN ("SEARCH o USING INDEX commerce_orders_user (user_id=? AND
// created_at<?)"), on MySQL/MariaDB the table, access type and key of each row of EXPLAIN
// ("o range commerce_orders_user").
func Plan(tb testing.TB, db bun.IDB, query string) []string {
	tb.Helper()
	explain := "EXPLAIN "
	if sqlutil.IsSQLite(db) {
		explain = "EXPLAIN QUERY PLAN "
	}
	rows, err := db.QueryContext(context.Background(), explain+query)
	require.NoError(tb, err)
	defer rows.Close()
	columns, err := rows.Columns()
	require.NoError(tb, err)
	var plan []string
	for rows.Next() {
		values := make([]sql.NullString, len(columns))
		dest := make([]any, len(columns))
		for i := range values {
			dest[i] = &values[i]
		}
		require.NoError(tb, rows.Scan(dest...))
		var line []string
		for i, c := range columns {
			switch c {
			case "detail", "table", "type", "key":
				line = append(line, values[i].String)
			}
		}
		plan = append(plan, strings.Join(line, " "))
	}
	require.NoError(tb, rows.Err())
	return plan
}
