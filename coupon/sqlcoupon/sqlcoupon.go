// Package sqlcoupon is the SQL-only coupon issuer: the first-come decision is a
// conditional update of the template's issued count (coupon_issue_counters) in the same
// transaction as the coupon row, with the unique key on (template, user, ordinal) as the
// per-user guard. For a template with a total, the count just bumped is the coupon's
// place (coupon.Coupon.Place), so the unique key on (template, place) guards the total
// too. Count and coupons commit or roll back together, so they can never disagree, and
// Issue joins the caller's transaction (JoinsTx is true).
//
// Every issue of a template that wins serialises on its counter row, updated last so that
// its lock is held only while the coupon row is written and committed; the rate of one
// template is therefore bounded by how fast the database commits one short transaction
// after another. Requests for a sold-out template are turned away by a plain read,
// without that lock. For a rush on one template, coupon/rediscoupon settles the losers in
// Redis without touching SQL.
//
// A template's counter is created with the template (coupon.Service.CreateTemplate calls
// Load in its transaction), so that no Issue finds it missing: an Issue in a caller's
// transaction whose snapshot predates a counter created elsewhere could not read it, and
// creating it there with a locking read deadlocks concurrent first issues (a gap lock).
// For a template created by an earlier version or through another issuer, it is created
// when the Service first reads the template outside a transaction, or else on its first
// issue (Load, outside the issuing transactions), set to the coupons already issued. A
// template issued through another issuer is refused (coupon.ErrOtherIssuer) until
// coupon.Service.ClaimIssuance moves it to this one, which sets its counter to the coupons
// issued by then.
//
// Use with coupon.New(db, sqlcoupon.New()) after coupon.CreateSchema and CreateSchema.
package sqlcoupon

import (
	"context"
	"fmt"
	"iter"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// counterRow is a row of coupon_issue_counters: how many coupons of a template the SQL
// issuer has issued. It is created with the template, or before its first issue (Load).
type counterRow struct {
	bun.BaseModel `bun:"table:coupon_issue_counters"`

	TemplateID string `bun:"template_id,pk,type:varchar(64)"`
	Issued     int64  `bun:"issued,notnull"`
}

// CreateSchema creates the issuer's table (coupon_issue_counters) when it does not exist,
// its template IDs comparing byte for byte on MySQL (see coupon.CreateSchema). It is
// idempotent and works on MySQL/MariaDB and SQLite.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if _, err := db.NewCreateTable().Model((*counterRow)(nil)).IfNotExists().Exec(ctx); err != nil {
		return fmt.Errorf("sqlcoupon: creating tables: %w", err)
	}
	if err := sqlutil.BinaryColumns(ctx, db, "coupon_issue_counters", "template_id"); err != nil {
		return fmt.Errorf("sqlcoupon: %w", err)
	}
	return nil
}

// Issuer is the SQL-only coupon.Issuer. It has no state of its own; the zero value is ready.
type Issuer struct{}

var (
	_ coupon.Issuer    = Issuer{}
	_ coupon.Recounter = Issuer{}
)

// New returns the SQL-only issuer.
func New() Issuer { return Issuer{} }

// Name is "sql".
func (Issuer) Name() string { return "sql" }

// JoinsTx is true: the take is part of the transaction that writes the coupon.
func (Issuer) JoinsTx() bool { return true }

