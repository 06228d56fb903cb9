package cart

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
)

// Limits of a cart: those of one order, so that no cart breaks them (the unpaid caps and
// the stock are checked when it is ordered).
const (
	// MaxLines is the most lines (products) a cart holds.
	MaxLines = commerce.MaxLines
	// MaxQty is the most units of one product a cart holds.
	MaxQty = commerce.MaxQty
	// MaxKeyLen is the longest idempotency key of a checkout or an AddOnce, in bytes.
	MaxKeyLen = commerce.MaxKeyLen
)

// Errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and reason.
// Unknown products fail with commerce.ErrProductNotFound.
var (
	// ErrInvalidRequest: a request failed validation and changed nothing (*ValidationError).
	// It is errcode.ErrInvalidArgument.
	ErrInvalidRequest = errcode.ErrInvalidArgument
	// ErrTooManyLines: the cart would hold more than MaxLines products (*LimitError).
	ErrTooManyLines = errcode.New(errcode.FailedPrecondition, "too_many_lines", "cart: too many lines")
	// ErrQuantityTooLarge: the cart would hold more than MaxQty units of a product
	// (*LimitError).
	ErrQuantityTooLarge = errcode.New(errcode.FailedPrecondition, "quantity_too_large", "cart: quantity too large")
	// ErrEmpty: checkout of an empty cart.
	ErrEmpty = errcode.New(errcode.FailedPrecondition, "cart_empty", "cart: the cart is empty")
	// ErrChanged: the cart changed while it was being ordered; nothing was placed and a
	// retry orders the cart as it is now.
	ErrChanged = errcode.New(errcode.Conflict, "cart_changed", "cart: the cart changed during checkout")
	// ErrKeyReused: AddOnce was given a key already used for another product or quantity.
	// It matches errcode.ErrKeyReused.
	ErrKeyReused = errcode.Derive(errcode.ErrKeyReused, "cart: idempotency key reused for another addition")
)

// ValidationError says which field of a request is wrong and why. It matches
// ErrInvalidRequest.
type ValidationError = errcode.InvalidError

// LimitError says which limit a change would break. It matches ErrTooManyLines or
// ErrQuantityTooLarge.
type LimitError struct {
	// ProductID is the product the change was about.
	ProductID string
	// Lines is the number of lines the cart would hold (ErrTooManyLines); Qty the units
	// of ProductID it would hold (ErrQuantityTooLarge).
	Lines int
	Qty   int64
	kind  error
}

func (e *LimitError) Error() string {
	if e.kind == ErrTooManyLines {
		return fmt.Sprintf("cart: adding %s would make %d lines; a cart holds at most %d", e.ProductID, e.Lines, MaxLines)
	}
	return fmt.Sprintf("cart: %d units of %s; a cart holds at most %d of one product", e.Qty, e.ProductID, MaxQty)
}

// Unwrap returns ErrTooManyLines or ErrQuantityTooLarge.
func (e *LimitError) Unwrap() error { return e.kind }

// Commerce is what a cart needs of commerce; *commerce.Service has it.
type Commerce interface {
	Products(ctx context.Context, ids []string) (map[string]commerce.Product, error)
	PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error)
	FinishPointsPayment(ctx context.Context, o commerce.Order, key string) (commerce.Order, error)
	OrderByKey(ctx context.Context, userID, key string) (commerce.Order, error)
}

// Item is one line of a cart, as the catalog shows it now.
type Item struct {
	ProductID string
	Qty       int64
	// Name and UnitPrice are the product's current name and price; Amount is Qty ×
	// UnitPrice. All are zero for a product no longer in the catalog.
	Name      string
	UnitPrice int64
	Amount    int64
	// Available is how many units the inventory has available now; InStock says whether
	// the product exists and that covers Qty. Nothing is reserved.
	Available int64
	InStock   bool
	AddedAt   time.Time
}

// Cart is a user's cart: its lines in the order they were added, and their subtotal at
// current prices.
type Cart struct {
	UserID   string
	Items    []Item
	Subtotal int64
}

// CheckoutRequest orders a user's cart.
type CheckoutRequest struct {
	UserID string
	// IdempotencyKey identifies the checkout (1..MaxKeyLen bytes of UTF-8, no control
	// characters, no trailing space):
	// a retry with it returns the same order.
	IdempotencyKey string
	// CouponID, Points and PayWithPoints are applied to the order as in
	// commerce.PlaceOrderRequest.
	CouponID      string
	Points        int64
	PayWithPoints bool
}

