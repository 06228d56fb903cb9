package payment

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Mismatch is a settled payment that the PG's own record contradicts, or one in REVIEW.
type Mismatch struct {
	Payment Payment
	// Gateway is what the PG knows of the payment (zero when it has none).
	Gateway GatewayPayment
	// Detail says what disagrees.
	Detail string
}

// crossCheckConcurrency bounds the Status calls CrossCheck makes at once.
const crossCheckConcurrency = 8

// CrossCheck asks the PG (Gateway.Status) about every settled payment and returns, in ID
// order, those its record contradicts: approved (or refunded) here but not approved there,
// declined here but approved there, another amount or currency, a refunded total the PG does
// not have, and every payment in REVIEW. It changes nothing: it is an audit, one PG call per
// settled payment. An error (the PG unreachable, say: ErrGatewayUnavailable or
// ErrOutcomeUnknown) means the check could not be completed.
func (s *Service) CrossCheck(ctx context.Context) ([]Mismatch, error) {
	var out []Mismatch
	for after := ""; ; {
		var rows []paymentRow
		err := s.db.NewSelect().Model(&rows).
			Where("state NOT IN (?)", bun.List([]string{string(StateRequested), string(StateUnknown)})).
			Where("id > ?", after).Order("id").Limit(200).Scan(ctx)
		if err != nil {
			return nil, fmt.Errorf("payment: cross-check: reading payments: %w", sqlutil.Unavailable(s.db, err))
		}
		if len(rows) == 0 {
			return out, nil
		}
		after = rows[len(rows)-1].ID
		found := make([]*Mismatch, len(rows))
		var (
			wg   sync.WaitGroup
			sem  = make(chan struct{}, crossCheckConcurrency)
			mu   sync.Mutex
			errs []error
		)
		for i := range rows {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				m, err := s.crossCheck(ctx, rows[i].payment())
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				found[i] = m
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		for _, m := range found {
			if m != nil {
				out = append(out, *m)
			}
		}
	}
}

// crossCheck compares one settled payment with the PG's record; nil when they agree.
func (s *Service) crossCheck(ctx context.Context, p Payment) (*Mismatch, error) {
	st, err := s.gw.Status(ctx, p.ID)
	if err != nil && !errors.Is(err, ErrNotAtGateway) {
		return nil, fmt.Errorf("payment: cross-check of %q: %w", p.ID, err)
	}
	atPG := err == nil
	var detail string
	switch {
	case p.State == StateReview:
		detail = "under review: the gateway contradicted the record; a person must decide"
	case !atPG && (p.State == StateDeclined || p.State == StateAbandoned):
		// A PG may refuse a request before recording it (an invalid one): nothing was charged.
		// An abandoned payment never reached it.
	case p.State == StateAbandoned:
		detail = fmt.Sprintf("recorded ABANDONED, the gateway has it %s", st.State)
	case !atPG:
		detail = fmt.Sprintf("recorded %s, the gateway has no such payment", p.State)
	case st.Amount != p.Amount || st.Currency != p.Currency:
		detail = fmt.Sprintf("recorded %d %s, the gateway has %d %s", p.Amount, p.Currency, st.Amount, st.Currency)
	case p.State == StateDeclined && st.State != GatewayDeclined:
		detail = fmt.Sprintf("recorded DECLINED, the gateway says %s", st.State)
	case p.State != StateDeclined && st.State != GatewayApproved:
		detail = fmt.Sprintf("recorded %s, the gateway says %s", p.State, st.State)
	case p.State != StateDeclined && (st.Canceled < p.Refunded || st.Canceled > p.Refunded+p.RefundPending):
		detail = fmt.Sprintf("recorded %d refunded (%d pending), the gateway has %d", p.Refunded, p.RefundPending, st.Canceled)
	}
	if detail == "" {
		return nil, nil
	}
	return &Mismatch{Payment: p, Gateway: st, Detail: detail}, nil
}
