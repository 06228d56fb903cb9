package server

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
)

// The JSON shapes of the API (snake_case; amounts are integers in won; times RFC 3339 UTC).
// The OpenAPI document describes the same shapes.

// StockJSON is a product's stock.
type StockJSON struct {
	ProductID  string `json:"product_id"`
	OnHand     int64  `json:"on_hand"`
	Available  int64  `json:"available"`
	Reserved   int64  `json:"reserved"`
	Sold       int64  `json:"sold"`
	BuyerLimit int64  `json:"buyer_limit"`
}

// ProductJSON is a product with its stock.
type ProductJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Price     int64     `json:"price"`
	Stock     StockJSON `json:"stock"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ProductPageJSON is a page of the catalogue.
type ProductPageJSON struct {
	Products   []ProductJSON `json:"products"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// NewProductJSON creates a product.
type NewProductJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Price      int64  `json:"price"`
	Stock      int64  `json:"stock"`
	BuyerLimit int64  `json:"buyer_limit"`
}

// PriceJSON sets a price.
type PriceJSON struct {
	Price int64 `json:"price"`
}

// SetStockJSON sets a product's on-hand count and buyer limit, both required (0: no limit).
type SetStockJSON struct {
	OnHand     int64 `json:"on_hand"`
	BuyerLimit int64 `json:"buyer_limit"`
}

// AdjustStockJSON changes a product's stock by delta once per id (a restock, a loss, a
// correction); sent again it changes nothing.
type AdjustStockJSON struct {
	ID     string `json:"id"`
	Delta  int64  `json:"delta"`
	Reason string `json:"reason"`
}

// LineJSON is one line of an order request.
type LineJSON struct {
	ProductID string `json:"product_id"`
	Qty       int64  `json:"qty"`
}

// PlaceOrderJSON places an order of its lines, or with from_cart of the caller's cart
// (then without lines; the cart is emptied with the order).
type PlaceOrderJSON struct {
	Lines    []LineJSON `json:"lines,omitempty"`
	FromCart bool       `json:"from_cart,omitempty"`
	CouponID string     `json:"coupon_id,omitempty"`
	Points   int64      `json:"points,omitempty"`
	// PayWithPoints pays the order with its points alone as it is placed (answered PAID).
	PayWithPoints bool `json:"pay_with_points,omitempty"`
}

// OrderLineJSON is one line of a placed order.
type OrderLineJSON struct {
	ProductID string `json:"product_id"`
	Qty       int64  `json:"qty"`
	UnitPrice int64  `json:"unit_price"`
	Amount    int64  `json:"amount"`
}

// OrderJSON is an order.
type OrderJSON struct {
	ID          string          `json:"id"`
	UserID      string          `json:"user_id"`
	Status      string          `json:"status"`
	Lines       []OrderLineJSON `json:"lines"`
	CouponID    string          `json:"coupon_id,omitempty"`
	Subtotal    int64           `json:"subtotal"`
	Discount    int64           `json:"discount"`
	Points      int64           `json:"points"`
	AmountDue   int64           `json:"amount_due"`
	Reward      int64           `json:"reward"`
	PayMethod   string          `json:"pay_method,omitempty"`
	PaymentID   string          `json:"payment_id,omitempty"`
	FailureCode string          `json:"failure_code,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	PaidAt      *time.Time      `json:"paid_at,omitempty"`
	ClosedAt    *time.Time      `json:"closed_at,omitempty"`
	UpdatedAt   time.Time       `json:"updated_at"`

	// What the cancellation of a paid order refunds (CANCELLING, CANCELLED; absent: 0):
	// the points and the amount due less the part of the reward the buyer had spent.
	RewardShortfall int64 `json:"reward_shortfall,omitempty"`
	RefundPoints    int64 `json:"refund_points,omitempty"`
	RefundAmount    int64 `json:"refund_amount,omitempty"`
}

// OrderPageJSON is a page of the caller's orders.
type OrderPageJSON struct {
	Orders     []OrderJSON `json:"orders"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// PayJSON pays an order: the method of the amount due (CARD or BNPL; ignored when points
// and the coupon cover the order) and the card token or BNPL authorisation.
type PayJSON struct {
	Method string `json:"method,omitempty"`
	Token  string `json:"token,omitempty"`
}

// BalanceJSON is a points balance.
type BalanceJSON struct {
	Available int64 `json:"available"`
	Held      int64 `json:"held"`
	Total     int64 `json:"total"`
}

// EntryJSON is one line of the points history.
type EntryJSON struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	Amount    int64       `json:"amount"`
	Change    int64       `json:"change"`
	Balance   BalanceJSON `json:"balance"`
	Reference string      `json:"reference,omitempty"`
	Reason    string      `json:"reason,omitempty"`
	Time      time.Time   `json:"time"`
}