// Service keeps carts. It is safe for concurrent use.
type Service struct {
	db  *bun.DB
	com Commerce
	now func() time.Time
}

// Option configures a Service.
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*Service
}

// WithClock sets the clock that stamps lines (default time.Now). It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.now, "WithClock", now) }
}

// New returns a Service storing carts in db (create its table with CreateSchema) and
// ordering them through com. An option given an invalid value is refused with an
// *errcode.InvalidError naming it (ErrInvalidRequest).
func New(db *bun.DB, com Commerce, opts ...Option) (*Service, error) {
	if db == nil || com == nil {
		return nil, errors.New("cart: New needs a database and a Commerce")
	}
	s := settings{Service: &Service{db: db, com: com, now: time.Now}}
	if err := option.Apply(&s, opts); err != nil {
		return nil, fmt.Errorf("cart: %w", err)
	}
	return s.Service, nil
}

// cartRow is a user's cart: the row its changes lock, with the version they bump.
type cartRow struct {
	bun.BaseModel `bun:"table:commerce_carts"`

	UserID string `bun:"user_id,pk"`
	// Version counts the changes of the cart's lines: a checkout orders the cart as of one
	// version, and its order key names it, so that a cart changed and changed back is a new
	// order for commerce.
	Version int64 `bun:"version"`
}

// itemRow is a line of a cart in the database.
type itemRow struct {
	bun.BaseModel `bun:"table:commerce_cart_items"`

	UserID    string `bun:"user_id,pk"`
	ProductID string `bun:"product_id,pk"`
	Qty       int64  `bun:"qty"`
	AddedAt   int64  `bun:"added_at"`
	UpdatedAt int64  `bun:"updated_at"`
}

// checkoutRow records which order a checkout placed, written in the order's transaction.
type checkoutRow struct {
	bun.BaseModel `bun:"table:commerce_cart_checkouts"`

	UserID    string `bun:"user_id,pk"`
	IdemKey   string `bun:"idem_key,pk"`
	OrderKey  string `bun:"order_key"`
	CreatedAt int64  `bun:"created_at"`
}

// Add adds qty (1..MaxQty) units of a product to the user's cart and returns the cart.
// It fails with commerce.ErrProductNotFound for a product not in the catalog, and with a
// *LimitError when the cart would break a limit. Adding is not idempotent: a retry adds
// again; AddOnce is.
func (s *Service) Add(ctx context.Context, userID, productID string, qty int64) (Cart, error) {
	return s.change(ctx, userID, productID, qty, "", func(have int64) int64 { return have + qty })
}

// AddOnce is Add at most once per key (1..MaxKeyLen bytes) of the user: the key is recorded with
// the addition, in its transaction, so a retry with the same key — after a lost reply, even
// one whose commit went unanswered — adds nothing and returns the cart as it is; the key
// with another product or quantity fails with ErrKeyReused. Keys are kept for ever.
func (s *Service) AddOnce(ctx context.Context, userID, productID string, qty int64, key string) (Cart, error) {
	if err := checkKey(key); err != nil {
		return Cart{}, err
	}
	return s.change(ctx, userID, productID, qty, key, func(have int64) int64 { return have + qty })
}

// checkKey checks an idempotency key as commerce checks its own
// (commerce.ValidateIdempotencyKey): the cart keeps its keys in the same kind of column.
func checkKey(key string) error {
	if err := commerce.ValidateIdempotencyKey(key); err != nil {
		return &ValidationError{Field: "IdempotencyKey", Reason: err.Error()}
	}
	return nil
}

// SetQty sets the units (1..MaxQty) of a product in the user's cart, adding the line if
// it is not there, and returns the cart. Errors as Add.
func (s *Service) SetQty(ctx context.Context, userID, productID string, qty int64) (Cart, error) {
	return s.change(ctx, userID, productID, qty, "", func(int64) int64 { return qty })
}

// errDone ends a change that a recorded key shows was made already.
var errDone = errors.New("cart: already added under this key")

