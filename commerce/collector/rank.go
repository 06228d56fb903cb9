package collector

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// MaxRankingLimit bounds a ranking's length; MaxMetricsPeriods bounds ProductMetrics' span.
const (
	MaxRankingLimit   = 100
	MaxMetricsPeriods = 400
)

// Ranked is a product's place in a ranking.
type Ranked struct {
	// Rank is 1 for the first; products with equal net units get consecutive ranks in
	// product ID order.
	Rank      int    `bun:"-"`
	ProductID string `bun:"product_id"`
	Metrics
}

// Ranking returns the period's best sellers: up to limit (1..MaxRankingLimit) products
// with net units sold above zero, most net units first, ties in product ID order. date is
// any day of the period (a calendar date: see ParseDate). It reads the pre-aggregated rows
// of that one period through the ranking index — the daily rows for Daily, the rollups for
// Weekly and Monthly (as of their last recomputation) — and never scans the dailies of a
// week or month.
func (c *Collector) Ranking(ctx context.Context, p Period, date time.Time, limit int) ([]Ranked, error) {
	if _, err := ParsePeriod(string(p)); err != nil {
		return nil, err
	}
	if limit < 1 || limit > MaxRankingLimit {
		return nil, fmt.Errorf("%w: limit %d (want 1..%d)", ErrInvalidArgument, limit, MaxRankingLimit)
	}
	start := p.start(date).Format(time.DateOnly)
	var out []Ranked
	q := c.table(p, start).Column("product_id").ColumnExpr(metricColumns).
		Where("net_units > 0").OrderExpr("net_units DESC, product_id").Limit(int64(limit))
	if err := q.Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("collector: reading the %s ranking of %s: %w", p, start, sqlutil.Unavailable(c.db, err))
	}
	for i := range out {
		out[i].Rank = i + 1
	}
	return out, nil
}

// PeriodMetrics are a product's metrics over one period.
type PeriodMetrics struct {
	// Start is the period's first day (YYYY-MM-DD).
	Start string `bun:"start"`
	Metrics
}

// ProductMetrics returns the product's metrics for each period from the one holding from
// to the one holding to (calendar dates), oldest first, at most MaxMetricsPeriods periods;
// periods without sales or refunds are left out. A product ID that commerce could not
// have written (1 to commerce.MaxIDLen printable ASCII bytes) fails with
// ErrInvalidArgument.
func (c *Collector) ProductMetrics(ctx context.Context, productID string, p Period, from, to time.Time) ([]PeriodMetrics, error) {
	if _, err := ParsePeriod(string(p)); err != nil {
		return nil, err
	}
	if !validProductID(productID) {
		return nil, fmt.Errorf("%w: product ID %q (want 1 to %d printable ASCII characters)", ErrInvalidArgument, productID, commerce.MaxIDLen)
	}
	first, last := p.start(from), p.start(to)
	if last.Before(first) {
		return nil, fmt.Errorf("%w: from %s is after to %s", ErrInvalidArgument, from.Format(time.DateOnly), to.Format(time.DateOnly))
	}
	if n := periodsBetween(p, first, last); n > MaxMetricsPeriods {
		return nil, fmt.Errorf("%w: %d %s periods asked, at most %d", ErrInvalidArgument, n, p, MaxMetricsPeriods)
	}
	lo, hi := first.Format(time.DateOnly), last.Format(time.DateOnly)
	var out []PeriodMetrics
	var q *bun.SelectQuery
	if p == Daily {
		q = c.db.NewSelect().Table(TableDaily).ColumnExpr("day AS start").Where("product_id = ? AND day >= ? AND day <= ?", productID, lo, hi).OrderExpr("day")
	} else {
		q = c.db.NewSelect().Table(TableRollups).Column("start").
			Where("product_id = ? AND period = ? AND start >= ? AND start <= ?", productID, p, lo, hi).OrderExpr("start")
	}
	if err := q.ColumnExpr(metricColumns).Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("collector: reading the metrics of %s: %w", productID, sqlutil.Unavailable(c.db, err))
	}
	return out, nil
}

// table selects the rows of one period.
func (c *Collector) table(p Period, start string) *bun.SelectQuery {
	if p == Daily {
		return c.db.NewSelect().Table(TableDaily).Where("day = ?", start)
	}
	return c.db.NewSelect().Table(TableRollups).Where("period = ? AND start = ?", p, start)
}

// periodsBetween counts the periods from first to last, both period starts, inclusive.
func periodsBetween(p Period, first, last time.Time) int {
	switch p {
	case Monthly:
		return (last.Year()-first.Year())*12 + int(last.Month()-first.Month()) + 1
	case Weekly:
		return int(last.Sub(first).Hours()/24)/7 + 1
	}
	return int(last.Sub(first).Hours()/24) + 1
}

// validProductID reports whether id is a product ID commerce could have written: 1 to
// commerce.MaxIDLen printable ASCII bytes.
func validProductID(id string) bool {
	return id != "" && len(id) <= commerce.MaxIDLen && !strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e })
}
