package commerce

import (
	"context"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/payment"
)

// Currency is the currency of every amount in the package: Korean won, which has no minor
// unit (1 = 1 won). Payments are recorded in it and the BNPL minimum is expressed in it.
const Currency = "KRW"

// Limits checked before anything is touched.
const (
	// MaxLines is the most lines one order may have (before lines of one product are summed).
	MaxLines = 50
	// MaxQty is the most units of one product one order may hold (after summing).
	MaxQty = 999
	// MaxIDLen is the longest product, user, coupon or order ID, in bytes.
	MaxIDLen = 64
	// MaxKeyLen is the longest idempotency key, in bytes.
	MaxKeyLen = 255
	// MaxNameLen is the longest product name, in bytes.
	MaxNameLen = 200
	// MaxPrice bounds a product's price, so that an order's total (50 lines of 999 units)
	// never overflows.
	MaxPrice = 1_000_000_000_000
	// MaxTopUp bounds one points top-up.
	MaxTopUp = 10_000_000
	// MaxPageSize bounds a page of ListProducts or ListOrders; DefaultPageSize is used for 0.
	MaxPageSize     = 100
	DefaultPageSize = 20
)

// Status is where an order is in its life. See the package documentation for the diagram.
type Status string

// The order statuses. PENDING_PAYMENT, PAYING and CANCELLING are in flight; the others are
// final (a PAID order may still be cancelled within the cancel window).
const (
	StatusPendingPayment Status = "PENDING_PAYMENT"
	StatusPaying         Status = "PAYING"
	StatusPaid           Status = "PAID"
	StatusPaymentFailed  Status = "PAYMENT_FAILED"
	StatusCancelling     Status = "CANCELLING"
	StatusCancelled      Status = "CANCELLED"
	StatusExpired        Status = "EXPIRED"
)

// Statuses lists every order status, in the order of an order's life.
var Statuses = []Status{StatusPendingPayment, StatusPaying, StatusPaid, StatusPaymentFailed,
	StatusCancelling, StatusCancelled, StatusExpired}

// Valid reports whether s is one of Statuses.
func (s Status) Valid() bool { return slices.Contains(Statuses, s) }

// Final reports whether no flow will move an order in status s any more (PAID is not
// final: it may be cancelled).
func (s Status) Final() bool {
	return s == StatusPaymentFailed || s == StatusCancelled || s == StatusExpired
}

// Product is an item of the catalog. Its stock lives in the inventory under the product ID
// as SKU.
type Product struct {
	ID    string
	Name  string
	Price int64
	// Stock is the product's stock as the inventory reports it (filled by GetProduct and
	// ListProducts).
	Stock     inventory.Stock
	CreatedAt time.Time
	UpdatedAt time.Time
}

// NewProduct describes a product to create.
type NewProduct struct {
	// ID is the product's ID and its SKU in the inventory: 1-64 printable ASCII bytes,
	// no ',' or '='.
	ID string
	// Name is 1-200 bytes of UTF-8.
	Name string
	// Price is the unit price in won, 1..MaxPrice.
	Price int64
	// Stock is the initial on-hand count (0 or more).
	Stock int64
	// BuyerLimit is the most units one user may buy (0: no limit).
	BuyerLimit int64
}

// ProductQuery selects a page of the catalog, ordered by product ID.
type ProductQuery struct {
	// Limit is the page size: 0 means DefaultPageSize, at most MaxPageSize.
	Limit int
	// Cursor is the Next of the previous page; "" starts at the beginning.
	Cursor string
}

// ProductPage is one page of the catalog.
type ProductPage struct {
	Products []Product
	// Next is the cursor of the following page, "" when this is the last.
	Next string
}

// Line is one line of an order request: Qty units of a product.
type Line struct {
	ProductID string
	Qty       int64
}

// OrderLine is one line of a placed order, one per product, with the price it was sold at.
type OrderLine struct {
	ProductID string
	Qty       int64
	UnitPrice int64
	// Amount is Qty × UnitPrice.
	Amount int64
}

