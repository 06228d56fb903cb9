package commerce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/hold"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/payment"
)

// PlaceOrder places an order: it validates the request (1 to MaxLines lines, quantities
// 1..MaxQty after the lines of one product are summed), prices the lines from the catalog,
// and then, in ONE local transaction, reserves the stock, reserves the coupon, holds the
// points, records the order PENDING_PAYMENT with its amounts and writes its order-created
// event. Nothing of a failed PlaceOrder remains but, with an inventory that cannot join the
// transaction (Redis), its reservation: the stock is reserved just before the transaction;
// when the request is refused (a coupon, points, a payment rule) it is released at once,
// after any other failure it stays held for a retry with the same key, which finds it, or
// until its deadline. (A refusal whose check for a concurrent placement with the same key
// cannot read the order is such a failure: it answers the read's error, since that
// placement's order would hold the reservation.) Such a retry's order expires a payment
// window before that deadline (sooner than the usual expiry when the retry came late), and
// holds its points and coupon until the same deadline, so that all three last equally long.
// A retry whose reservation was released or expired fails with *ConflictError: PlaceOrder
// never creates an order that holds no stock. Once begun, the reservation and its
// transaction are not stopped by the client going away (ctx cancelled; ctx's deadline still
// stops them, and without one the reservation's TTL, the order's expiry plus the payment
// window), so that never leaves units reserved by no order.
//
// The order must be payable under the method rules (payment.Plan): a coupon never pays
// alone, and points and a coupon together need a card part, so an order they would cover
// entirely is refused with ErrPaymentRule.
//
// PlaceOrder is idempotent on (UserID, IdempotencyKey): the order ID is derived from them,
// so a retry, even after a crash mid-way, returns the same order and reuses the same
// reservation, coupon redemption and points hold. The same key with another request fails
// with *ConflictError.
//
// Errors: *ValidationError, ErrProductNotFound, ErrOutOfStock, ErrBuyerLimit,
// *UnpaidLimitError (ErrUnpaidLimit: see WithUnpaidLimits), ErrCouponUnusable,
// ErrInsufficientPoints, ErrPaymentRule, *ConflictError; each wraps the leaf's own error.
// A dependency that fails is an error matching errcode.ErrUnavailable: retry with the key.
func (s *Service) PlaceOrder(ctx context.Context, req PlaceOrderRequest) (Order, error) {
	lines, err := normalizeLines(req)
	if err != nil {
		return Order{}, err
	}
	id := orderID(req.UserID, req.IdempotencyKey)
	fp := placeFingerprint(lines, req.CouponID, req.Points)
	prices, placed, err := s.readPrices(ctx, id, lines)
	if err != nil {
		return Order{}, err
	}
	if placed || len(prices) == 0 { // a replay (or no product: the order may exist all the same)
		if o, err := s.replayPlace(ctx, id, req.IdempotencyKey, fp); !errors.Is(err, ErrOrderNotFound) {
			return s.payWithPoints(ctx, o, req.IdempotencyKey, payReplay(req), err)
		}
	}
	row, err := s.priceOrder(id, req, lines, fp, prices)
	if err != nil {
		return Order{}, err
	}
	if req.PayWithPoints && (req.CouponID != "" || req.Points != row.Subtotal) {
		return Order{}, invalid("Points", fmt.Sprintf("must be the subtotal, %d, without a coupon, to pay with points alone", row.Subtotal))
	}
	// The reservation and the transaction recording its order are one step: the client
	// going away (its context cancelled) no longer stops them, its deadline still does, and
	// without one the reservation's TTL.
	// Else an inventory outside the transaction (Redis) would keep units reserved by no
	// order until their deadline, unseen by the unpaid caps and the retry-less client.
	ctx, cancel := detached(ctx, s.holdTTL())
	defer cancel()
	units := stockHold{Buyer: req.UserID, Lines: make([]inventory.Line, len(lines))}
	for i, l := range lines {
		units.Lines[i] = inventory.Line{SKU: l.ProductID, Qty: l.Qty}
	}
	var reserved hold.Info
	reserve := func(ctx context.Context, h stockHolds) error {
		var err error
		reserved, err = h.Hold(ctx, id, units, s.holdTTL())
		return err
	}
	if err := s.stock.early(ctx, reserve); err != nil {
		if errors.Is(err, hold.ErrVoided) {
			// An earlier attempt with this key failed and gave its units back (or let them
			// expire): the key cannot place an order any more, and no order is created
			// without stock.
			return Order{}, fmt.Errorf("%w: its earlier attempt failed; place the order with a new key: %w",
				NewConflictError("order", req.IdempotencyKey), err)
		}
		return Order{}, leafError(err)
	}
	// A retry finds the reservation of its earlier attempt with that attempt's deadline,
	// which no call extends: the order expires a payment window before it, so that its
	// units, points and coupon are held until one deadline, as every order's are, and a
	// payment begun before its expiry still finds its units.
	if !reserved.Deadline.IsZero() {
		if last := micros(reserved.Deadline.Add(-s.cfg.payWindow)); last < row.ExpiresAt {
			row.ExpiresAt = last
		}
	}
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		r := *row // fresh copy for every attempt
		if err := s.checkUnpaidLimits(ctx, tx, &r); err != nil {
			return err
		}
		// Any failure of the leaves rolls the whole transaction back: they need no savepoints.
		whole := sqlutil.AllOrNothing(ctx)
		if err := s.holdOrder(whole, tx, &r); err != nil {
			return err
		}
		if req.InTx != nil {
			if err := req.InTx(ctx, tx); err != nil {
				if failedNotRefused(err) {
					return err // the reservation stays for a retry with the key, as after any failure
				}
				return abortedError{err} // the caller's refusal: the reservation goes back
			}
		}
		if err := s.step(StepPlaceCommit); err != nil {
			return err
		}
		// Last: the hot stock row is locked only from here to the commit.
		if err := s.stock.within(whole, tx, reserve); err != nil {
			return err
		}
		*row = r
		return nil
	})
	if err != nil {
		switch o, rerr := s.replayPlace(ctx, id, req.IdempotencyKey, fp); {
		case rerr == nil || errors.Is(rerr, ErrIdempotencyConflict):
			// a concurrent PlaceOrder with the same key committed it
			return s.payWithPoints(ctx, o, req.IdempotencyKey, payReplay(req), rerr)
		case !errors.Is(rerr, ErrOrderNotFound):
			// Whether a concurrent placement with the key committed the order is unknown:
			// that is the answer, not err, and the reservation, which its order would
			// hold, stays for the retry with the key (which reuses it, or gives it back).
			return Order{}, fmt.Errorf("commerce: place order %s: %w (after: %v)", id, rerr, err)
		}
		err = leafError(err)
		if abandoned(err) {
			release := func(ctx context.Context, h stockHolds) error { return h.Void(ctx, id) }
			if rerr := s.stock.early(context.WithoutCancel(ctx), release); rerr != nil {
				s.cfg.log.Warn("commerce: release after a refused order; its deadline will", "order", id, "err", rerr)
			}
		}
		return Order{}, err
	}
	s.notify()
	s.observe(OutcomePlaced, row.methodLabel(), row.AmountDue)
	return s.payWithPoints(ctx, row.order(), req.IdempotencyKey, req.PayWithPoints, nil)
}

