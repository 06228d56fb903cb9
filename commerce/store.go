package commerce

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/payment"
)

// What commerce knows of an order's stock reservation (orders.stock).
const (
	stockReserved  = "reserved"  // units held by the reservation
	stockCommitted = "committed" // units sold
	stockReleased  = "released"  // units given back before they were sold (or expired)
	stockReturned  = "returned"  // units sold, then put back (inventory.Return)
)

// Progress markers (orders.step): the work Recover would do next; empty when none.
const (
	stepPay    = "pay"    // PAYING: settle the payment, then complete or fail the order
	stepRefund = "refund" // PAYING: the approval came too late; refund, then fail the order
	stepCancel = "cancel" // CANCELLING: refund the payment, then cancel the order
	// CANCELLING with a reward shortfall: stepCancel, less the shortfall. A marker of its
	// own, so that a process of an earlier version (which knows no shortfall and would
	// refund in full) leaves the order alone during a rolling deploy: it resumes no step it
	// does not know.
	stepCancelShort = "cancel_short"
	stepRelease     = "release" // final: the reservation (outside SQL) is still to be released
	stepReturn      = "return"  // CANCELLED: the units (outside SQL) are still to be returned
)

type productRow struct {
	bun.BaseModel `bun:"table:commerce_products"`

	ID        string `bun:"id,pk"`
	Name      string `bun:"name"`
	Price     int64  `bun:"price"`
	CreatedAt int64  `bun:"created_at"`
	UpdatedAt int64  `bun:"updated_at"`
}

func (r *productRow) product() Product {
	return Product{ID: r.ID, Name: r.Name, Price: r.Price, CreatedAt: fromMicros(r.CreatedAt), UpdatedAt: fromMicros(r.UpdatedAt)}
}

type orderRow struct {
	bun.BaseModel `bun:"table:commerce_orders"`

	ID             string `bun:"id,pk"`
	UserID         string `bun:"user_id"`
	IdemKey        string `bun:"idem_key"`
	Fingerprint    string `bun:"fingerprint"`
	Status         Status `bun:"status"`
	Step           string `bun:"step"`
	Stock          string `bun:"stock"`
	CouponID       string `bun:"coupon_id"`
	Subtotal       int64  `bun:"subtotal"`
	Discount       int64  `bun:"discount"`
	Points         int64  `bun:"points"`
	AmountDue      int64  `bun:"amount_due"`
	Reward         int64  `bun:"reward"`
	Shortfall      int64  `bun:"reward_shortfall"`
	PayKey         string `bun:"pay_key"`
	PayFingerprint string `bun:"pay_fingerprint"`
	PayMethod      string `bun:"pay_method"`
	PayToken       string `bun:"pay_token"`
	PaymentID      string `bun:"payment_id"`
	CancelAttempt  int    `bun:"cancel_attempt"`
	FailureCode    string `bun:"failure_code"`
	CreatedAt      int64  `bun:"created_at"`
	ExpiresAt      int64  `bun:"expires_at"`
	PaidAt         int64  `bun:"paid_at"`
	ClosedAt       int64  `bun:"closed_at"`
	UpdatedAt      int64  `bun:"updated_at"`

	Lines []lineRow `bun:"-"`
	// RewardWithheld is the reward the ledger refused to the order PAID by this move (not
	// stored: its payment-completed event says so).
	RewardWithheld int64 `bun:"-"`
	// Recorded is the payment the move to PAYING recorded (payment.Service.RequestToAttempt),
	// as it returned it, for Pay's AttemptRecorded (not stored).
	Recorded payment.Payment `bun:"-"`
}

type lineRow struct {
	bun.BaseModel `bun:"table:commerce_order_lines"`

	OrderID   string `bun:"order_id,pk"`
	ProductID string `bun:"product_id,pk"`
	Qty       int64  `bun:"qty"`
	UnitPrice int64  `bun:"unit_price"`
}

func (r *orderRow) order() Order {
	o := Order{
		ID: r.ID, UserID: r.UserID, Status: r.Status, CouponID: r.CouponID,
		Subtotal: r.Subtotal, Discount: r.Discount, Points: r.Points, AmountDue: r.AmountDue, Reward: r.Reward,
		PayMethod: payment.Method(r.PayMethod), PaymentID: r.PaymentID, FailureCode: r.FailureCode, Step: r.Step,
		CreatedAt: fromMicros(r.CreatedAt), ExpiresAt: fromMicros(r.ExpiresAt), PaidAt: fromMicros(r.PaidAt),
		ClosedAt: fromMicros(r.ClosedAt), UpdatedAt: fromMicros(r.UpdatedAt),
		Lines: make([]OrderLine, len(r.Lines)),
	}
	if r.PaidAt != 0 && (r.Status == StatusCancelling || r.Status == StatusCancelled) {
		o.RewardShortfall = r.Shortfall
		o.RefundPoints, o.RefundAmount = r.refunds()
	}
	for i, l := range r.Lines {
		o.Lines[i] = OrderLine{ProductID: l.ProductID, Qty: l.Qty, UnitPrice: l.UnitPrice, Amount: l.Qty * l.UnitPrice}
	}
	return o
}

// payRequest is the payment of the order's amount due.
func (r *orderRow) payRequest() payment.PayRequest {
	return payment.PayRequest{PaymentID: r.PaymentID, OrderID: r.ID, Amount: r.AmountDue, Currency: Currency,
		Method: payment.Method(r.PayMethod), Token: r.PayToken}
}