// PlaceOrderRequest asks for an order.
type PlaceOrderRequest struct {
	UserID string
	// Lines are 1 to MaxLines lines; lines of one product are summed, to at most MaxQty.
	Lines []Line
	// CouponID, when set, is a coupon of the user's wallet applied to the order.
	CouponID string
	// Points, when positive, are the user's points applied to the order (held now, captured
	// when the order is paid).
	Points int64
	// IdempotencyKey identifies the request (1-255 bytes): the same user and key return the
	// same order; with a different request they fail with ErrIdempotencyConflict.
	IdempotencyKey string
	// PayWithPoints pays the order with its Points alone as it is placed, in one call (the
	// documents' synchronous points payment): Points must equal the subtotal and no coupon
	// be applied, else *ValidationError and nothing is reserved. PlaceOrder then returns the
	// order as Pay (with the same IdempotencyKey) leaves it: PAID. Should the payment fail
	// after the order is placed, the order stays PENDING_PAYMENT and a retry with the key
	// pays it.
	PayWithPoints bool
	// InTx, when set, runs inside the order's transaction once the order is recorded (before
	// the stock is reserved): its writes commit with the order, and its error aborts the
	// order, which then changes nothing. It is not part of the request's fingerprint. A
	// cart uses it to delete its rows together with the order they became. An error that
	// is a failure, not a refusal — a dependency failing (see errcode.ErrUnavailable), a
	// deadlock, the context ending — fails the order like any other failure: the stock
	// reservation stays for a retry with the key.
	//
	// InTx may run in a transaction that then fails, and PlaceOrder may then answer an
	// order it finds under the key, which another request placed: that InTx ran does not
	// make the order the caller's; its writes, committed or not, tell. So, with InTx set,
	// PayWithPoints pays only an order this call placed, and the caller pays its own, found
	// placed, with FinishPointsPayment.
	InTx func(ctx context.Context, tx bun.IDB) error
}

// Order is a placed order with its amounts: AmountDue = Subtotal − Discount − Points,
// the part paid through the payment gateway.
type Order struct {
	ID     string
	UserID string
	Status Status
	Lines  []OrderLine

	CouponID  string
	Subtotal  int64
	Discount  int64
	Points    int64
	AmountDue int64
	// Reward is the points earned when the order was paid (clawed back on cancel).
	Reward int64
	// RewardShortfall, RefundPoints and RefundAmount are set once a paid order is being
	// cancelled (CANCELLING, CANCELLED): the part of Reward the user had spent, which the
	// cancellation could not claw back, and what it refunds: Points and AmountDue less the
	// shortfall, taken from the points first, then from the payment (so RefundPoints +
	// RefundAmount + RewardShortfall = Points + AmountDue).
	RewardShortfall int64
	RefundPoints    int64
	RefundAmount    int64

	// PayMethod is the gateway method of the payment (CARD or BNPL; empty until Pay, and for
	// an order paid with points alone). PaymentID is the payment's ID in the payment
	// package (empty when nothing is due), of its latest attempt: an order reopened because
	// the PG was not reached keeps its abandoned payment's ID until the next Pay.
	PayMethod payment.Method
	PaymentID string
	// FailureCode says why an order failed or could not be completed: the PG's decline code,
	// or one of the Failure constants.
	FailureCode string
	// Step is the flow's progress marker: empty when nothing is left to do for the order;
	// otherwise the next step Recover would take.
	Step string

	CreatedAt time.Time
	// ExpiresAt is when an unpaid order expires.
	ExpiresAt time.Time
	// PaidAt is when the order was paid (zero if never); the cancel window counts from it.
	PaidAt time.Time
	// ClosedAt is when the order reached a final status.
	ClosedAt  time.Time
	UpdatedAt time.Time
}

// Failure codes of orders that failed for a reason of their own rather than a PG decline.
const (
	// FailureUnfulfillable: the payment was approved but the order could no longer be
	// fulfilled (its reservation or points hold had expired meanwhile); the payment was
	// refunded.
	FailureUnfulfillable = "UNFULFILLABLE"
	// FailurePGUnreached: a top-up whose payment was given up because the PG was not
	// reached (nothing was charged), and whose client did not come back for another
	// attempt within the order expiry.
	FailurePGUnreached = "PG_UNREACHED"
)

