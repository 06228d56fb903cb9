package sqlcoupon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestSchemaOfEarlierVersionCut: CreateSchema on the tables of a version without places
// (TestSchemaOfEarlierVersion), its database connection cut at each of its statements in
// turn — before the statement reaches the server, and after its answer (it ran, its answer
// is lost) — including each statement placing earlier coupons (placeUnplaced). It fails as
// a dependency failure, or not at all; CreateSchema run again, as a restart does, then
// leaves every coupon of the limited templates its place, 1..n in the order issued, those
// of the unlimited one none, and issuing goes on from there to the total, once each.
func TestSchemaOfEarlierVersionCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := earlierSchema(t, testenv.LinkedMySQL)
	link.Arm(nil, false)
	require.NoError(t, coupon.CreateSchema(ctx, linked))
	_, seen := link.Disarm()
	placedExactly(t, db)
	t.Logf("%d statements: %q", len(seen), seen)

	for _, p := range testenv.CutPoints(seen, nil) {
		t.Run(p.String(), func(t *testing.T) {
			db, linked, link := earlierSchema(t, testenv.LinkedMySQL)
			link.Arm(p.Match(), p.After)
			err := coupon.CreateSchema(ctx, linked)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			if err != nil {
				require.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
			}
			require.NoError(t, coupon.CreateSchema(ctx, linked), "the restart's CreateSchema after the cut at %q", cut[0])
			placedExactly(t, db)
		})
	}
}

// TestSchemaOfEarlierVersionCrash is TestSchemaOfEarlierVersionCut with the database
// server killed (SIGKILL) at each COMMIT placing a template's coupons, before it reaches
// the server and once it has committed, and started again before the restart's
// CreateSchema.
func TestSchemaOfEarlierVersionCrash(t *testing.T) {
	ctx := context.Background()
	server, dsn := testenv.OwnMySQL(t)
	admin, _, _ := testenv.LinkedMySQLAt(t, dsn)
	cases := 0
	// fresh is a database of its own on the server, for one case.
	fresh := func(t testing.TB) (*bun.DB, *bun.DB, *testenv.Link) {
		cases++
		name := fmt.Sprint("case", cases)
		_, err := admin.ExecContext(ctx, "CREATE DATABASE "+name)
		require.NoError(t, err)
		cfg, err := mysql.ParseDSN(dsn)
		require.NoError(t, err)
		cfg.DBName = name
		return testenv.LinkedMySQLAt(t, cfg.FormatDSN())
	}
	db, linked, link := earlierSchema(t, fresh)
	link.Arm(nil, false)
	require.NoError(t, coupon.CreateSchema(ctx, linked))
	_, seen := link.Disarm()
	placedExactly(t, db)
	commits := testenv.CutPoints(seen, testenv.IsCommit)
	require.Len(t, commits, 2*len(limited), "one transaction per limited template, its COMMIT cut before and after")

	for _, p := range commits {
		after, k := p.After, p.N
		t.Run(fmt.Sprintf("after=%t/commit-%d", after, k), func(t *testing.T) {
			db, linked, link := earlierSchema(t, fresh)
			createSchema := func() error { return coupon.CreateSchema(ctx, linked) }
			require.Equal(t, "COMMIT", link.Crash(t, server, p.Match(), after, createSchema, nil))
			server.Start(t)
			require.NoError(t, coupon.CreateSchema(ctx, linked), "the restart's CreateSchema")
			placedExactly(t, db)
		})
	}
}

// limited are the limited templates of earlierSchema.
var limited = []string{"limited-a", "limited-b"}

// earlierSchema returns, from open, a database with the tables of a version without places
// holding coupons of two limited templates and an unlimited one (issued in turn, so that a
// template's coupons are not consecutive), a connection to it through a link, and the link.
func earlierSchema(t *testing.T, open func(testing.TB) (*bun.DB, *bun.DB, *testenv.Link)) (*bun.DB, *bun.DB, *testenv.Link) {
	t.Helper()
	ctx := context.Background()
	terms := coupon.Terms{Kind: coupon.FixedAmount, Amount: 500}
	db, linked, link := open(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	for _, tpl := range []coupon.Template{{ID: limited[0], Terms: terms, TotalQuantity: 5}, {ID: "unlimited", Terms: terms},
		{ID: limited[1], Terms: terms, TotalQuantity: 5}} {
		testkit.Must(svc.CreateTemplate(ctx, tpl))(t)
	}
	for i := range 3 {
		for _, id := range []string{limited[0], "unlimited", limited[1]} {
			testkit.Must(svc.Issue(ctx, id, fmt.Sprint("user-", i), fmt.Sprint(id, "-", i)))(t)
		}
	}
	_, err := db.ExecContext(ctx, "DROP INDEX coupon_coupons_place_uq ON coupon_coupons")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ALTER TABLE coupon_coupons DROP COLUMN place")
	require.NoError(t, err)
	return db, linked, link
}

// placedExactly checks the places earlierSchema's coupons got, 1..3 in the order issued
// for the limited templates, none for the unlimited one, and that issuing then goes on to
// exactly the total.
func placedExactly(t *testing.T, db *bun.DB) {
	t.Helper()
	ctx := context.Background()
	places := func(templateID string) []int64 {
		var got []int64
		require.NoError(t, db.NewSelect().TableExpr("coupon_coupons").ColumnExpr("COALESCE(place, 0)").
			Where("template_id = ?", templateID).OrderExpr("seq").Scan(ctx, &got))
		return got
	}
	for _, id := range limited {
		assert.Equal(t, []int64{1, 2, 3}, places(id), "in the order issued")
	}
	assert.Equal(t, []int64{0, 0, 0}, places("unlimited"))
	svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	for _, id := range limited {
		for i := 3; i < 5; i++ {
			c := testkit.Must(svc.Issue(ctx, id, fmt.Sprint("user-", i), fmt.Sprint(id, "-", i)))(t)
			assert.Equal(t, int64(i+1), c.Place)
		}
		_, err := svc.Issue(ctx, id, "user-5", id+"-5")
		require.ErrorIs(t, err, coupon.ErrSoldOut)
		assert.Equal(t, []int64{1, 2, 3, 4, 5}, places(id))
	}
}

// gate is a query hook that stops a CreateSchema before chosen statements of its
// placeUnplaced, for a test to interleave two of them statement by statement.
type gate struct {
	// at returns, for a statement, the channel to signal on reaching it and the one to wait
	// on before sending it (nil, nil: go on).
	at func(query string) (reached chan<- struct{}, wait <-chan struct{})
}

func (g *gate) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if reached, wait := g.at(e.Query); reached != nil {
		reached <- struct{}{}
		if wait != nil {
			<-wait
		}
	}
	return ctx
}

