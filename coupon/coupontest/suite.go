// Package coupontest is the conformance suite every coupon issuer backend must pass:
//
//	func TestConformance(t *testing.T) {
//		coupontest.Run(t, coupontest.Harness{Open: func(t *testing.T, opts ...coupon.Option) coupontest.Env {
//			db := testenv.MySQL(t) // + coupon.CreateSchema and the backend's own schema
//			svc, err := coupon.New(db, mybackend.New(...), opts...)
//			require.NoError(t, err)
//			return coupontest.Env{Service: svc, DB: db}
//		}})
//	}
//
// It runs against real servers and checks exact end states: first-come issuance under
// 10,000 concurrent requests, idempotency on request IDs (concurrent duplicates too), every
// redemption transition and its idempotency, races of orders for one coupon, the locks a
// redemption step takes in the caller's transaction (MySQL), wallets,
// joining the caller's transaction, a failed durable write, identifiers that differ only by
// case or accents kept apart, and (for issuers with state outside SQL) the loss of that
// state, with coupons' writes in flight too (never more than the total).
package coupontest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testkit"
)

// Harness opens the backend under test.
type Harness struct {
	// Open returns an Env on fresh, empty storage with every schema created. It passes
	// opts (the suite's clock) to coupon.New.
	Open func(t *testing.T, opts ...coupon.Option) Env
}

// Env is one backend instance under test.
type Env struct {
	Service *coupon.Service
	// DB is the database the Service keeps its records in.
	DB *bun.DB
	// LoseIssuerState drops what the issuer keeps outside SQL, as a crash of its store
	// would (e.g. FLUSHDB). Nil when the issuer keeps nothing outside SQL; the recovery
	// tests then do not run.
	LoseIssuerState func(t *testing.T)
}

// Run runs the suite. Capabilities come from the backend itself: Service.JoinsTx says
// whether Issue joins the caller's transaction.
func Run(t *testing.T, h Harness) {
	t.Run("Templates", func(t *testing.T) { testTemplates(t, h) })
	t.Run("Issue", func(t *testing.T) { testIssue(t, h) })
	t.Run("IssueIdempotency", func(t *testing.T) { testIssueIdempotency(t, h) })
	t.Run("IssueInCallerTx", func(t *testing.T) { testIssueInCallerTx(t, h) })
	t.Run("FailedWrite", func(t *testing.T) { testFailedWrite(t, h) })
	t.Run("FirstCome", func(t *testing.T) { testFirstCome(t, h) })
	t.Run("IssuerStateLoss", func(t *testing.T) { testStateLoss(t, h) })
	t.Run("IssuerStateLossWithWritesInFlight", func(t *testing.T) { testStateLossInFlight(t, h) })
	t.Run("Redemption", func(t *testing.T) { testRedemption(t, h) })
	t.Run("HoldDeadline", func(t *testing.T) { testHoldDeadline(t, h) })
	t.Run("RedemptionInCallerTx", func(t *testing.T) { testRedemptionInCallerTx(t, h) })
	t.Run("RedemptionRaces", func(t *testing.T) { testRedemptionRaces(t, h) })
	t.Run("RedemptionLocks", func(t *testing.T) { testRedemptionLocks(t, h) })
	t.Run("Wallet", func(t *testing.T) { testWallet(t, h) })
	t.Run("IDsCompareByteForByte", func(t *testing.T) { testIDsByteForByte(t, h) })
}

// start is the suite's clock at the beginning of every test.
var start = time.Date(2030, 3, 1, 9, 0, 0, 0, time.UTC)

// fixture is one test's backend and clock.
type fixture struct {
	Env
	clock *testclock.Clock
}

func open(t *testing.T, h Harness) *fixture {
	t.Helper()
	c := testclock.New(start)
	env := h.Open(t, coupon.WithClock(c.Now))
	require.NotNil(t, env.Service)
	require.NotNil(t, env.DB)
	return &fixture{Env: env, clock: c}
}

// template creates a template with sensible defaults for the fields left zero.
func (f *fixture) template(t *testing.T, tpl coupon.Template) coupon.Template {
	t.Helper()
	if tpl.Kind == "" {
		tpl.Terms = coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}
	}
	got, err := f.Service.CreateTemplate(context.Background(), tpl)
	require.NoError(t, err)
	return got
}

func (f *fixture) issue(t *testing.T, templateID, userID, requestID string) coupon.Coupon {
	t.Helper()
	return testkit.Must(f.Service.Issue(context.Background(), templateID, userID, requestID))(t)
}

func (f *fixture) stats(t *testing.T, templateID string) coupon.Stats {
	t.Helper()
	return testkit.Must(f.Service.Stats(context.Background(), templateID))(t)
}

func (f *fixture) coupon(t *testing.T, id string) coupon.Coupon {
	t.Helper()
	return testkit.Must(f.Service.Coupon(context.Background(), id))(t)
}

func (f *fixture) redemptions(t *testing.T, orderID string) []coupon.Redemption {
	t.Helper()
	return testkit.Must(f.Service.Redemptions(context.Background(), orderID))(t)
}

// maxPerUser returns the most coupons of the template any one user holds in SQL.
func (f *fixture) maxPerUser(t *testing.T, templateID string) int {
	t.Helper()
	var counts []int
	err := f.DB.NewSelect().TableExpr("coupon_coupons").ColumnExpr("COUNT(*)").
		Where("template_id = ?", templateID).Group("user_id").Scan(context.Background(), &counts)
	require.NoError(t, err)
	most := 0
	for _, n := range counts {
		most = max(most, n)
	}
	return most
}

// durableIDs returns the IDs of the template's coupons in SQL.
func (f *fixture) durableIDs(t *testing.T, templateID string) []string {
	t.Helper()
	var ids []string
	err := f.DB.NewSelect().TableExpr("coupon_coupons").Column("id").Where("template_id = ?", templateID).
		Scan(context.Background(), &ids)
	require.NoError(t, err)
	return ids
}