// HistoryPageJSON is a page of the points history.
type HistoryPageJSON struct {
	Entries    []EntryJSON `json:"entries"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// TopUpRequestJSON buys points with a payment (1 won per point).
type TopUpRequestJSON struct {
	Amount int64  `json:"amount"`
	Method string `json:"method"`
	Token  string `json:"token,omitempty"`
}

// TopUpJSON is a points top-up.
type TopUpJSON struct {
	ID          string    `json:"id"`
	UserID      string    `json:"user_id"`
	Amount      int64     `json:"amount"`
	Method      string    `json:"method"`
	Status      string    `json:"status"`
	PaymentID   string    `json:"payment_id,omitempty"`
	FailureCode string    `json:"failure_code,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// PaymentJSON is the payment of an order or a top-up, with the history of its state and its
// refunds, oldest first (the card token is not shown).
type PaymentJSON struct {
	ID             string              `json:"id"`
	OrderID        string              `json:"order_id"`
	Amount         int64               `json:"amount"`
	Currency       string              `json:"currency"`
	Method         string              `json:"method"`
	State          string              `json:"state"`
	PGReference    string              `json:"pg_reference,omitempty"`
	DeclineCode    string              `json:"decline_code,omitempty"`
	DeclineMessage string              `json:"decline_message,omitempty"`
	Refunded       int64               `json:"refunded"`
	RefundPending  int64               `json:"refund_pending"`
	CreatedAt      time.Time           `json:"created_at"`
	UpdatedAt      time.Time           `json:"updated_at"`
	Transitions    []PaymentStepJSON   `json:"transitions"`
	Refunds        []PaymentRefundJSON `json:"refunds"`
}

// PaymentStepJSON is one change of a payment's state: from is empty for its creation; cause
// is what moved it (created, gateway, no_answer, webhook, reconciler, refund).
type PaymentStepJSON struct {
	From  string    `json:"from,omitempty"`
	To    string    `json:"to"`
	Cause string    `json:"cause"`
	At    time.Time `json:"at"`
}

// PaymentRefundJSON is a refund of a payment.
type PaymentRefundJSON struct {
	ID             string    `json:"id"`
	Amount         int64     `json:"amount"`
	Reason         string    `json:"reason,omitempty"`
	State          string    `json:"state"`
	PGReference    string    `json:"pg_reference,omitempty"`
	FailureCode    string    `json:"failure_code,omitempty"`
	FailureMessage string    `json:"failure_message,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// CouponTemplateJSON is a coupon campaign. Kind is "fixed" (amount off) or "percent"
// (percent off, capped at max_discount when set).
type CouponTemplateJSON struct {
	ID             string     `json:"id"`
	Name           string     `json:"name,omitempty"`
	Kind           string     `json:"kind"`
	Amount         int64      `json:"amount,omitempty"`
	Percent        int64      `json:"percent,omitempty"`
	MaxDiscount    int64      `json:"max_discount,omitempty"`
	MinOrderAmount int64      `json:"min_order_amount,omitempty"`
	IssueStart     *time.Time `json:"issue_start,omitempty"`
	IssueEnd       *time.Time `json:"issue_end,omitempty"`
	UsableFrom     *time.Time `json:"usable_from,omitempty"`
	UseBy          *time.Time `json:"use_by,omitempty"`
	ValidDays      int        `json:"valid_days,omitempty"`
	TotalQuantity  int64      `json:"total_quantity,omitempty"`
	PerUserLimit   int        `json:"per_user_limit,omitempty"`
	CreatedAt      *time.Time `json:"created_at,omitempty"`
}

// CouponJSON is an issued coupon.
type CouponJSON struct {
	ID             string     `json:"id"`
	TemplateID     string     `json:"template_id"`
	Name           string     `json:"name,omitempty"`
	UserID         string     `json:"user_id"`
	Kind           string     `json:"kind"`
	Amount         int64      `json:"amount,omitempty"`
	Percent        int64      `json:"percent,omitempty"`
	MaxDiscount    int64      `json:"max_discount,omitempty"`
	MinOrderAmount int64      `json:"min_order_amount,omitempty"`
	State          string     `json:"state"`
	OrderID        string     `json:"order_id,omitempty"`
	IssuedAt       time.Time  `json:"issued_at"`
	UsableFrom     *time.Time `json:"usable_from,omitempty"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	UsedAt         *time.Time `json:"used_at,omitempty"`
}

// CouponPageJSON is a page of the caller's wallet.
type CouponPageJSON struct {
	Coupons    []CouponJSON `json:"coupons"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// AuditJSON is what the invariant audit found.
type AuditJSON struct {
	OK            bool     `json:"ok"`
	Orders        int      `json:"orders"`
	Products      int      `json:"products"`
	TopUps        int      `json:"top_ups"`
	Discrepancies []string `json:"discrepancies"`
}

func stockJSON(id string, s inventory.Stock) StockJSON {
	return StockJSON{ProductID: id, OnHand: s.OnHand, Available: s.Available, Reserved: s.Reserved, Sold: s.Sold, BuyerLimit: s.BuyerLimit}
}

func productJSON(p commerce.Product) ProductJSON {
	return ProductJSON{ID: p.ID, Name: p.Name, Price: p.Price, Stock: stockJSON(p.ID, p.Stock), CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

func orderJSON(o commerce.Order) OrderJSON {
	lines := make([]OrderLineJSON, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = OrderLineJSON{ProductID: l.ProductID, Qty: l.Qty, UnitPrice: l.UnitPrice, Amount: l.Amount}
	}
	return OrderJSON{
		ID: o.ID, UserID: o.UserID, Status: string(o.Status), Lines: lines, CouponID: o.CouponID,
		Subtotal: o.Subtotal, Discount: o.Discount, Points: o.Points, AmountDue: o.AmountDue, Reward: o.Reward,
		PayMethod: string(o.PayMethod), PaymentID: o.PaymentID, FailureCode: o.FailureCode,
		CreatedAt: o.CreatedAt, ExpiresAt: o.ExpiresAt, PaidAt: optTime(o.PaidAt), ClosedAt: optTime(o.ClosedAt), UpdatedAt: o.UpdatedAt,
		RewardShortfall: o.RewardShortfall, RefundPoints: o.RefundPoints, RefundAmount: o.RefundAmount,
	}
}

func balanceJSON(b ledger.Balance) BalanceJSON {
	return BalanceJSON{Available: b.Available, Held: b.Held, Total: b.Total}
}

func topUpJSON(t commerce.TopUp) TopUpJSON {
	return TopUpJSON{ID: t.ID, UserID: t.UserID, Amount: t.Amount, Method: string(t.Method), Status: string(t.Status),
		PaymentID: t.PaymentID, FailureCode: t.FailureCode, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

func paymentJSON(rec commerce.PaymentRecord) PaymentJSON {
	p := rec.Payment
	out := PaymentJSON{
		ID: p.ID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency, Method: string(p.Method), State: string(p.State),
		PGReference: p.PGReference, DeclineCode: p.DeclineCode, DeclineMessage: p.DeclineMessage,
		Refunded: p.Refunded, RefundPending: p.RefundPending, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
		Transitions: make([]PaymentStepJSON, len(rec.Transitions)), Refunds: make([]PaymentRefundJSON, len(rec.Refunds)),
	}
	for i, t := range rec.Transitions {
		out.Transitions[i] = PaymentStepJSON{From: string(t.From), To: string(t.To), Cause: string(t.Cause), At: t.At}
	}
	for i, r := range rec.Refunds {
		out.Refunds[i] = PaymentRefundJSON{ID: r.ID, Amount: r.Amount, Reason: r.Reason, State: string(r.State),
			PGReference: r.PGReference, FailureCode: r.FailureCode, FailureMessage: r.FailureMessage,
			CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	}
	return out
}

func templateJSON(t coupon.Template) CouponTemplateJSON {
	return CouponTemplateJSON{
		ID: t.ID, Name: t.Name, Kind: string(t.Kind), Amount: t.Amount, Percent: t.Percent, MaxDiscount: t.MaxDiscount,
		MinOrderAmount: t.MinOrderAmount, IssueStart: optTime(t.IssueStart), IssueEnd: optTime(t.IssueEnd),
		UsableFrom: optTime(t.UsableFrom), UseBy: optTime(t.UseBy), ValidDays: t.ValidDays,
		TotalQuantity: t.TotalQuantity, PerUserLimit: t.PerUserLimit, CreatedAt: optTime(t.CreatedAt),
	}
}

func (t CouponTemplateJSON) template() coupon.Template {
	return coupon.Template{
		ID: t.ID, Name: t.Name,
		Terms: coupon.Terms{Kind: coupon.Kind(t.Kind), Amount: t.Amount, Percent: t.Percent, MaxDiscount: t.MaxDiscount,
			MinOrderAmount: t.MinOrderAmount},
		IssueStart: zeroTime(t.IssueStart), IssueEnd: zeroTime(t.IssueEnd), UsableFrom: zeroTime(t.UsableFrom),
		UseBy: zeroTime(t.UseBy), ValidDays: t.ValidDays, TotalQuantity: t.TotalQuantity, PerUserLimit: t.PerUserLimit,
	}
}

func couponJSON(c coupon.Coupon) CouponJSON {
	return CouponJSON{
		ID: c.ID, TemplateID: c.TemplateID, Name: c.Name, UserID: c.UserID, Kind: string(c.Kind), Amount: c.Amount,
		Percent: c.Percent, MaxDiscount: c.MaxDiscount, MinOrderAmount: c.MinOrderAmount, State: string(c.State),
		OrderID: c.OrderID, IssuedAt: c.IssuedAt, UsableFrom: optTime(c.UsableFrom), ExpiresAt: optTime(c.ExpiresAt),
		UsedAt: optTime(c.UsedAt),
	}
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func zeroTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// malformed returns an errMalformed with a reason.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// jsonKind says what JSON value a Go type takes.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8,
		reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another kind of value"
}

// decode reads exactly one JSON object into v, refusing unknown fields, a name repeated in
// one object and a string holding a NUL character. The Content-Type is not checked (the
// body must be JSON whatever it says, so curl's -d works as it is); authentication is by
// header, so form posts from browsers gain nothing. A body over the size limit is a
// *http.MaxBytesError (413).
func decode(r *http.Request, v any) error {
	body, err := readAll(r)
	if err != nil {
		return err
	}
	if !utf8.Valid(body) || loneSurrogate(body) {
		// encoding/json would replace each invalid byte, and each \u escape of half a
		// surrogate pair, by U+FFFD: two different passwords would log in as one, and
		// names would be stored other than sent.
		return malformed("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var kind *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return malformed("the body must be a JSON object")
		case errors.As(err, &kind):
			// Named as the client wrote it: encoding/json's own message names the server's
			// Go types and struct fields.
			field := kind.Field
			if field == "" {
				field = "the body"
			}
			return malformed("%s must be %s, not a JSON %s", field, jsonKind(kind.Type), kind.Value)
		}
		return malformed("%v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return malformed("the body must hold one JSON object only")
	}
	given, err := checkStrings(body)
	if err != nil {
		return err
	}
	// encoding/json takes a member missing or null as its zero value: {} would set a
	// product's stock to 0. The members the OpenAPI document requires must be given.
	for _, name := range requiredMembers()[strings.TrimSuffix(reflect.TypeOf(v).Elem().Name(), "JSON")] {
		if !given[foldName(name)] {
			return errcode.Invalid(name, "is required")
		}
	}
	return nil
}

// requiredMembers is, for each schema of the OpenAPI document, the members it requires. A
// request body decoded into type XJSON must have schema X's.
var requiredMembers = sync.OnceValue(func() map[string][]string {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Required []string `json:"required"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		panic(fmt.Sprintf("server: the embedded OpenAPI document: %v", err)) // a build defect, caught by every test
	}
	required := make(map[string][]string, len(doc.Components.Schemas))
	for name, schema := range doc.Components.Schemas {
		required[name] = schema.Required
	}
	return required
})

