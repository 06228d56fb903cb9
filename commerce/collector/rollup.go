package collector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Period is the span metrics are kept over.
type Period string

// The periods: a day in the collector's zone, an ISO week (Monday to Sunday), a month.
const (
	Daily   Period = "daily"
	Weekly  Period = "weekly"
	Monthly Period = "monthly"
)

// ParsePeriod returns the period named s, or an error wrapping ErrInvalidArgument.
func ParsePeriod(s string) (Period, error) {
	switch p := Period(s); p {
	case Daily, Weekly, Monthly:
		return p, nil
	}
	return "", fmt.Errorf("%w: period %q (want daily, weekly or monthly)", ErrInvalidArgument, s)
}

// ParseDate parses a YYYY-MM-DD date of years 1 to 9999 (a calendar date, in no zone), or
// returns an error wrapping ErrInvalidArgument. time.Parse takes year 0, but the weeks and
// months of that year start on days (the week of 0000-01-01 on -0001-12-27) that no
// YYYY-MM-DD names, so no rollup or answer could name them.
func ParseDate(s string) (time.Time, error) {
	d, err := time.Parse(time.DateOnly, s)
	switch {
	case err != nil:
		return time.Time{}, fmt.Errorf("%w: date %q is not YYYY-MM-DD", ErrInvalidArgument, s)
	case d.Year() < 1:
		return time.Time{}, fmt.Errorf("%w: date %q is before 0001-01-01", ErrInvalidArgument, s)
	}
	return d, nil
}

// PeriodStart returns the first day (YYYY-MM-DD) of the period p holding the calendar date d.
func PeriodStart(p Period, d time.Time) string { return p.start(d).Format(time.DateOnly) }

// start returns the first day of the period holding the calendar date d (midnight UTC).
func (p Period) start(d time.Time) time.Time {
	y, m, day := d.Date()
	switch p {
	case Weekly:
		back := (int(d.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, day-back, 0, 0, 0, 0, time.UTC)
	case Monthly:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(y, m, day, 0, 0, 0, 0, time.UTC)
}

// end returns the first day after the period starting at start.
func (p Period) end(start time.Time) time.Time {
	switch p {
	case Weekly:
		return start.AddDate(0, 0, 7)
	case Monthly:
		return start.AddDate(0, 1, 0)
	}
	return start.AddDate(0, 0, 1)
}

// lastDay returns the last day (YYYY-MM-DD) of the period p starting at start that a daily
// row can hold: days compare as text, and the last week and month of 9999 end on a day of
// year 10000, whose five-digit year sorts before every day's.
func lastDay(p Period, start time.Time) string {
	last := p.end(start).AddDate(0, 0, -1)
	if last.Year() > 9999 {
		return "9999-12-31"
	}
	return last.Format(time.DateOnly)
}

// Recompute recomputes the rollup (Weekly or Monthly) of the period holding date from the
// daily rows, in one transaction: it replaces the period's rows by the sums of its days'.
// It is idempotent and may run at any time, as often as wanted, concurrently with the
// consumer; RollupDirty calls it for the periods whose days changed.
func (c *Collector) Recompute(ctx context.Context, p Period, date time.Time) error {
	if p != Weekly && p != Monthly {
		return fmt.Errorf("%w: only weekly and monthly periods are rolled up, not %q", ErrInvalidArgument, p)
	}
	return sqlutil.InTx(ctx, c.db, func(ctx context.Context, tx bun.Tx) error {
		return c.recompute(ctx, tx, p, p.start(date))
	})
}

func (c *Collector) recompute(ctx context.Context, tx bun.Tx, p Period, start time.Time) error {
	from, last := start.Format(time.DateOnly), lastDay(p, start)
	if _, err := tx.NewDelete().Table(TableRollups).Where("period = ? AND start = ?", p, from).Exec(ctx); err != nil {
		return fmt.Errorf("collector: clearing the %s rollup of %s: %w", p, from, err)
	}
	_, err := tx.NewRaw(`INSERT INTO `+TableRollups+` (period, start, product_id, `+metricColumns+`, updated_at)
		SELECT ?, ?, product_id, SUM(orders), SUM(units), SUM(revenue), SUM(cancellations),
			SUM(units_refunded), SUM(revenue_refunded), SUM(net_units), SUM(net_revenue), ?
		FROM `+TableDaily+` WHERE day >= ? AND day <= ? GROUP BY product_id`,
		p, from, c.now().UTC(), from, last).Exec(ctx)
	if err != nil {
		return fmt.Errorf("collector: computing the %s rollup of %s: %w", p, from, err)
	}
	return nil
}

// RollupDirty recomputes every week and month whose days changed since its last rollup,
// reading the marks 100 at a time, and returns how many it recomputed. A period changed
// again while it was being recomputed stays marked and is recomputed on the next call. A
// period that fails (its sums overflow, say) stays marked and is reported in the error,
// joined with the others', without holding the rest back.
func (c *Collector) RollupDirty(ctx context.Context) (int, error) {
	const page = 100
	done := 0
	var errs []error
	var after *dirtyRow
	for {
		var marks []dirtyRow
		q := c.db.NewSelect().Model(&marks).OrderExpr("period, start").Limit(page)
		if after != nil {
			q = q.Where("period > ? OR (period = ? AND start > ?)", after.Period, after.Period, after.Start)
		}
		if err := q.Scan(ctx); err != nil {
			return done, errors.Join(append(errs, fmt.Errorf("collector: reading the periods to roll up: %w", sqlutil.Unavailable(c.db, err)))...)
		}
		for _, m := range marks {
			if err := c.rollupMark(ctx, m); err != nil {
				if ctx.Err() != nil {
					return done, err
				}
				errs = append(errs, err)
				continue
			}
			done++
		}
		if len(marks) < page {
			return done, errors.Join(errs...)
		}
		after = &marks[len(marks)-1]
	}
}

// rollupMark recomputes the period of m and removes the mark if no change came since.
func (c *Collector) rollupMark(ctx context.Context, m dirtyRow) error {
	start, err := ParseDate(m.Start)
	if err != nil {
		return err
	}
	err = sqlutil.InTx(ctx, c.db, func(ctx context.Context, tx bun.Tx) error {
		if err := c.recompute(ctx, tx, m.Period, start); err != nil {
			return err
		}
		_, err := tx.NewDelete().Model((*dirtyRow)(nil)).
			Where("period = ? AND start = ? AND version = ?", m.Period, m.Start, m.Version).Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("collector: rolling up %s %s: %w", m.Period, m.Start, err)
	}
	return nil
}

// RunRollups calls RollupDirty every interval until ctx ends (then it returns ctx's
// error), backing off after failures.
func (c *Collector) RunRollups(ctx context.Context, every time.Duration) error {
	failures := 0
	for {
		pause := every
		if _, err := c.RollupDirty(ctx); err != nil && ctx.Err() == nil {
			failures++
			pause = max(every, backoff.Equal(failures, every, 10*every))
			c.log.Warn("collector: rollup failed", "err", err, "retry_in", pause)
		} else {
			failures = 0
		}
		if err := backoff.Sleep(ctx, pause); err != nil {
			return err
		}
	}
}
