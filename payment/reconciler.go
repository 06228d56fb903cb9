package payment

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Reconciler settles what the Service could not: payments left REQUESTED (the PG was
// unavailable, or the process died between recording and calling it) or UNKNOWN (no answer),
// and refunds left PENDING, once they are older than a threshold.
//
// For each payment it asks Gateway.Status and records the PG's answer. A payment the PG has
// never seen is submitted again (Approve with the same payment ID, so it cannot be charged
// twice), as a client's retry would. For a pending refund it asks the PG how much of the
// payment it has refunded: one it made is recorded as succeeded, one it has not is
// submitted again (Cancel with the same refund ID); neither relies on the PG still keeping
// the idempotency key, which PGs prune after a while. Every settlement is a conditional
// update, so each happens exactly once even when several reconcilers run, or one races a
// late webhook or a client's retry.
type Reconciler struct {
	svc         *Service
	threshold   time.Duration
	interval    time.Duration
	batch       int
	concurrency int
}

// ReconcilerOption configures a Reconciler.
type ReconcilerOption func(*reconcilerSettings)

// reconcilerSettings is what the options of NewReconciler fill.
type reconcilerSettings struct {
	option.Errors
	Reconciler
}

// WithThreshold sets how old (since its last change) a payment or refund must be before the
// reconciler looks at it (default 1 minute): younger ones are likely still in flight. It
// must not be negative.
func WithThreshold(d time.Duration) ReconcilerOption {
	return func(s *reconcilerSettings) {
		if d < 0 {
			s.Reject("WithThreshold", fmt.Sprintf("%v is negative", d))
			return
		}
		s.threshold = d
	}
}

// WithInterval sets the pause between two passes of Run (default 30 seconds). It must be
// positive.
func WithInterval(d time.Duration) ReconcilerOption {
	return func(s *reconcilerSettings) { option.Positive(&s.Errors, &s.interval, "WithInterval", d) }
}

// WithBatchSize sets how many rows one query reads (default 100). It must be positive.
func WithBatchSize(n int) ReconcilerOption {
	return func(s *reconcilerSettings) { option.Positive(&s.Errors, &s.batch, "WithBatchSize", n) }
}

// WithConcurrency sets how many payments are reconciled at once (default 4). The gateway's
// bulkhead, if any, still bounds the calls to the PG. It must be positive.
func WithConcurrency(n int) ReconcilerOption {
	return func(s *reconcilerSettings) { option.Positive(&s.Errors, &s.concurrency, "WithConcurrency", n) }
}

// NewReconciler returns a Reconciler for the Service's payments, using its gateway, clock,
// logger and observer. An option given an invalid value (see each option) is refused with
// a *ValidationError naming it (ErrInvalidRequest), and no Reconciler.
func NewReconciler(svc *Service, opts ...ReconcilerOption) (*Reconciler, error) {
	s := reconcilerSettings{Reconciler: Reconciler{svc: svc, threshold: time.Minute, interval: 30 * time.Second,
		batch: 100, concurrency: 4}}
	if err := option.Apply(&s, opts); err != nil {
		return nil, fmt.Errorf("payment: reconciler: %w", err)
	}
	return &s.Reconciler, nil
}

// ReconcileReport counts what one pass did.
type ReconcileReport struct {
	// Examined is how many payments and refunds the pass looked at.
	Examined int
	// Settled is how many of them are settled after the pass (by it, or by a webhook or a
	// client's retry that raced it).
	Settled int
	// Unsettled is how many are still REQUESTED, UNKNOWN or PENDING after the pass: the PG was
	// unavailable, is still processing them, or did not answer.
	Unsettled int
}

// Reconcile makes one pass over the payments and refunds older than the threshold and
// returns what it did. An error from the PG about one payment does not stop the pass (it
// counts as Unsettled); a storage error or the context's end does.
func (r *Reconciler) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var (
		mu     sync.Mutex
		report ReconcileReport
	)
	count := func(settled bool) {
		mu.Lock()
		defer mu.Unlock()
		report.Examined++
		if settled {
			report.Settled++
		} else {
			report.Unsettled++
		}
	}
	cutoff := r.svc.now().Add(-r.threshold)
	err := sweep(ctx, r, cutoff,
		func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("state IN (?)", bun.List([]string{string(StateRequested), string(StateUnknown)}))
		},
		func(row *paymentRow) string { return row.ID },
		func(ctx context.Context, row *paymentRow) error {
			settled, err := r.payment(ctx, row.payment())
			count(settled)
			return err
		})
	if err != nil {
		return report, err
	}
	err = sweep(ctx, r, cutoff,
		func(q *bun.SelectQuery) *bun.SelectQuery { return q.Where("state = ?", string(RefundPending)) },
		func(row *refundRow) string { return row.ID },
		func(ctx context.Context, row *refundRow) error {
			settled, err := r.refund(ctx, row.refund())
			count(settled)
			return err
		})
	return report, err
}