// loneSurrogate reports whether body, JSON, holds a \u escape of a surrogate (U+D800 to
// U+DFFF) that is not a high one followed by a low one: not a character. Backslashes occur
// only in strings, each starting an escape.
func loneSurrogate(body []byte) bool {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(body[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		r, ok := hex4(i)
		if !ok {
			i++ // a two-character escape
			continue
		}
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		case r >= 0xD800 && r <= 0xDBFF:
			low, ok := hex4(i + 6)
			if !ok || low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 6
		}
		i += 5
	}
	return false
}

// checkStrings walks a valid JSON document and refuses what encoding/json lets through but
// the API must not take: a name twice in one object (encoding/json keeps the last, matching
// names case-insensitively, while the Idempotency-Key's fingerprint keeps both: two bodies
// decoding to different requests could share a fingerprint) is malformed, and a string with
// a NUL character (which no store can hold) is invalid, naming its field. It returns the
// names (as foldName makes them) of the top-level object's members whose value is not null.
func checkStrings(body []byte) (given map[string]bool, _ error) {
	given = map[string]bool{}
	type frame struct {
		object bool
		key    bool // the object's next token is a name
		names  map[string]bool
	}
	var stack []frame
	var field string
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return given, nil
		}
		if err != nil {
			return nil, malformed("%v", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.key {
			name := foldName(s)
			if top.names[name] {
				return nil, malformed("the name %q appears twice in one object", s)
			}
			top.names[name], top.key, field = true, false, s
			continue
		}
		if top != nil && top.object {
			top.key = true // after this value, a name or the object's end
			if end := tok == json.Delim('}'); len(stack) == 1 && tok != nil && !end {
				given[foldName(field)] = true // a member's value, not null
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, frame{object: true, key: true, names: map[string]bool{}})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if containsNUL(t) {
				return nil, errcode.Invalid(cmp.Or(field, "body"), "must not contain a NUL character")
			}
		}
	}
}