// change validates a change of one line and applies it under a lock on the user's lines,
// so that concurrent changes never break a limit together; with a key, at most once.
func (s *Service) change(ctx context.Context, userID, productID string, qty int64, key string, next func(have int64) int64) (Cart, error) {
	if err := checkUserProduct(userID, productID); err != nil {
		return Cart{}, err
	}
	if qty < 1 || qty > MaxQty {
		return Cart{}, &ValidationError{Field: "Qty", Reason: fmt.Sprintf("must be 1..%d", MaxQty)}
	}
	products, err := s.com.Products(ctx, []string{productID})
	if err != nil {
		return Cart{}, err
	}
	if _, ok := products[productID]; !ok {
		return Cart{}, fmt.Errorf("%w: %s", commerce.ErrProductNotFound, productID)
	}
	if err := s.ensureCart(ctx, userID); err != nil {
		return Cart{}, err
	}
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		_, rows, err := lockCart(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := bump(ctx, tx, userID); err != nil {
			return err
		}
		now := s.now().UnixMicro()
		if key != "" {
			if err := recordAdd(ctx, tx, addRow{UserID: userID, IdemKey: key, ProductID: productID, Qty: qty, CreatedAt: now}); err != nil {
				return err
			}
		}
		for _, r := range rows {
			if r.ProductID != productID {
				continue
			}
			q := next(r.Qty)
			if q > MaxQty {
				return &LimitError{ProductID: productID, Qty: q, kind: ErrQuantityTooLarge}
			}
			_, err := tx.NewUpdate().Model((*itemRow)(nil)).Set("qty = ?", q).Set("updated_at = ?", now).
				Where("user_id = ? AND product_id = ?", userID, productID).Exec(ctx)
			return err
		}
		if len(rows) >= MaxLines {
			return &LimitError{ProductID: productID, Lines: len(rows) + 1, kind: ErrTooManyLines}
		}
		_, err = tx.NewInsert().Model(&itemRow{UserID: userID, ProductID: productID, Qty: next(0), AddedAt: now, UpdatedAt: now}).Exec(ctx)
		return err
	})
	if err != nil && !errors.Is(err, errDone) {
		return Cart{}, wrap("change the cart of "+userID, err)
	}
	return s.Get(ctx, userID)
}

// addRow records an AddOnce, in the addition's transaction.
type addRow struct {
	bun.BaseModel `bun:"table:commerce_cart_adds"`

	UserID    string `bun:"user_id,pk"`
	IdemKey   string `bun:"idem_key,pk"`
	ProductID string `bun:"product_id"`
	Qty       int64  `bun:"qty"`
	CreatedAt int64  `bun:"created_at"`
}

// recordAdd records a, under the cart's lock: errDone when the key recorded this very
// addition already, ErrKeyReused when it recorded another.
func recordAdd(ctx context.Context, tx bun.Tx, a addRow) error {
	var prev []addRow
	if err := tx.NewSelect().Model(&prev).Where("user_id = ? AND idem_key = ?", a.UserID, a.IdemKey).Scan(ctx); err != nil {
		return err
	}
	switch {
	case len(prev) == 0:
		_, err := tx.NewInsert().Model(&a).Exec(ctx)
		return err
	case prev[0].ProductID == a.ProductID && prev[0].Qty == a.Qty:
		return errDone
	}
	return fmt.Errorf("%w: key %q added %d of %s", ErrKeyReused, a.IdemKey, prev[0].Qty, prev[0].ProductID)
}

// Remove drops a product from the user's cart (nothing happens when it is not there) and
// returns the cart.
func (s *Service) Remove(ctx context.Context, userID, productID string) (Cart, error) {
	if err := checkUserProduct(userID, productID); err != nil {
		return Cart{}, err
	}
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		_, rows, err := lockCart(ctx, tx, userID)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.ProductID == productID {
				if _, err := tx.NewDelete().Model((*itemRow)(nil)).Where("user_id = ? AND product_id = ?", userID, productID).Exec(ctx); err != nil {
					return err
				}
				return bump(ctx, tx, userID)
			}
		}
		return nil
	})
	if err != nil {
		return Cart{}, wrap("remove from the cart of "+userID, err)
	}
	return s.Get(ctx, userID)
}

