package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/outbox"
)

// ConsumerName is the collector's name as an outbox consumer (its key in outbox_processed
// and, with Kafka, its consumer group).
const ConsumerName = "commerce-collector"

// ErrInvalidArgument is wrapped by the errors of bad input: an unknown period, a malformed
// date, a limit out of range, a bad configuration. It matches errcode.ErrInvalidArgument.
var ErrInvalidArgument = errcode.Derive(errcode.ErrInvalidArgument, "collector: invalid argument")

// Seoul returns the default time zone of day boundaries: Asia/Seoul, the documents'
// market. Korea has kept UTC+9 without daylight saving since 1988, so a fixed zone is exact
// for every date the collector sees, and needs no time zone database.
func Seoul() *time.Location { return time.FixedZone("Asia/Seoul", 9*60*60) }

// Collector keeps per-product metrics from commerce's events: per day, and rolled up per
// ISO week and per month. Handle is its outbox handler; RollupDirty (or RunRollups)
// recomputes the rollups whose days changed; Ranking and ProductMetrics read. It is safe
// for concurrent use, also by several processes sharing the database.
type Collector struct {
	db  *bun.DB
	loc *time.Location
	now func() time.Time
	log *slog.Logger
}

// Option configures a Collector.
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*Collector
}

// WithLocation sets the time zone of day boundaries (and so of weeks and months); default
// Seoul. It must not be nil.
func WithLocation(loc *time.Location) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.loc, "WithLocation", loc) }
}

// WithClock sets where the Collector reads the time (the rows' updated_at); default
// time.Now. It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.now, "WithClock", now) }
}

// WithLogger sets the logger; default discards. It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