type topUpRow struct {
	bun.BaseModel `bun:"table:commerce_topups"`

	ID          string      `bun:"id,pk"`
	UserID      string      `bun:"user_id"`
	IdemKey     string      `bun:"idem_key"`
	Fingerprint string      `bun:"fingerprint"`
	Amount      int64       `bun:"amount"`
	Method      string      `bun:"method"`
	Token       string      `bun:"token"`
	Status      TopUpStatus `bun:"status"`
	PaymentID   string      `bun:"payment_id"`
	FailureCode string      `bun:"failure_code"`
	CreatedAt   int64       `bun:"created_at"`
	UpdatedAt   int64       `bun:"updated_at"`
}

func (r *topUpRow) topUp() TopUp {
	return TopUp{
		ID: r.ID, UserID: r.UserID, Amount: r.Amount, Method: payment.Method(r.Method), Status: r.Status,
		PaymentID: r.PaymentID, FailureCode: r.FailureCode,
		CreatedAt: fromMicros(r.CreatedAt), UpdatedAt: fromMicros(r.UpdatedAt),
	}
}

// payRequest is the payment of the top-up.
func (r *topUpRow) payRequest() payment.PayRequest {
	return payment.PayRequest{PaymentID: r.PaymentID, OrderID: r.ID, Amount: r.Amount, Currency: Currency,
		Method: payment.Method(r.Method), Token: r.Token}
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// orderLineRow is an order joined with one of its lines, as loadOrder reads it (the line's
// columns are NULL, so Line is zero, for an order without lines).
type orderLineRow struct {
	orderRow `bun:",extend"`
	Line     lineRow `bun:"embed:line_"`
}

// loadOrder reads an order and its lines (by product) through db in one statement;
// ErrOrderNotFound when there is none.
func loadOrder(ctx context.Context, db bun.IDB, id string) (*orderRow, error) {
	var rows []orderLineRow
	q := sqlutil.Columns[orderRow](db.NewSelect().Model(&rows).ModelTableExpr("commerce_orders AS o"), "o")
	err := q.ColumnExpr("l.product_id AS line_product_id, l.qty AS line_qty, l.unit_price AS line_unit_price").
		Join("LEFT JOIN commerce_order_lines AS l ON l.order_id = o.id").
		Where("o.id = ?", id).OrderExpr("l.product_id").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("commerce: read order %s: %w", id, sqlutil.Unavailable(db, err))
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrOrderNotFound, id)
	}
	row := &rows[0].orderRow
	for _, r := range rows {
		if r.Line.ProductID != "" {
			r.Line.OrderID = id
			row.Lines = append(row.Lines, r.Line)
		}
	}
	return row, nil
}

// loadLines fills the lines of rows with one query.
func loadLines(ctx context.Context, db bun.IDB, rows []*orderRow) error {
	if len(rows) == 0 {
		return nil
	}
	ids := make([]string, len(rows))
	byID := make(map[string]*orderRow, len(rows))
	for i, r := range rows {
		ids[i], byID[r.ID] = r.ID, r
	}
	var lines []lineRow
	if err := db.NewSelect().Model(&lines).Where("order_id IN (?)", bun.List(ids)).
		Order("order_id", "product_id").Scan(ctx); err != nil {
		return fmt.Errorf("commerce: read order lines: %w", sqlutil.Unavailable(db, err))
	}
	for _, l := range lines {
		r := byID[l.OrderID]
		r.Lines = append(r.Lines, l)
	}
	return nil
}

// orderState is the state a transition moves an order from: its status and step, and the
// attempt they belong to, its payment ID (Pay's attempts) and its cancellation attempt.
// Status and step alone repeat: an order reopened after an abandoned payment is PAYING
// again on the next attempt's payment, one whose refund was rejected is PAID then
// CANCELLING again on the next cancellation; a flow that read the order during the earlier
// attempt must not move it during the later one.
type orderState struct {
	status        Status
	step          string
	paymentID     string
	cancelAttempt int
}

// state returns the state r is in, as a transition's precondition.
func (r *orderRow) state() orderState {
	return orderState{status: r.Status, step: r.Step, paymentID: r.PaymentID, cancelAttempt: r.CancelAttempt}
}

// transition is a conditional update of an order: it applies set (column = value pairs)
// only while the order is in the state from (its status, step, payment ID and cancellation
// attempt), and reports whether it did. updated_at is always set. Exactly one of racing
// transitions from the same state wins, and one from an earlier attempt's state loses
// even when the order's status and step have come back to the same values.
// It reads the order by its primary key only: through commerce_orders_step (step, id), as
// InnoDB's optimizer chose for 3 of 4 transitions in a flash sale, it gap-locked the orders
// beside it (TestTransitionLocksOneRow).
func transition(ctx context.Context, db bun.IDB, id string, from orderState, now time.Time, set map[string]any) (bool, error) {
	q := sqlutil.UpdateByPK[orderRow](db).Set("updated_at = ?", micros(now)).
		Where("id = ?", id).Where("status = ?", from.status).Where("step = ?", from.step).
		Where("payment_id = ?", from.paymentID).Where("cancel_attempt = ?", from.cancelAttempt)
	res, err := setColumns(q, set).Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("commerce: update order %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("commerce: update order %s: %w", id, err)
	}
	return n == 1, nil
}

// setColumns adds set (column = value pairs) to q, by column name.
func setColumns(q *bun.UpdateQuery, set map[string]any) *bun.UpdateQuery {
	for _, col := range slices.Sorted(maps.Keys(set)) { // one text per set of columns
		q = q.Set("? = ?", bun.Ident(col), set[col])
	}
	return q
}