// Get returns the user's cart with each product's current name, price and availability.
func (s *Service) Get(ctx context.Context, userID string) (Cart, error) {
	if err := checkUser(userID); err != nil {
		return Cart{}, err
	}
	rows, err := items(ctx, s.db, userID, false)
	if err != nil {
		return Cart{}, err
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ProductID
	}
	products, err := s.com.Products(ctx, ids)
	if err != nil {
		return Cart{}, err
	}
	c := Cart{UserID: userID, Items: make([]Item, len(rows))}
	for i, r := range rows {
		it := Item{ProductID: r.ProductID, Qty: r.Qty, AddedAt: time.UnixMicro(r.AddedAt).UTC()}
		if p, ok := products[r.ProductID]; ok {
			it.Name, it.UnitPrice, it.Amount = p.Name, p.Price, p.Price*r.Qty
			it.Available, it.InStock = p.Stock.Available, p.Stock.Available >= r.Qty
		}
		c.Items[i] = it
		c.Subtotal += it.Amount
	}
	return c, nil
}

// Checkout places an order of the user's cart and empties the cart in the order's
// transaction. See the package documentation for its idempotency. Errors: ErrEmpty,
// ErrChanged, a *ValidationError, *commerce.ConflictError (the key was used with another
// coupon or points), and every error of commerce.Service.PlaceOrder.
func (s *Service) Checkout(ctx context.Context, req CheckoutRequest) (commerce.Order, error) {
	if err := checkUser(req.UserID); err != nil {
		return commerce.Order{}, err
	}
	if err := checkKey(req.IdempotencyKey); err != nil {
		return commerce.Order{}, err
	}
	if o, err := s.placed(ctx, req, nil); !errors.Is(err, commerce.ErrOrderNotFound) {
		return o, err
	}
	// The version first: if it is still the same under the order's lock, the lines read
	// after it are the cart as of that version.
	version, err := cartVersion(ctx, s.db, req.UserID)
	if err != nil {
		return commerce.Order{}, err
	}
	rows, err := items(ctx, s.db, req.UserID, false)
	if err != nil {
		return commerce.Order{}, err
	}
	if len(rows) == 0 {
		// A concurrent first attempt may have ordered and emptied the cart since.
		if o, err := s.placed(ctx, req, nil); !errors.Is(err, commerce.ErrOrderNotFound) {
			return o, err
		}
		return commerce.Order{}, ErrEmpty
	}
	lines := make([]commerce.Line, len(rows))
	for i, r := range rows {
		lines[i] = commerce.Line{ProductID: r.ProductID, Qty: r.Qty}
	}
	rec := &checkoutRow{UserID: req.UserID, IdemKey: req.IdempotencyKey, OrderKey: orderKey(req, version, rows),
		CreatedAt: s.now().UnixMicro()}
	o, err := s.com.PlaceOrder(ctx, commerce.PlaceOrderRequest{
		UserID: req.UserID, Lines: lines, CouponID: req.CouponID, Points: req.Points, IdempotencyKey: rec.OrderKey,
		PayWithPoints: req.PayWithPoints,
		InTx: func(ctx context.Context, tx bun.IDB) error {
			if _, err := tx.NewInsert().Model(rec).Exec(ctx); err != nil {
				return wrap("record the checkout", err) // a concurrent checkout with the key won
			}
			return empty(ctx, tx, req.UserID, version, rows)
		},
	})
	// Only the checkout's record, committed with the order, tells whose order PlaceOrder
	// answered: InTx may have run in a transaction that then failed, before PlaceOrder found
	// an order under the key. A concurrent checkout with the key placed it (its record says
	// so; placed pays it if asked), or else it is no checkout's — a direct order placed
	// under the key this checkout derived, which the user can compute — and must not pass
	// for the cart's order, the cart not emptied, nor be paid (PlaceOrder with InTx pays no
	// order it finds under the key).
	var answered *placement
	if err == nil {
		answered = &placement{key: rec.OrderKey, order: o}
	}
	if o, perr := s.placed(ctx, req, answered); !errors.Is(perr, commerce.ErrOrderNotFound) {
		return o, perr
	}
	if err == nil {
		return commerce.Order{}, keyTaken(req, rec.OrderKey)
	}
	if refused(err) && !errors.Is(err, ErrChanged) {
		// commerce refuses an order (its unpaid limits, its stock, the points) before InTx
		// sees the cart: if the cart changed meanwhile, the refusal was of lines it no
		// longer holds, and a retry orders it as it is now.
		if v, verr := cartVersion(ctx, s.db, req.UserID); verr == nil && v != version {
			return commerce.Order{}, fmt.Errorf("%w (the lines read were refused: %v)", ErrChanged, err)
		}
	}
	return o, err
}