// failedNotRefused reports whether the error of a PlaceOrderRequest.InTx is a failure
// rather than the caller's refusal: a dependency that failed (a connection lost, its reply
// with it), a transaction to run again, or the context ending. Its order is then neither
// placed nor refused: a retry with the key may place it, and must find the reservation.
func failedNotRefused(err error) bool {
	return depfail.Is(err) || sqlutil.IsRetryable(err) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
}

// payReplay reports whether a replay of req (its order found placed under its key, by an
// earlier or a concurrent call) is paid with points as req's own placement would be: when
// req asks for it and has no InTx. With InTx, the order may be another request's with the
// same content under the key, which its caller's writes (not made: InTx did not run) tell
// apart; the caller pays its own with FinishPointsPayment.
func payReplay(req PlaceOrderRequest) bool { return req.PayWithPoints && req.InTx == nil }

// payWithPoints finishes a placement asked to pay with points alone (want: the request's
// PayWithPoints): o, placed or replayed without error, is paid with Pay under the
// placement's key while it is PENDING_PAYMENT, and its payment finished by Pay under that
// key while it is PAYING (a replay of a placement whose payment began but whose answer
// was lost, as a replayed Pay finishes it). Otherwise o and err are returned as they are.
func (s *Service) payWithPoints(ctx context.Context, o Order, key string, want bool, err error) (Order, error) {
	if !want || err != nil {
		return o, err
	}
	switch o.Status {
	case StatusPendingPayment:
		if o.AmountDue != 0 {
			return o, invalid("Points", fmt.Sprintf("cover %d of the %d due, not all of it", o.Points, o.Points+o.AmountDue))
		}
	case StatusPaying:
	default:
		return o, nil
	}
	return s.FinishPointsPayment(ctx, o, key)
}

