package coupon

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
)

// Page sizes of Wallet.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// WalletQuery selects a page of a user's coupons.
type WalletQuery struct {
	// State keeps only coupons in that state (as of the Service's clock); zero keeps all.
	State State
	// Limit is the page size: 0 means DefaultPageSize, at most MaxPageSize.
	Limit int
	// Cursor is the Next of the previous page; "" starts at the newest coupon.
	Cursor string
}

// WalletPage is one page of a wallet, newest coupon first.
type WalletPage struct {
	Coupons []Coupon
	// Next is the cursor of the following page, "" when this is the last.
	Next string
}

// Wallet returns a page of the user's coupons, newest first, each with its state as of the
// Service's clock (an available coupon past ExpiresAt is StateExpired). Pages are cut by an
// opaque cursor, so coupons issued meanwhile never shift or repeat a later page.
func (s *Service) Wallet(ctx context.Context, userID string, q WalletQuery) (WalletPage, error) {
	if err := validateID("userID", userID); err != nil {
		return WalletPage{}, err
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit < 0 || limit > MaxPageSize:
		return WalletPage{}, invalidArg("Limit", "must be between 0 (default) and 100")
	}
	now := s.now()
	var rows []couponRow
	sel := s.db.NewSelect().Model(&rows).Where("user_id = ?", userID).OrderExpr("seq DESC").Limit(int64(limit + 1))
	if q.Cursor != "" {
		after, err := decodeCursor(q.Cursor)
		if err != nil {
			return WalletPage{}, err
		}
		sel = sel.Where("seq < ?", after)
	}
	switch q.State {
	case "":
	case StateAvailable:
		sel = sel.Where("state = ?", StateAvailable).Where("(expires_at IS NULL OR expires_at > ?)", now)
	case StateExpired:
		sel = sel.Where("state = ?", StateAvailable).Where("expires_at <= ?", now)
	case StateReserved, StateUsed:
		sel = sel.Where("state = ?", q.State)
	default:
		return WalletPage{}, invalidArg("State", "is not a coupon state")
	}
	if err := sel.Scan(ctx); err != nil {
		return WalletPage{}, fail("reading wallet", err)
	}
	var page WalletPage
	if len(rows) > limit {
		rows = rows[:limit]
		page.Next = encodeCursor(rows[limit-1].Seq)
	}
	page.Coupons = make([]Coupon, len(rows))
	for i := range rows {
		c := rows[i].coupon()
		c.State = c.effectiveState(now)
		page.Coupons[i] = c
	}
	return page, nil
}

// Coupon returns the coupon with that ID, its state as of the Service's clock, or an error
// wrapping ErrCouponNotFound.
func (s *Service) Coupon(ctx context.Context, id string) (Coupon, error) {
	if err := validateID("couponID", id); err != nil {
		return Coupon{}, err
	}
	c, found, err := couponWhere(ctx, s.db, false, "id = ?", id)
	switch {
	case err != nil:
		return Coupon{}, fail("reading coupon", err)
	case !found:
		return Coupon{}, &RedeemError{Err: ErrCouponNotFound, CouponID: id}
	}
	c.State = c.effectiveState(s.now())
	return c, nil
}

const cursorPrefix = "w1:"

func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(seq, 10)))
}

func decodeCursor(cursor string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err == nil {
		if rest, ok := strings.CutPrefix(string(b), cursorPrefix); ok {
			if seq, err := strconv.ParseInt(rest, 10, 64); err == nil && seq > 0 {
				return seq, nil
			}
		}
	}
	return 0, invalidArg("Cursor", "is not a cursor this package returned")
}