// OrderQuery selects a page of a user's orders, newest first.
type OrderQuery struct {
	// Status keeps only orders in that status; empty keeps all.
	Status Status
	// Limit is the page size: 0 means DefaultPageSize, at most MaxPageSize.
	Limit int
	// Cursor is the Next of the previous page; "" starts at the newest order.
	Cursor string
}

// OrderPage is one page of a user's orders.
type OrderPage struct {
	Orders []Order
	// Next is the cursor of the following (older) page, "" when this is the last.
	Next string
}

// PayRequest asks to pay an order.
type PayRequest struct {
	OrderID string
	UserID  string
	// Method pays the amount due: payment.MethodCard or payment.MethodBNPL. It is ignored
	// (and may be empty) when nothing is due.
	Method payment.Method
	// Token is the card token or BNPL authorisation passed to the PG.
	Token string
	// IdempotencyKey identifies the request (1-255 bytes): repeating it returns the order as
	// the first request left it (continuing it if it is still in flight).
	IdempotencyKey string
}

// Actor is who acts on an order: its owner, or an administrator.
type Actor struct {
	UserID string
	Admin  bool
}

// TopUpStatus is where a points top-up is.
type TopUpStatus string

// The top-up statuses.
const (
	TopUpPaying    TopUpStatus = "PAYING"
	TopUpCompleted TopUpStatus = "COMPLETED"
	TopUpFailed    TopUpStatus = "FAILED"
)

// TopUpRequest asks to buy points with a card payment.
type TopUpRequest struct {
	UserID string
	// Amount is the points bought, paid 1 won per point (1..MaxTopUp).
	Amount int64
	// Method is payment.MethodCard or payment.MethodBNPL (10,000 won at least).
	Method payment.Method
	Token  string
	// IdempotencyKey identifies the request (1-255 bytes).
	IdempotencyKey string
}

// TopUp is a points top-up: a payment, then a ledger Charge.
type TopUp struct {
	ID        string
	UserID    string
	Amount    int64
	Method    payment.Method
	Status    TopUpStatus
	PaymentID string
	// FailureCode is the PG's decline code of a failed top-up, or FailurePaymentReview.
	FailureCode string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// RecoverReport counts what one Recover pass did.
type RecoverReport struct {
	// Examined is how many orders and top-ups with pending work the pass looked at.
	Examined int
	// Advanced is how many of them it moved forward (or finished).
	Advanced int
	// Waiting is how many still wait for something outside (a payment or refund the PG has
	// not settled yet).
	Waiting int
	// Failed is how many failed with an error (logged; the next pass tries again).
	Failed int
}

// Discrepancy is one thing Audit found wrong.
type Discrepancy struct {
	// Kind names the check: "stock.reserved", "stock.sold", "reservation", "coupon",
	// "points", "reward", "payment", "event", "ledger".
	Kind string
	// Subject is what the check was about: an order ID, a SKU, a ledger account.
	Subject string
	// Detail says what was expected and what was found.
	Detail string
}

// String describes the discrepancy in one line.
func (d Discrepancy) String() string {
	return d.Kind + " " + d.Subject + ": " + d.Detail
}

// Report is what Audit found.
type Report struct {
	// Orders, Products and TopUps are how many of each the audit examined.
	Orders, Products, TopUps int
	// Discrepancies lists everything wrong; empty when the store is consistent.
	Discrepancies []Discrepancy
}

// OK reports whether the audit found nothing wrong.
func (r Report) OK() bool { return len(r.Discrepancies) == 0 }

// Outcome is a business outcome reported to an Observer.
type Outcome string

// The outcomes an Observer sees.
const (
	OutcomePlaced    Outcome = "placed"
	OutcomePaid      Outcome = "paid"
	OutcomeFailed    Outcome = "payment_failed"
	OutcomeCancelled Outcome = "cancelled"
	OutcomeExpired   Outcome = "expired"
	OutcomeToppedUp  Outcome = "topped_up"
)

// Observer is the metrics hook of a Service, the one shape every package shares: it is told,
// after the change committed, an Event with Component "commerce" for each order (or
// top-up) reaching an outcome: Name the Outcome, N its amount due (or top-up amount),
// Labels {"method": its payment method} (payment.MethodCard or MethodBNPL; MethodPoints for
// an order paid by points alone; MethodNone before Pay chose one).
type Observer = observe.Observer