// keyTaken is the error of a checkout whose order key names an order no checkout with its
// key placed.
func keyTaken(req CheckoutRequest, orderKey string) error {
	return fmt.Errorf("%w: its order key %s names an order not placed from the cart",
		commerce.NewConflictError("order", req.IdempotencyKey), orderKey)
}

// refused reports whether err is an answer to the request as it was (a business rule, a
// validation, a conflict), not a failure to run it.
func refused(err error) bool {
	switch errcode.CodeOf(err) {
	case errcode.InvalidArgument, errcode.NotFound, errcode.Conflict, errcode.FailedPrecondition:
		return true
	}
	return false
}

// placement is the order PlaceOrder answered a checkout under the order key it was given.
type placement struct {
	key   string
	order commerce.Order
}

// placed returns the order an earlier checkout with the key placed, ErrOrderNotFound when
// there is none, or *commerce.ConflictError when it was placed with another coupon or
// points. answered, when not nil, is the order PlaceOrder has just answered this checkout:
// when the record names its key, it is the record's order, and is not read again.
func (s *Service) placed(ctx context.Context, req CheckoutRequest, answered *placement) (commerce.Order, error) {
	rec := new(checkoutRow)
	err := s.db.NewSelect().Model(rec).Where("user_id = ? AND idem_key = ?", req.UserID, req.IdempotencyKey).Scan(ctx)
	if sqlutil.IsNoRows(err) {
		return commerce.Order{}, commerce.ErrOrderNotFound
	}
	if err != nil {
		return commerce.Order{}, wrap("read checkout "+req.IdempotencyKey, sqlutil.Unavailable(s.db, err))
	}
	var o commerce.Order
	if answered != nil && answered.key == rec.OrderKey {
		o = answered.order
	} else if o, err = s.com.OrderByKey(ctx, req.UserID, rec.OrderKey); err != nil {
		return commerce.Order{}, err
	}
	switch {
	case o.CouponID != req.CouponID || o.Points != req.Points:
		return commerce.Order{}, commerce.NewConflictError("order", req.IdempotencyKey)
	case req.PayWithPoints && (o.Status == commerce.StatusPendingPayment || o.Status == commerce.StatusPaying):
		// Placed, its payment not made or not finished: as PlaceOrder's replay does.
		return s.com.FinishPointsPayment(ctx, o, rec.OrderKey)
	}
	return o, nil
}

