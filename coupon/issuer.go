package coupon

import (
	"context"
	"iter"

	"github.com/uptrace/bun"
)

// Issuer is an issuance backend: it decides, atomically, whether one more coupon of a
// template may go to a user, which ordinal (1..PerUserLimit) that coupon gets and, for a
// template with a TotalQuantity, which place (1..TotalQuantity). The
// Service does everything else: validation, the issue window, writing the coupon to SQL,
// idempotency on the durable record, giving a take back when the write fails.
//
// Two implementations exist: coupon/sqlcoupon (a conditional update in the same SQL
// transaction as the coupon row) and coupon/rediscoupon (a Lua script in Redis, then the
// SQL write). Every implementation must pass coupon/coupontest.
type Issuer interface {
	// Name names the issuer's kind: "sql" (sqlcoupon), "redis" (rediscoupon). Each
	// template records the name of the issuer that issues its coupons (the issuer of the
	// Service that created it, or of the last to call Service.ClaimIssuance), and a Service
	// whose issuer has another name refuses to issue it (ErrOtherIssuer): two issuers keep
	// two counts of a template, which cannot both be right. Issuers of one name must
	// therefore keep one count of each template between them (one Redis, one database).
	Name() string

	// JoinsTx reports whether Take runs in the SQL transaction that writes the coupon
	// (TakeRequest.Tx), so that a rollback undoes it. Issuers that do not join keep their
	// count elsewhere and are told to GiveBack or Adopt when the write fails.
	JoinsTx() bool

	// Take takes one coupon of r.Template for r.UserID, idempotently on r.RequestID:
	// taking again for a request that was already taken returns the same ordinal with
	// Replay set. Rejections are *IssueError wrapping ErrSoldOut, ErrLimitReached or
	// ErrRequestConflict. An issuer whose state for the template is missing returns
	// ErrNotLoaded (and must then implement Recounter): the Service loads it and asks again.
	Take(ctx context.Context, r TakeRequest) (Taken, error)

	// GiveBack undoes the take of r.RequestID: the unit returns to the template's count
	// and the ordinal to the user. It is a no-op when nothing is taken for the request,
	// and while another attempt at the request (a concurrent retry whose Take was a
	// replay) may still write the coupon: the last attempt to fail gives the take back.
	// Called when the coupon's SQL write failed for sure. Issuers that join the
	// transaction do nothing.
	GiveBack(ctx context.Context, r TakeRequest) error

	// Adopt is called when r's coupon collided in SQL with durable coupons holding its
	// ordinal or its place that the issuer had not counted (its state had fallen behind
	// SQL, as after a loss of state with writes in flight): it counts each of held it does
	// not know yet, with its ordinal and place, then gives r's take back as GiveBack does,
	// so that the next Take for the request picks an ordinal and a place still free, or
	// finds the template sold out. It returns how many of held it counted. Issuers that
	// join the transaction do nothing.
	Adopt(ctx context.Context, r TakeRequest, held []Holding) (int, error)

	// Taken returns how many coupons of the template the issuer has counted as issued, or
	// ErrNotLoaded.
	Taken(ctx context.Context, db bun.IDB, templateID string) (int64, error)
}

// Recounter is implemented by issuers whose Take can answer ErrNotLoaded. Load builds the
// issuer's state for tpl from holdings, the coupons durably issued (read from db, where
// an issuer with SQL state also writes it). With onlyIfMissing, Load leaves an existing
// state alone (a warm-up: the first issue, or after a loss, possibly racing another
// warm-up); without it, Load replaces the state (a recount, which Service.Recount asks only
// of issuers that do not join the transaction; Service.ClaimIssuance asks it of every
// issuer, in the transaction that holds the template's row lock, with db that transaction).
type Recounter interface {
	Load(ctx context.Context, db bun.IDB, tpl Template, holdings iter.Seq2[Holding, error], onlyIfMissing bool) error
}

// TakeRequest is what an Issuer is asked to take.
type TakeRequest struct {
	Template  Template
	UserID    string
	RequestID string

	tx    bun.IDB
	retry bool
	then  IssuedFunc
}

// Tx is the transaction in which the coupon will be written, for issuers that join it
// (nil for the others).
func (r TakeRequest) Tx() bun.IDB { return r.tx }

// Holdings returns the user's durable coupons of the template, read in Tx; only for
// issuers that join the transaction. The first attempt reads without locks: a coupon of
// the user committed meanwhile makes the write fail on the unique (template, user,
// ordinal) key, and the Service takes again, this time with a locking read (on MySQL) that
// sees every committed coupon even in a caller's transaction with an older snapshot.
func (r TakeRequest) Holdings(ctx context.Context) ([]Holding, error) {
	if r.tx == nil {
		return nil, errNoTx
	}
	return userHoldings(ctx, r.tx, r.Template.ID, r.UserID, r.retry)
}

// Taken is an Issuer's answer to Take.
type Taken struct {
	// Ordinal is the user's coupon number for this request, 1..PerUserLimit.
	Ordinal int
	// Place is the coupon's place in the template's total, 1..TotalQuantity (0 when the
	// template has none).
	Place int64
	// Replay says the request had been taken before (its coupon may already be durable).
	Replay bool
}