// Take reads the user's coupons of the template (for a replay, the limit and the first
// free ordinal), then bumps the template's issued count if it is below the total quantity:
// a conditional update that locks the counter row until the transaction ends, done last
// so that the lock is held only while the coupon is written and committed. Rejections
// roll the bump back with the transaction (and the Service then checks whether the
// request had been served). A request of the user already issued is reported as a replay.
func (Issuer) Take(ctx context.Context, r coupon.TakeRequest) (coupon.Taken, error) {
	tpl := r.Template
	reject := &coupon.IssueError{TemplateID: tpl.ID, UserID: r.UserID, RequestID: r.RequestID}
	issued, err := issuedCount(ctx, r.Tx(), tpl.ID)
	switch {
	case err != nil:
		return coupon.Taken{}, err
	case tpl.TotalQuantity > 0 && issued >= tpl.TotalQuantity:
		// Turned away without waiting for the counter row's lock.
		reject.Err, reject.Total = coupon.ErrSoldOut, tpl.TotalQuantity
		return coupon.Taken{}, reject
	}
	held, err := r.Holdings(ctx)
	if err != nil {
		return coupon.Taken{}, err
	}
	taken := make(map[int]bool, len(held))
	for _, h := range held {
		if h.RequestID == r.RequestID {
			return coupon.Taken{Ordinal: h.Ordinal, Replay: true}, nil
		}
		taken[h.Ordinal] = true
	}
	if len(held) >= tpl.PerUserLimit {
		reject.Err, reject.Limit = coupon.ErrLimitReached, tpl.PerUserLimit
		return coupon.Taken{}, reject
	}
	ordinal := 1
	for taken[ordinal] {
		ordinal++
	}
	// The counter, bumped under its lock, is the coupon's place. MySQL returns it with
	// the update (LAST_INSERT_ID(expr) sets the OK packet's insert ID): no round trip more
	// while the lock is held; SQLite, in process, reads it back.
	mysql := !sqlutil.IsSQLite(r.Tx())
	bump := "issued = issued + 1"
	if mysql {
		bump = "issued = LAST_INSERT_ID(issued + 1)"
	}
	res, err := r.Tx().NewUpdate().Model((*counterRow)(nil)).Set(bump).
		Where("template_id = ?", tpl.ID).Where("(? = 0 OR issued < ?)", tpl.TotalQuantity, tpl.TotalQuantity).Exec(ctx)
	if err != nil {
		return coupon.Taken{}, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return coupon.Taken{}, err
	}
	if n != 1 {
		reject.Err, reject.Total = coupon.ErrSoldOut, tpl.TotalQuantity
		return coupon.Taken{}, reject
	}
	got := coupon.Taken{Ordinal: ordinal}
	switch {
	case tpl.TotalQuantity == 0: // no place
	case mysql:
		got.Place, err = res.LastInsertId()
	default:
		got.Place, err = issuedCount(ctx, r.Tx(), tpl.ID)
	}
	if err != nil {
		return coupon.Taken{}, err
	}
	return got, nil
}

// issuedCount reads the template's issued count without locking it, or returns
// coupon.ErrNotLoaded when the template has no counter yet.
func issuedCount(ctx context.Context, db bun.IDB, templateID string) (int64, error) {
	var issued int64
	err := db.NewSelect().Model((*counterRow)(nil)).Column("issued").Where("template_id = ?", templateID).Scan(ctx, &issued)
	if sqlutil.IsNoRows(err) {
		return 0, coupon.ErrNotLoaded
	}
	return issued, err
}

// Load creates the template's counter when it is missing, set to the number of holdings:
// on a template's first issue that is zero, and on a template issued before through
// another issuer it is the coupons already issued, or, for a template with a total, the
// highest place they hold if that is more (the places below it that no coupon holds, left
// by the other issuer's failed writes, are not issued again). It runs outside the issuing
// transactions, as a single INSERT that does nothing when the counter exists. Outside
// coupon.Service.ClaimIssuance an existing counter is never replaced: it changes only in the
// transactions that write the coupons, so it cannot disagree with them. ClaimIssuance
// (onlyIfMissing false) sets it, in the transaction that holds the template's row lock,
// which no coupon of the template is written without: the coupons another issuer wrote
// while the template was its own are counted.
func (Issuer) Load(ctx context.Context, db bun.IDB, tpl coupon.Template, holdings iter.Seq2[coupon.Holding, error], onlyIfMissing bool) error {
	var n, top int64
	for h, err := range holdings {
		if err != nil {
			return err
		}
		n++
		top = max(top, h.Place)
	}
	if tpl.TotalQuantity > 0 {
		n = max(n, top)
	}
	if !onlyIfMissing {
		if _, err := db.NewUpdate().Model((*counterRow)(nil)).Set("issued = ?", n).Where("template_id = ?", tpl.ID).Exec(ctx); err != nil {
			return err
		}
	}
	_, err := db.NewInsert().Model(&counterRow{TemplateID: tpl.ID, Issued: n}).Ignore().Exec(ctx)
	return err
}

// GiveBack does nothing: the take rolls back with the coupon's transaction.
func (Issuer) GiveBack(context.Context, coupon.TakeRequest) error { return nil }

// Adopt does nothing: the issuer remembers nothing outside SQL.
func (Issuer) Adopt(context.Context, coupon.TakeRequest, []coupon.Holding) (int, error) {
	return 0, nil
}

// Taken returns the template's issued count, or coupon.ErrNotLoaded before its first issue.
func (Issuer) Taken(ctx context.Context, db bun.IDB, templateID string) (int64, error) {
	return issuedCount(ctx, db, templateID)
}