// sweep runs settle on every row of T's table that filter selects and that has not changed
// since cutoff, a page at a time in ID order, r.concurrency rows at a time.
func sweep[T any](ctx context.Context, r *Reconciler, cutoff time.Time, filter func(*bun.SelectQuery) *bun.SelectQuery,
	id func(*T) string, settle func(context.Context, *T) error) error {
	after := ""
	for {
		var rows []T
		q := r.svc.db.NewSelect().Model(&rows).Where("updated_at <= ?", cutoff).Where("id > ?", after)
		if err := filter(q).Order("id").Limit(int64(r.batch)).Scan(ctx); err != nil {
			return fmt.Errorf("payment: reconciler reading: %w", sqlutil.Unavailable(r.svc.db, err))
		}
		if len(rows) == 0 {
			return nil
		}
		after = id(&rows[len(rows)-1])
		if err := r.each(ctx, len(rows), func(ctx context.Context, i int) error { return settle(ctx, &rows[i]) }); err != nil {
			return err
		}
	}
}

// each runs fn for 0..n-1, at most r.concurrency at a time, and returns their errors joined.
func (r *Reconciler) each(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, r.concurrency)
		mu    sync.Mutex
		first error
	)
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				first = errors.Join(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return first
}

// payment settles one REQUESTED or UNKNOWN payment if it can (see Service.resume: it asks
// the PG first, and submits it again with the same payment ID only if the PG never saw it),
// and reports whether it is settled now. Only storage errors are returned.
func (r *Reconciler) payment(ctx context.Context, p Payment) (bool, error) {
	p, err := r.svc.resume(ctx, p, CauseReconciler, takingUp)
	return p.State.Settled(), storageErr(err)
}

// refund settles one PENDING refund (see Service.completeRefund: it asks the PG first, and
// submits it again with the same refund ID only if the PG has not made it), and reports
// whether it settled.
func (r *Reconciler) refund(ctx context.Context, rf Refund) (bool, error) {
	rf, err := r.svc.completeRefund(ctx, rf, true)
	return rf.State != RefundPending, storageErr(err)
}

// storageErr keeps from err only what should stop a pass: errors that are not about the
// payment's outcome (declines, unknown outcomes and unavailability are reported, not
// returned; so is a PG contradicting the record, which is logged and told to the Observer:
// the payment moved to REVIEW, ErrUnderReview, or could not, ErrUnresolvable).
func storageErr(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrDeclined), errors.Is(err, ErrOutcomeUnknown),
		errors.Is(err, ErrGatewayUnavailable), errors.Is(err, ErrIllegalTransition),
		errors.Is(err, ErrRefundRejected), errors.Is(err, ErrUnderReview):
		return nil
	}
	return err
}

// Run reconciles every interval until ctx ends, then returns nil. A failed pass is logged
// and the next one tried at the next interval.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		report, err := r.Reconcile(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.svc.logger.ErrorContext(ctx, "payment: reconciliation pass failed", "err", err)
		} else if report.Examined > 0 {
			r.svc.logger.InfoContext(ctx, "payment: reconciliation pass", "examined", report.Examined,
				"settled", report.Settled, "unsettled", report.Unsettled)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