// FinishPointsPayment pays o, an order placed with PlaceOrderRequest.PayWithPoints under
// key and found PENDING_PAYMENT or PAYING by a replay of its placement (a failure after the
// placement, or during its payment), under that key, as the placement would have, or
// finishes the payment already begun (a replayed Pay). One whose payment began under
// another key, by a Pay of its own, is returned as it is: that Pay finishes it. A cart's
// checkout replays its placements with it.
func (s *Service) FinishPointsPayment(ctx context.Context, o Order, key string) (Order, error) {
	paid, err := s.Pay(ctx, PayRequest{OrderID: o.ID, UserID: o.UserID, IdempotencyKey: key})
	var state *StateError
	if o.Status == StatusPaying && errors.As(err, &state) {
		return o, nil
	}
	return paid, err
}

// holdOrder does the SQL part of placing an order in tx: the coupon, the amounts, the
// points hold, the order row and its event (the stock is reserved last, by the caller).
func (s *Service) holdOrder(ctx context.Context, tx bun.Tx, r *orderRow) error {
	if r.CouponID != "" {
		c, err := s.coupons(tx).Hold(ctx, r.ID, couponHold{CouponID: r.CouponID, User: r.UserID, OrderAmount: r.Subtotal}, r.holdTTL(s.cfg.payWindow))
		if err != nil {
			return err
		}
		r.Discount = c.Amount
	}
	if r.Points > r.Subtotal-r.Discount {
		return invalid("Points", fmt.Sprintf("%d points exceed the %d left to pay after the discount",
			r.Points, r.Subtotal-r.Discount))
	}
	r.AmountDue = r.Subtotal - r.Discount - r.Points
	if err := s.plan(r, payment.MethodCard).Validate(); err != nil {
		return err
	}
	if r.Points > 0 {
		if _, err := s.points(tx).Hold(ctx, holdID(r.ID), pointsHold{User: r.UserID, Amount: r.Points}, r.holdTTL(s.cfg.payWindow)); err != nil {
			return err
		}
	}
	if _, err := tx.NewInsert().Model(r).Exec(ctx); err != nil {
		return fmt.Errorf("commerce: insert order %s: %w", r.ID, err)
	}
	if _, err := tx.NewInsert().Model(&r.Lines).Exec(ctx); err != nil {
		return fmt.Errorf("commerce: insert lines of order %s: %w", r.ID, err)
	}
	return s.orderEvent(ctx, tx, r, EventOrderCreated, fromMicros(r.CreatedAt))
}

// holdTTL is how long, from its placement, the order r holds its points and coupon: until
// its expiry plus the payment window (payWindow), the deadline of its units too.
func (r *orderRow) holdTTL(payWindow time.Duration) time.Duration {
	return fromMicros(r.ExpiresAt).Add(payWindow).Sub(fromMicros(r.CreatedAt))
}

// plan is how the order would be paid with method for its amount due: the points held,
// the coupon's discount and the gateway part.
func (s *Service) plan(r *orderRow, method payment.Method) payment.Plan {
	p := payment.Plan{OrderAmount: r.Subtotal, Currency: Currency, PointBalance: r.Points}
	for _, part := range []payment.Part{
		{Method: payment.MethodPoint, Amount: r.Points},
		{Method: payment.MethodCoupon, Amount: r.Discount},
		{Method: method, Amount: r.AmountDue},
	} {
		if part.Amount > 0 {
			p.Parts = append(p.Parts, part)
		}
	}
	return p
}