// New returns a Collector on db. Create its tables first (CreateSchema). A nil db, or an
// option given an invalid value (an *errcode.InvalidError naming the option), is refused
// with ErrInvalidArgument.
func New(db *bun.DB, opts ...Option) (*Collector, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil database", ErrInvalidArgument)
	}
	s := settings{Errors: option.Errors{Sentinel: ErrInvalidArgument},
		Collector: &Collector{db: db, loc: Seoul(), now: time.Now, log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	if err := option.Apply(&s, opts); err != nil {
		return nil, err
	}
	return s.Collector, nil
}

// Location returns the time zone of the Collector's day boundaries.
func (c *Collector) Location() *time.Location { return c.loc }

// Topics returns the topics of t the collector must consume: those of payment-completed
// and order-cancelled events (every event on them is counted in the gap check).
func Topics(t commerce.Topics) []string {
	var out []string
	for _, typ := range []string{commerce.EventPaymentCompleted, commerce.EventOrderCancelled} {
		if topic, ok := t.Of(typ); ok && !slices.Contains(out, topic) {
			out = append(out, topic)
		}
	}
	slices.Sort(out)
	return out
}

// NewConsumer returns the outbox consumer that applies events to c (named ConsumerName),
// batches of 100 by default; opts are the outbox's consumer options.
func (c *Collector) NewConsumer(opts ...outbox.Option) (*outbox.Consumer, error) {
	return outbox.NewConsumer(c.db, ConsumerName, c.Handle, opts...)
}

// Metrics are a product's counters over a day, a week or a month. A sale (a
// payment-completed event) adds one order, its units and its revenue; the cancellation of
// a paid order (order-cancelled with paidAt) adds one cancellation and refunds its units
// and what it refunded (refundPoints + refundAmount: the payment less the reward's
// shortfall, which the buyer kept and stays in NetRevenue); each counts on the day it
// happened. Revenue is what the buyer paid (points and card), the order's discount shared
// among its lines in proportion to their amounts, and so is the revenue refunded.
type Metrics struct {
	Orders          int64 `bun:"orders" json:"orders"`
	Units           int64 `bun:"units" json:"units"`
	Revenue         int64 `bun:"revenue" json:"revenue"`
	Cancellations   int64 `bun:"cancellations" json:"cancellations"`
	UnitsRefunded   int64 `bun:"units_refunded" json:"unitsRefunded"`
	RevenueRefunded int64 `bun:"revenue_refunded" json:"revenueRefunded"`
	// NetUnits is Units - UnitsRefunded: what rankings order by.
	NetUnits int64 `bun:"net_units" json:"netUnits"`
	// NetRevenue is Revenue - RevenueRefunded.
	NetRevenue int64 `bun:"net_revenue" json:"netRevenue"`
}

// add adds o to m and reports whether it could: false, m unchanged, when a counter would
// overflow int64.
func (m *Metrics) add(o Metrics) bool {
	sum := *m
	for _, f := range []struct {
		dst *int64
		v   int64
	}{
		{&sum.Orders, o.Orders}, {&sum.Units, o.Units}, {&sum.Revenue, o.Revenue},
		{&sum.Cancellations, o.Cancellations}, {&sum.UnitsRefunded, o.UnitsRefunded},
		{&sum.RevenueRefunded, o.RevenueRefunded}, {&sum.NetUnits, o.NetUnits}, {&sum.NetRevenue, o.NetRevenue},
	} {
		if (f.v > 0 && *f.dst > math.MaxInt64-f.v) || (f.v < 0 && *f.dst < math.MinInt64-f.v) {
			return false
		}
		*f.dst += f.v
	}
	*m = sum
	return true
}

type dayProduct struct{ day, product string }

type dailyRow struct {
	bun.BaseModel `bun:"table:commerce_metrics_daily"`

	Day       string `bun:"day,pk"`
	ProductID string `bun:"product_id,pk"`
	Metrics
	UpdatedAt time.Time `bun:"updated_at"`
}

type dirtyRow struct {
	bun.BaseModel `bun:"table:commerce_metrics_dirty"`

	Period  Period `bun:"period,pk"`
	Start   string `bun:"start,pk"`
	Version int64  `bun:"version"`
}

type streamRow struct {
	bun.BaseModel `bun:"table:commerce_metrics_streams"`

	Topic  string `bun:"topic,pk"`
	Key    string `bun:"stream_key,pk"`
	MaxSeq int64  `bun:"max_seq"`
	Seen   int64  `bun:"seen"`
}

// Handle is the collector's outbox.HandlerFunc: it adds the batch's sales and refunds to
// the products' daily rows (one multi-row upsert), marks the weeks and months of the days
// it touched for RollupDirty, and counts the batch's events per stream for Gaps — all
// through tx, the transaction in which the outbox consumer records the events as applied.
// Events of other types are only counted per stream, and only those commerce could have
// written (commerceWrote). A sale or refund that cannot be decoded, of an unknown schema
// version, whose amounts do not add up, or that commerce could not have written (under
// another ID or key than commerce.EventID gives it, with lines, quantities, prices or
// product IDs outside commerce's bounds, without a time, on a day outside years 1 to
// 9999) is a permanent error: the event is dead-lettered. A Kafka topic takes any
// producer's messages; such a one counts nothing, and holds nothing up.
func (c *Collector) Handle(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
	deltas := make(map[dayProduct]*Metrics)
	streams := make(map[outbox.Stream]*streamRow)
	for _, ev := range events {
		if commerceWrote(ev) {
			s := streams[ev.Stream()]
			if s == nil {
				s = &streamRow{Topic: ev.Topic, Key: ev.Key}
				streams[ev.Stream()] = s
			}
			s.Seen++
			s.MaxSeq = max(s.MaxSeq, ev.Seq)
		}
		if ev.Type != commerce.EventPaymentCompleted && ev.Type != commerce.EventOrderCancelled {
			continue
		}
		var oe commerce.OrderEvent
		if err := json.Unmarshal(ev.Payload, &oe); err != nil {
			return outbox.Permanent(fmt.Errorf("collector: event %s: decoding: %w", ev.ID, err))
		}
		if oe.SchemaVersion != commerce.EventSchemaVersion {
			return outbox.Permanent(fmt.Errorf("collector: event %s: schema version %d, want %d", ev.ID, oe.SchemaVersion, commerce.EventSchemaVersion))
		}
		if ev.Key != oe.OrderID || ev.ID != commerce.EventID(oe.OrderID, ev.Type) {
			// Another producer's: commerce writes an order's event of each type once, under
			// that ID and key. Counted, a sale replayed under another ID would count twice.
			return outbox.Permanent(fmt.Errorf("collector: event %s (key %q) is not the %s event of order %q that commerce writes",
				ev.ID, ev.Key, ev.Type, oe.OrderID))
		}
		if err := checkOrder(oe); err != nil {
			return outbox.Permanent(fmt.Errorf("collector: event %s: %w", ev.ID, err))
		}
		refund := ev.Type == commerce.EventOrderCancelled
		if refund && oe.PaidAt == nil {
			continue // an unpaid order: nothing was sold
		}
		if oe.At.IsZero() {
			// Commerce stamps every event with when it happened; without one it would count
			// on 0001-01-01.
			return outbox.Permanent(fmt.Errorf("collector: event %s: no time (at)", ev.ID))
		}
		day := c.day(oe.At)
		if _, err := ParseDate(day); err != nil {
			// Past year 9999 no query can name the day; in year 0 its week would start in
			// year -1, which no rollup can name.
			return outbox.Permanent(fmt.Errorf("collector: event %s: at %s, on a day outside years 1 to 9999", ev.ID, oe.At.Format(time.RFC3339)))
		}
		total := oe.Subtotal - oe.Discount // what was paid: a sale's revenue, and an old refund's
		if refund {
			var err error
			if total, err = refunded(oe); err != nil {
				return outbox.Permanent(fmt.Errorf("collector: event %s: %w", ev.ID, err))
			}
		}
		for i, rev := range shares(oe, total) {
			l := oe.Lines[i]
			k := dayProduct{day, l.ProductID}
			d := deltas[k]
			if d == nil {
				d = &Metrics{}
				deltas[k] = d
			}
			delta := Metrics{Orders: 1, Units: l.Qty, Revenue: rev, NetUnits: l.Qty, NetRevenue: rev}
			if refund {
				delta = Metrics{Cancellations: 1, UnitsRefunded: l.Qty, RevenueRefunded: rev, NetUnits: -l.Qty, NetRevenue: -rev}
			}
			if !d.add(delta) {
				// Not permanent: the consumer then applies the batch's events one by one, and
				// the one that overflows the stored sums fails (and is dead-lettered) alone.
				return fmt.Errorf("collector: event %s: the metrics of %s on %s overflow int64", ev.ID, l.ProductID, day)
			}
		}
	}
	if err := c.upsertDaily(ctx, tx, deltas); err != nil {
		return err
	}
	return c.countStreams(ctx, tx, streams)
}

// commerceWrote reports whether ev can be an event commerce wrote, for Gaps to count: of a
// type commerce writes, under the ID it gives it, numbered within what its stream can
// hold (each type at most once per aggregate). Another producer's would hide a missing
// event, or report ever so many that can never come.
func commerceWrote(ev outbox.Event) bool {
	return slices.Contains(commerce.EventTypes, ev.Type) && ev.ID == commerce.EventID(ev.Key, ev.Type) &&
		ev.Seq >= 1 && ev.Seq <= int64(len(commerce.EventTypes))
}

// checkOrder returns why oe's lines and amounts cannot be counted, or nil: 1 to
// commerce.MaxLines lines, each with a product ID commerce writes, 1 to commerce.MaxQty
// units at a price of 1 to commerce.MaxPrice and an amount of Qty × UnitPrice; the lines
// must sum to the subtotal, and the discount must lie between 0 and the subtotal — which
// also keeps the arithmetic of shares within its bounds.
func checkOrder(oe commerce.OrderEvent) error {
	if len(oe.Lines) < 1 || len(oe.Lines) > commerce.MaxLines {
		return fmt.Errorf("%d lines, want 1 to %d", len(oe.Lines), commerce.MaxLines)
	}
	var sum int64
	for i, l := range oe.Lines {
		hi, lo := bits.Mul64(uint64(max(l.Qty, 0)), uint64(max(l.UnitPrice, 0)))
		switch {
		case !validProductID(l.ProductID):
			return fmt.Errorf("line %d: product ID %q is not one commerce writes", i, l.ProductID)
		case l.Qty < 1 || l.Qty > commerce.MaxQty || l.UnitPrice < 1 || l.UnitPrice > commerce.MaxPrice:
			return fmt.Errorf("line %d: quantity %d or price %d out of commerce's bounds", i, l.Qty, l.UnitPrice)
		case hi != 0 || lo > math.MaxInt64 || int64(lo) != l.Amount:
			return fmt.Errorf("line %d: amount %d is not %d × %d", i, l.Amount, l.Qty, l.UnitPrice)
		case sum > math.MaxInt64-l.Amount:
			return fmt.Errorf("line %d: the lines' amounts exceed int64", i)
		}
		sum += l.Amount
	}
	if sum != oe.Subtotal || oe.Discount < 0 || oe.Discount > oe.Subtotal {
		return fmt.Errorf("subtotal %d, discount %d: the lines sum to %d, and the discount must lie within 0..subtotal", oe.Subtotal, oe.Discount, sum)
	}
	return nil
}

// refunded returns what the cancellation of a paid order (oe, checked by checkOrder)
// refunded: refundPoints + refundAmount, which with the reward's shortfall the buyer kept
// add up to what was paid (points + amount due = subtotal - discount); all of what was
// paid for an event written before commerce said what it refunded. Amounts that do not
// add up are an error.
func refunded(oe commerce.OrderEvent) (int64, error) {
	paid := oe.Subtotal - oe.Discount
	if oe.RefundPoints == nil && oe.RefundAmount == nil {
		return paid, nil
	}
	if oe.RefundPoints == nil || oe.RefundAmount == nil {
		return 0, errors.New("a refund with only one of refundPoints and refundAmount")
	}
	rp, ra, short := *oe.RefundPoints, *oe.RefundAmount, oe.RewardShortfall
	if oe.Points < 0 || oe.AmountDue < 0 || oe.Points > paid || oe.AmountDue != paid-oe.Points ||
		rp < 0 || rp > oe.Points || ra < 0 || ra > oe.AmountDue || short < 0 || short > paid || rp+ra+short != paid {
		return 0, fmt.Errorf("points %d, amount due %d, refunded %d + %d with a shortfall of %d: not what was paid (%d)",
			oe.Points, oe.AmountDue, rp, ra, short, paid)
	}
	return rp + ra, nil
}

// shares returns the revenue of each line of oe: total (what was paid, or refunded, at
// most subtotal less discount) shared in proportion to the lines' amounts, rounded down,
// the rounding left to the last line, so that the lines sum to exactly total.
func shares(oe commerce.OrderEvent, total int64) []int64 {
	out := make([]int64, len(oe.Lines))
	paid, left := total, total
	for i, l := range oe.Lines {
		if i == len(oe.Lines)-1 || oe.Subtotal <= 0 {
			out[i] = left
			left = 0
			continue
		}
		// Amount × paid can exceed 64 bits (999 units at a price near MaxPrice): 128-bit.
		hi, lo := bits.Mul64(uint64(max(l.Amount, 0)), uint64(max(paid, 0)))
		q, _ := bits.Div64(hi, lo, uint64(oe.Subtotal))
		out[i] = int64(q)
		left -= out[i]
	}
	return out
}

// day returns the date of t in the collector's zone, as YYYY-MM-DD.
func (c *Collector) day(t time.Time) string { return t.In(c.loc).Format(time.DateOnly) }

func (c *Collector) upsertDaily(ctx context.Context, tx bun.Tx, deltas map[dayProduct]*Metrics) error {
	if len(deltas) == 0 {
		return nil
	}
	now := c.now().UTC()
	rows := make([]dailyRow, 0, len(deltas))
	periods := make(map[dirtyRow]bool)
	for k, m := range deltas {
		rows = append(rows, dailyRow{Day: k.day, ProductID: k.product, Metrics: *m, UpdatedAt: now})
		d, _ := time.Parse(time.DateOnly, k.day)
		for _, p := range []Period{Weekly, Monthly} {
			periods[dirtyRow{Period: p, Start: p.start(d).Format(time.DateOnly), Version: 1}] = true
		}
	}
	// One lock order for every transaction (day, then product), so that concurrent batches
	// wait for each other instead of deadlocking.
	slices.SortFunc(rows, func(a, b dailyRow) int {
		return strings.Compare(a.Day+"\x00"+a.ProductID, b.Day+"\x00"+b.ProductID)
	})
	q := tx.NewInsert().Model(&rows)
	sets := make([]string, 0, 9)
	for _, col := range strings.Split(metricColumns, ", ") {
		sets = append(sets, fmt.Sprintf("%s = %s + %s", col, col, c.incoming(col)))
	}
	sets = append(sets, "updated_at = "+c.incoming("updated_at"))
	if _, err := c.onConflict(q, "day, product_id").Set(strings.Join(sets, ", ")).Exec(ctx); err != nil {
		return fmt.Errorf("collector: updating daily metrics: %w", err)
	}
	dirty := make([]dirtyRow, 0, len(periods))
	for p := range periods {
		dirty = append(dirty, p)
	}
	slices.SortFunc(dirty, func(a, b dirtyRow) int { return strings.Compare(string(a.Period)+a.Start, string(b.Period)+b.Start) })
	q = tx.NewInsert().Model(&dirty)
	if _, err := c.onConflict(q, "period, start").Set("version = version + 1").Exec(ctx); err != nil {
		return fmt.Errorf("collector: marking rollups: %w", err)
	}
	return nil
}

func (c *Collector) countStreams(ctx context.Context, tx bun.Tx, streams map[outbox.Stream]*streamRow) error {
	rows := make([]streamRow, 0, len(streams))
	for _, s := range streams {
		rows = append(rows, *s)
	}
	slices.SortFunc(rows, func(a, b streamRow) int { return strings.Compare(a.Topic+"\x00"+a.Key, b.Topic+"\x00"+b.Key) })
	maxExpr := "GREATEST"
	if sqlutil.IsSQLite(c.db) {
		maxExpr = "MAX"
	}
	q := c.onConflict(tx.NewInsert().Model(&rows), "topic, stream_key").
		Set(fmt.Sprintf("max_seq = %s(max_seq, %s), seen = seen + %s", maxExpr, c.incoming("max_seq"), c.incoming("seen")))
	if _, err := q.Exec(ctx); err != nil {
		return fmt.Errorf("collector: counting streams: %w", err)
	}
	return nil
}

// onConflict makes q an upsert on the key columns, in the database's dialect.
func (c *Collector) onConflict(q *bun.InsertQuery, key string) *bun.InsertQuery {
	if sqlutil.IsSQLite(c.db) {
		return q.On("CONFLICT (" + key + ") DO UPDATE")
	}
	return q.On("DUPLICATE KEY UPDATE")
}

// incoming names the value an upsert tried to insert into col.
func (c *Collector) incoming(col string) string {
	if sqlutil.IsSQLite(c.db) {
		return "EXCLUDED." + col
	}
	return "VALUES(" + col + ")"
}

// Gap is an event stream (an aggregate on a topic) of which the collector has applied
// fewer events than its highest sequence number says exist.
type Gap struct {
	outbox.Stream
	// MaxSeq is the highest sequence number applied, Missing how many below it were not.
	MaxSeq, Missing int64
}

// Gaps returns up to limit (at least 1) streams with missing events, by topic and key. Every stream
// the outbox writes is numbered 1, 2, 3, ... without a gap, so a missing number is an event
// not applied yet: still in flight on another partition, or dead-lettered (redrive it).
func (c *Collector) Gaps(ctx context.Context, limit int) ([]Gap, error) {
	if limit < 1 {
		return nil, fmt.Errorf("%w: limit %d (want at least 1)", ErrInvalidArgument, limit)
	}
	var rows []streamRow
	err := c.db.NewSelect().Model(&rows).Where("max_seq > seen").OrderExpr("topic, stream_key").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("collector: reading gaps: %w", sqlutil.Unavailable(c.db, err))
	}
	out := make([]Gap, len(rows))
	for i, r := range rows {
		out[i] = Gap{Stream: outbox.Stream{Topic: r.Topic, Key: r.Key}, MaxSeq: r.MaxSeq, Missing: r.MaxSeq - r.Seen}
	}
	return out, nil
}