func (g *gate) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestSchemaOfEarlierVersionTwoStarts: two processes starting at once (replicas of a
// deploy, or one restarted after a crash beside another starting) run CreateSchema on the
// tables of a version without places at the same time, interleaved so that B reads the
// coupons to place before A places any, and the template's last place after A placed two
// of three. Every coupon still gets one place, 1..n in the order issued, none skipped, so
// that issuing goes on from there to exactly the total: a place skipped (or taken twice)
// would leave the template's last coupon unissuable for ever, every Issue of it failing on
// the unique place.
func TestSchemaOfEarlierVersionTwoStarts(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	testkit.Must(svc.CreateTemplate(ctx, coupon.Template{ID: "limited", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 500}, TotalQuantity: 5}))(t)
	for i := range 3 {
		testkit.Must(svc.Issue(ctx, "limited", fmt.Sprint("user-", i), fmt.Sprint("limited-", i)))(t)
	}
	_, err := db.ExecContext(ctx, "DROP INDEX coupon_coupons_place_uq ON coupon_coupons")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ALTER TABLE coupon_coupons DROP COLUMN place")
	require.NoError(t, err)

	reachedA1, reachedA2, reachedB0, reachedB1, lockingB := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	goA1, goA2, goB0, goB1 := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	updates, readsB, maxB := 0, 0, 0
	a := db.WithQueryHook(&gate{at: func(q string) (chan<- struct{}, <-chan struct{}) {
		if !strings.HasPrefix(q, "UPDATE `coupon_coupons`") {
			return nil, nil
		}
		updates++
		switch updates {
		case 1: // A has read the coupons to place and the template's last place
			return reachedA1, goA1
		case 3: // A has placed two of the three
			return reachedA2, goA2
		}
		return nil, nil
	}})
	b := db.WithQueryHook(&gate{at: func(q string) (chan<- struct{}, <-chan struct{}) {
		switch {
		case strings.Contains(q, "place IS NULL") && readsB == 0: // B's DDL is done
			readsB++
			return reachedB0, goB0
		case strings.Contains(q, "MAX(place)") && maxB == 0: // B has read the coupons to place
			maxB++
			return reachedB1, goB1
		case strings.Contains(q, "FOR UPDATE"): // B waits for A's lock, if there is one
			return lockingB, nil
		}
		return nil, nil
	}})
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errB <- coupon.CreateSchema(ctx, b) }()
	<-reachedB0
	go func() { errA <- coupon.CreateSchema(ctx, a) }()
	<-reachedA1
	close(goB0)
	locking := false
	select {
	case <-reachedB1:
	case <-lockingB:
		locking = true
	}
	close(goA1)
	<-reachedA2
	close(goB1)
	var gotB error
	if !locking {
		gotB = <-errB
	}
	close(goA2)
	require.NoError(t, <-errA)
	if locking {
		gotB = <-errB
	}
	require.NoError(t, gotB)

	var places []int64
	require.NoError(t, db.NewSelect().TableExpr("coupon_coupons").ColumnExpr("COALESCE(place, 0)").
		Where("template_id = ?", "limited").OrderExpr("seq").Scan(ctx, &places))
	assert.Equal(t, []int64{1, 2, 3}, places, "in the order issued, none skipped")
	svc = testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	for i := 3; i < 5; i++ {
		c, err := svc.Issue(ctx, "limited", fmt.Sprint("user-", i), fmt.Sprint("limited-", i))
		require.NoError(t, err)
		assert.Equal(t, int64(i+1), c.Place)
	}
	_, err = svc.Issue(ctx, "limited", "user-5", "limited-5")
	require.ErrorIs(t, err, coupon.ErrSoldOut)
}
