package coupon

import (
	"context"
	"errors"
	"iter"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

var errNoTx = errors.New("coupon: TakeRequest.Holdings needs the transaction of an issuer that joins it")

// holdingsPage is how many holdings one query of allHoldings reads.
const holdingsPage = 1000

// userHoldings reads the user's coupons of a template, with a locking read on MySQL when
// lock is set.
func userHoldings(ctx context.Context, db bun.IDB, templateID, userID string, lock bool) ([]Holding, error) {
	var rows []couponRow
	q := db.NewSelect().Model(&rows).Column("user_id", "ordinal", "place", "request_id").
		Where("template_id = ?", templateID).Where("user_id = ?", userID).Order("ordinal")
	if lock {
		q = sqlutil.ForUpdate(q)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, err
	}
	return toHoldings(rows), nil
}

// allHoldings yields every coupon of a template, in pages along the (template, user,
// ordinal) unique key. A page reads its keys and seq from that index alone (it holds the
// primary key), a range from the cursor, then joins their rows by seq: reading the rows'
// other columns in the same query, MariaDB 10.11 chose a ref on template_id instead,
// reading the template's entries from the first for every page.
func allHoldings(ctx context.Context, db bun.IDB, templateID string) iter.Seq2[Holding, error] {
	return func(yield func(Holding, error) bool) {
		var after Holding
		for first := true; ; first = false {
			keys := db.NewSelect().Model((*couponRow)(nil)).Column("seq", "user_id", "ordinal").
				Where("template_id = ?", templateID).OrderExpr("user_id, ordinal").Limit(holdingsPage)
			if !first {
				keys = keys.Where("(user_id > ? OR (user_id = ? AND ordinal > ?))", after.UserID, after.UserID, after.Ordinal)
			}
			var rows []couponRow
			q := db.NewSelect().Model(&rows).Column("user_id", "ordinal", "place", "request_id").
				Join("JOIN (?) AS page ON page.seq = coupon_row.seq", keys).OrderExpr("page.user_id, page.ordinal")
			if err := q.Scan(ctx); err != nil {
				yield(Holding{}, err)
				return
			}
			for _, r := range rows {
				after = r.holding()
				if !yield(after, nil) {
					return
				}
			}
			if len(rows) < holdingsPage {
				return
			}
		}
	}
}

// colliding reads the durable coupons that hold c's ordinal of its user or c's place.
func colliding(ctx context.Context, db bun.IDB, c Coupon) ([]Holding, error) {
	var rows []couponRow
	err := db.NewSelect().Model(&rows).Column("user_id", "ordinal", "place", "request_id").
		Where("template_id = ?", c.TemplateID).
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("user_id = ? AND ordinal = ?", c.UserID, c.Ordinal).WhereOr("place = ?", c.Place)
		}).Scan(ctx)
	if err != nil {
		return nil, err
	}
	return toHoldings(rows), nil
}

func toHoldings(rows []couponRow) []Holding {
	out := make([]Holding, len(rows))
	for i, r := range rows {
		out[i] = r.holding()
	}
	return out
}

func (r *couponRow) holding() Holding {
	return Holding{UserID: r.UserID, Ordinal: r.Ordinal, Place: r.Place, RequestID: r.RequestID}
}

// couponWhere reads one coupon matching the condition; found is false when none does.
func couponWhere(ctx context.Context, db bun.IDB, lock bool, query string, arg any) (c Coupon, found bool, err error) {
	var row couponRow
	q := db.NewSelect().Model(&row).Where(query, arg)
	if lock {
		q = sqlutil.ForUpdate(q)
	}
	switch err := q.Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return Coupon{}, false, nil
	case err != nil:
		return Coupon{}, false, err
	}
	return row.coupon(), true, nil
}

// couponByRequest reads the coupon issued under requestID, if any.
func couponByRequest(ctx context.Context, db bun.IDB, requestID string) (Coupon, bool, error) {
	return couponWhere(ctx, db, false, "request_id = ?", requestID)
}

func insertCoupon(ctx context.Context, db bun.IDB, c Coupon) error {
	_, err := db.NewInsert().Model(toCouponRow(c)).Exec(ctx)
	return err
}