// containsNUL reports whether s holds a NUL character, which no store takes (bun refuses
// it): input holding one is refused before it reaches a store.
func containsNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// printableASCII reports whether s holds only printable ASCII, without spaces: the
// alphabet of every ID and cursor the server writes.
func printableASCII(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' })
}

// foldName is the form of a JSON name that encoding/json matches a field by: two names
// match when they are equal under Unicode simple case folding ("qty", "QTY", "Qty").
func foldName(s string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, s)
}

// pageParams reads the cursor and limit query parameters. Every cursor the server writes is
// printable ASCII without spaces (the products' is a product ID); any other is refused here,
// before it reaches a store.
func pageParams(q url.Values) (cursor string, limit int, err error) {
	if limit, err = limitParam(q, 0, commerce.MaxPageSize); err != nil {
		return "", 0, err
	}
	cursor = q.Get("cursor")
	if !printableASCII(cursor) {
		return "", 0, errcode.Invalid("cursor", "is not a cursor the server wrote")
	}
	return cursor, limit, nil
}

// limitParam reads the limit query parameter: an integer within 1..most, or def when absent.
func limitParam(q url.Values, def, most int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, malformed("limit must be an integer within 1..%d", most)
	}
	return n, nil
}

// readAll reads a raw body (within the size limit). A body that cannot be read to its end
// (it stops short of its Content-Length: the client went away or its connection broke
// mid-upload) is the client's failure, malformed — not a dependency's.
func readAll(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if err != nil && !errors.As(err, &mbe) {
		return nil, malformed("reading the body: %v", err)
	}
	return body, err
}