// orderKey is the idempotency key of the order of a checkout: the checkout's key,
// everything ordered and the cart's version, so that a checkout retried after its cart
// changed (or with other points) is a new order for commerce and never meets the first
// attempt's reservation — even when the cart was changed back to what that attempt read,
// since every change bumps the version. Version 0 (a cart not changed since versions came)
// adds nothing, so that its key is the one the versions before gave it.
func orderKey(req CheckoutRequest, version int64, rows []itemRow) string {
	h := sha256.New()
	for _, p := range []string{req.IdempotencyKey, req.CouponID, strconv.FormatInt(req.Points, 10)} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	for _, r := range rows {
		fmt.Fprintf(h, "%s\x00%d\x00", r.ProductID, r.Qty)
	}
	if version != 0 {
		fmt.Fprintf(h, "v%d\x00", version) // one field after pairs: no lines' encoding is it
	}
	return "cart-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// empty deletes the user's lines in tx, the order's transaction, provided the cart is
// still at the version read (version) and holds the lines read (want); otherwise
// ErrChanged aborts the order.
func empty(ctx context.Context, tx bun.IDB, userID string, version int64, want []itemRow) error {
	v, have, err := lockCart(ctx, tx, userID)
	if err != nil {
		return wrap("lock the cart of "+userID, err)
	}
	if v != version || len(have) != len(want) {
		return ErrChanged
	}
	qty := make(map[string]int64, len(want))
	for _, r := range want {
		qty[r.ProductID] = r.Qty
	}
	for _, r := range have {
		if q, ok := qty[r.ProductID]; !ok || q != r.Qty {
			return ErrChanged
		}
	}
	if _, err := tx.NewDelete().Model((*itemRow)(nil)).Where("user_id = ?", userID).Exec(ctx); err != nil {
		return wrap("empty the cart of "+userID, err)
	}
	if err := bump(ctx, tx, userID); err != nil { // a concurrent checkout then sees the change
		return wrap("empty the cart of "+userID, err)
	}
	return nil
}

// items reads the user's lines in the order they were added; locking (in a transaction),
// it reads them as last committed and locks them.
func items(ctx context.Context, db bun.IDB, userID string, locking bool) ([]itemRow, error) {
	var rows []itemRow
	q := db.NewSelect().Model(&rows).Where("user_id = ?", userID).Order("added_at", "product_id")
	if locking {
		q = sqlutil.ForUpdate(q)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, wrap("read the cart of "+userID, sqlutil.Unavailable(db, err))
	}
	return rows, nil
}

// ensureCart creates the user's cart row if it is missing. It commits on its own, so
// that the transactions changing the cart only ever lock an existing row.
func (s *Service) ensureCart(ctx context.Context, userID string) error {
	_, err := s.db.NewInsert().Model(&cartRow{UserID: userID}).Exec(ctx)
	if err != nil && !sqlutil.IsDuplicateKey(err) {
		return wrap("create the cart of "+userID, err)
	}
	return nil
}

// lockCart locks the user's cart row (FOR UPDATE on MySQL; SQLite's writer lock does it
// elsewhere) and reads its version and the lines under it. Every change of a cart's lines
// holds that lock, so changes never break a limit together and never deadlock on the lines'
// index gaps. The lines are read with a locking read: in an order's transaction a plain read
// would return MySQL's snapshot from the transaction's first read, missing lines added since
// (and the checkout would delete them unordered). A user without a cart row has no lines.
func lockCart(ctx context.Context, tx bun.IDB, userID string) (int64, []itemRow, error) {
	var carts []cartRow
	if err := sqlutil.ForUpdate(tx.NewSelect().Model(&carts).Where("user_id = ?", userID)).Scan(ctx); err != nil {
		return 0, nil, err
	}
	if len(carts) == 0 {
		return 0, nil, nil
	}
	rows, err := items(ctx, tx, userID, true)
	return carts[0].Version, rows, err
}

// bump counts a change of the user's lines, in its transaction, under the cart's lock.
func bump(ctx context.Context, tx bun.IDB, userID string) error {
	_, err := tx.NewUpdate().Model((*cartRow)(nil)).Set("version = version + 1").Where("user_id = ?", userID).Exec(ctx)
	return err
}

// cartVersion reads the version of the user's cart (0 without a cart).
func cartVersion(ctx context.Context, db bun.IDB, userID string) (int64, error) {
	var carts []cartRow
	if err := db.NewSelect().Model(&carts).Where("user_id = ?", userID).Scan(ctx); err != nil {
		return 0, wrap("read the cart of "+userID, sqlutil.Unavailable(db, err))
	}
	if len(carts) == 0 {
		return 0, nil
	}
	return carts[0].Version, nil
}

func checkUser(userID string) error {
	if userID == "" || len(userID) > commerce.MaxIDLen {
		return &ValidationError{Field: "UserID", Reason: fmt.Sprintf("must be 1-%d bytes", commerce.MaxIDLen)}
	}
	for i := 0; i < len(userID); i++ {
		if userID[i] < 0x21 || userID[i] > 0x7e {
			return &ValidationError{Field: "UserID", Reason: "must be printable ASCII without spaces"}
		}
	}
	return nil
}

func checkUserProduct(userID, productID string) error {
	if err := checkUser(userID); err != nil {
		return err
	}
	if err := inventory.CheckSKU(productID); err != nil {
		return &ValidationError{Field: "ProductID", Reason: err.Error()}
	}
	return nil
}

// wrap adds context to a storage error; the cart's own errors pass as they are.
func wrap(what string, err error) error {
	var lim *LimitError
	if errors.As(err, &lim) || errors.Is(err, ErrChanged) {
		return err
	}
	return fmt.Errorf("cart: %s: %w", what, err)
}
