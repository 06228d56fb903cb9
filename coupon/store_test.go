package coupon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestAllHoldingsSeeks: allHoldings yields every coupon of the template once, in (user,
// ordinal) order, when pages end inside a user's ordinals, and each page after the first
// seeks to its cursor in the (template, user, ordinal) key. MariaDB 10.11 read the
// template's key from its start for every page (EXPLAIN: ref on template_id, not a range
// from the cursor): a walk of n coupons read O(n²) entries.
func TestAllHoldingsSeeks(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		require.NoError(t, CreateSchema(ctx, db))
		want := seedHoldings(t, db, 1200) // 2,400 coupons of "big": the pages end inside users' ordinals
		var got []Holding
		for h, err := range allHoldings(ctx, db, "big") {
			require.NoError(t, err)
			got = append(got, h)
		}
		require.Greater(t, len(want), 2*holdingsPage)
		assert.Equal(t, want, got)

		pages := &testkit.FailStatement{} // catches the second page's query
		pages.Arm(2, "coupon_coupons", "ordinal")
		for _, err := range allHoldings(ctx, db.WithQueryHook(pages), "big") {
			if err != nil {
				break
			}
		}
		second := pages.Disarm()
		require.NotEmpty(t, second)
		plan := testkit.Plan(t, db, second)
		if sqlutil.IsSQLite(db) {
			assert.Regexp(t, `SEARCH coupon_row USING (COVERING )?INDEX \S+ \(template_id=\? AND user_id>\?\)`,
				strings.Join(plan, "\n"), "the page seeks to its cursor's user")
			return
		}
		assert.Contains(t, plan, "coupon_row range coupon_coupons_holder_uq", "the page is a range from its cursor")
		for _, l := range plan {
			assert.NotRegexp(t, `^coupon_row (ref|ALL|index) `, l, "the page reads the template from its start: %q", plan)
		}
	})
}

// BenchmarkAllHoldings measures a walk through the 200,000 coupons of a template (and
// beside them as many of another), page by page, on SQLite and MySQL.
func BenchmarkAllHoldings(b *testing.B) {
	testenv.EachDB(b, func(b *testing.B, db *bun.DB) {
		ctx := context.Background()
		require.NoError(b, CreateSchema(ctx, db))
		n := len(seedHoldings(b, db, 100_000))
		for b.Loop() {
			got := 0
			for _, err := range allHoldings(ctx, db, "big") {
				require.NoError(b, err)
				got++
			}
			require.Equal(b, n, got)
		}
	})
}

// seedHoldings gives each of n users 1 to 3 coupons of the template "big" and as many of
// "other", and returns the holdings of "big" in (user, ordinal) order. On MySQL it then
// analyses the table, as a server's statistics would know it.
func seedHoldings(tb testing.TB, db *bun.DB, users int) []Holding {
	tb.Helper()
	ctx := context.Background()
	var rows []couponRow
	var want []Holding
	for u := range users {
		for ordinal := range 1 + u%3 {
			for _, tpl := range []string{"big", "other"} {
				r := couponRow{ID: fmt.Sprintf("%s-%d-%d", tpl, u, ordinal), TemplateID: tpl,
					UserID: fmt.Sprintf("user-%06d", u), Ordinal: ordinal, Place: int64(len(rows) + 1),
					RequestID: fmt.Sprintf("req-%s-%d-%d", tpl, u, ordinal), State: "issued", IssuedAt: time.Now(),
					termsColumns: termsColumns{Name: tpl, Kind: string(FixedAmount), Amount: 100}}
				if rows = append(rows, r); tpl == "big" {
					want = append(want, r.holding())
				}
			}
		}
	}
	for chunk := range slices.Chunk(rows, 1000) {
		_, err := db.NewInsert().Model(&chunk).Exec(ctx)
		require.NoError(tb, err)
	}
	if !sqlutil.IsSQLite(db) {
		_, err := db.ExecContext(ctx, "ANALYZE TABLE coupon_coupons")
		require.NoError(tb, err)
	}
	return want
}