// readPrices reads the prices of the lines' products and whether the order id exists, in
// one statement; placed is false, not knowing, when no product exists.
func (s *Service) readPrices(ctx context.Context, id string, lines []Line) (prices map[string]int64, placed bool, err error) {
	ids := make([]string, len(lines))
	for i, l := range lines {
		ids[i] = l.ProductID
	}
	var rows []struct {
		ID     string `bun:"id"`
		Price  int64  `bun:"price"`
		Placed bool   `bun:"placed"`
	}
	err = s.db.NewSelect().TableExpr("commerce_products AS p").ColumnExpr("p.id, p.price").
		ColumnExpr("EXISTS (SELECT 1 FROM commerce_orders AS o WHERE o.id = ?) AS placed", id).
		Where("p.id IN (?)", bun.List(ids)).Scan(ctx, &rows)
	if err != nil {
		return nil, false, fmt.Errorf("commerce: read products: %w", sqlutil.Unavailable(s.db, err))
	}
	prices = make(map[string]int64, len(rows))
	for _, r := range rows {
		prices[r.ID], placed = r.Price, r.Placed
	}
	return prices, placed, nil
}

// priceOrder builds the order row from the products' prices (without discount and amount
// due, which the coupon decides).
func (s *Service) priceOrder(id string, req PlaceOrderRequest, lines []Line, fp string, prices map[string]int64) (*orderRow, error) {
	now := s.now()
	row := &orderRow{
		ID: id, UserID: req.UserID, IdemKey: req.IdempotencyKey, Fingerprint: fp,
		Status: StatusPendingPayment, Stock: stockReserved, CouponID: req.CouponID, Points: req.Points,
		CreatedAt: micros(now), ExpiresAt: micros(now.Add(s.cfg.expiry)), UpdatedAt: micros(now),
	}
	for _, l := range lines {
		price, ok := prices[l.ProductID]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrProductNotFound, l.ProductID)
		}
		row.Lines = append(row.Lines, lineRow{OrderID: id, ProductID: l.ProductID, Qty: l.Qty, UnitPrice: price})
		row.Subtotal += l.Qty * price // at most 50 × 999 × MaxPrice: no overflow
	}
	return row, nil
}

// replayPlace returns the order id if it exists and was placed by the same request,
// *ConflictError if by another, ErrOrderNotFound if it does not exist.
func (s *Service) replayPlace(ctx context.Context, id, key, fp string) (Order, error) {
	row, err := loadOrder(ctx, s.db, id)
	if err != nil {
		return Order{}, err
	}
	if row.Fingerprint != fp {
		return Order{}, NewConflictError("order", key)
	}
	return row.order(), nil
}

// normalizeLines validates a request and returns its lines summed per product, sorted.
func normalizeLines(req PlaceOrderRequest) ([]Line, error) {
	if err := checkID("UserID", req.UserID); err != nil {
		return nil, err
	}
	if err := checkKey(req.IdempotencyKey); err != nil {
		return nil, err
	}
	if req.CouponID != "" {
		if err := checkID("CouponID", req.CouponID); err != nil {
			return nil, err
		}
	}
	if req.Points < 0 {
		return nil, invalid("Points", "must not be negative")
	}
	if len(req.Lines) == 0 || len(req.Lines) > MaxLines {
		return nil, invalid("Lines", fmt.Sprintf("an order has 1 to %d lines, not %d", MaxLines, len(req.Lines)))
	}
	sum := make(map[string]int64, len(req.Lines))
	for i, l := range req.Lines {
		if err := checkProductID(l.ProductID); err != nil {
			return nil, fmt.Errorf("line %d: %w", i, err)
		}
		if l.Qty < 1 || l.Qty > MaxQty {
			return nil, invalid("Qty", fmt.Sprintf("line %d: quantity must be 1..%d", i, MaxQty))
		}
		sum[l.ProductID] += l.Qty
		if sum[l.ProductID] > MaxQty {
			return nil, invalid("Qty", fmt.Sprintf("%d units of %s in all; at most %d", sum[l.ProductID], l.ProductID, MaxQty))
		}
	}
	lines := make([]Line, 0, len(sum))
	for id, q := range sum {
		lines = append(lines, Line{ProductID: id, Qty: q})
	}
	slices.SortFunc(lines, func(a, b Line) int { return strings.Compare(a.ProductID, b.ProductID) })
	return lines, nil
}

func placeFingerprint(lines []Line, couponID string, points int64) string {
	parts := []string{"place", couponID, strconv.FormatInt(points, 10)}
	for _, l := range lines {
		parts = append(parts, l.ProductID, strconv.FormatInt(l.Qty, 10))
	}
	return fingerprint(parts...)
}
