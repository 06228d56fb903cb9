package commerce

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Run runs every background loop of checkout until ctx is done, then waits for them to
// stop and returns nil: the outbox relay and cleaner and the payment reconciler (those
// given in Config), the inventory's, coupons' and ledger's sweepers (expired holds), the
// order expiry (Expire every sweep interval) and recovery (Recover of orders idle longer
// than WithRecovery's age, every recovery interval, and at once after a webhook). Loop
// failures are logged and retried at the next tick. Run it once per process, in its own
// goroutine.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	loop := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			if err := run(ctx); err != nil && ctx.Err() == nil {
				s.cfg.log.Error("commerce: background loop stopped", "loop", name, "err", err)
			}
		})
	}
	if s.relay != nil {
		loop("relay", s.relay.Run)
	}
	if s.clean != nil {
		loop("cleaner", s.clean.Run)
	}
	if s.recon != nil {
		loop("reconciler", s.recon.Run)
	}
	loop("inventory", s.inv.Run)
	loop("ledger", s.led.Run)
	loop("coupons", func(ctx context.Context) error { return s.coup.Run(ctx, s.cfg.sweepEvery) })
	loop("expiry", func(ctx context.Context) error {
		return every(ctx, s.cfg.sweepEvery, nil, func(bool) {
			if n, err := s.Expire(ctx); err != nil && ctx.Err() == nil {
				s.cfg.log.Warn("commerce: expiry failed", "expired", n, "err", err)
			}
		})
	})
	loop("recovery", func(ctx context.Context) error {
		return every(ctx, s.cfg.recoverEvery, s.wake, func(woken bool) {
			minAge := s.cfg.recoverAfter
			if woken {
				minAge = 0 // a webhook settled something: take it over now
			}
			rep, err := s.recoverPass(ctx, minAge)
			if err != nil && ctx.Err() == nil {
				s.cfg.log.Warn("commerce: recovery pass failed; the next one tries again", "err", err)
			}
			if rep.Examined > 0 {
				s.cfg.log.Info("commerce: recovery pass", "examined", rep.Examined, "advanced", rep.Advanced,
					"waiting", rep.Waiting, "failed", rep.Failed)
			}
		})
	})
	wg.Wait()
	return nil
}

// every runs fn at once and then every interval, or when wake fires (fn is told which),
// until ctx is done.
func every(ctx context.Context, interval time.Duration, wake <-chan struct{}, fn func(woken bool)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	woken := false
	for {
		fn(woken)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			woken = false
		case <-wake:
			woken = true
		}
	}
}

// Points returns the user's points balance.
func (s *Service) Points(ctx context.Context, userID string) (ledger.Balance, error) {
	if err := checkID("UserID", userID); err != nil {
		return ledger.Balance{}, err
	}
	return s.led.Balance(ctx, userID)
}

// PointHistory returns a page of the user's points history, newest first (cursor "" for
// the newest; pass the page's Next for the following one; limit 0 for the ledger's default).
func (s *Service) PointHistory(ctx context.Context, userID, cursor string, limit int) (ledger.HistoryPage, error) {
	if err := checkID("UserID", userID); err != nil {
		return ledger.HistoryPage{}, err
	}
	return s.led.History(ctx, userID, cursor, limit)
}

// CreateCouponTemplate creates a coupon campaign (idempotent on its ID; see
// coupon.Service.CreateTemplate).
func (s *Service) CreateCouponTemplate(ctx context.Context, t coupon.Template) (coupon.Template, error) {
	return s.coup.CreateTemplate(ctx, t)
}

// IssueCoupon issues a coupon of the template to the user, first come first served,
// idempotently on requestID (see coupon.Service.Issue), and writes its coupon-issued event
// in the transaction that writes the coupon.
func (s *Service) IssueCoupon(ctx context.Context, templateID, userID, requestID string) (coupon.Coupon, error) {
	if err := checkID("UserID", userID); err != nil {
		return coupon.Coupon{}, err
	}
	c, err := s.coup.IssueThen(ctx, templateID, userID, requestID, s.couponEvent)
	if err == nil {
		s.notify()
	}
	return c, err
}

// Coupons returns a page of the user's coupons, newest first (see coupon.Service.Wallet).
func (s *Service) Coupons(ctx context.Context, userID string, q coupon.WalletQuery) (coupon.WalletPage, error) {
	return s.coup.Wallet(ctx, userID, q)
}

// HandlePaymentWebhook passes a PG webhook (body and signature as received) to
// payment.Service.HandleWebhook, which records what it reports exactly once, and wakes the
// recovery loop so that the order or top-up it settles is completed at once. Its errors are
// the payment package's (payment.ErrInvalidWebhook, payment.ErrWebhookUnconfirmed: reject
// the delivery).
func (s *Service) HandlePaymentWebhook(ctx context.Context, body []byte, signature string) error {
	err := s.pay.HandleWebhook(ctx, body, signature)
	if err == nil || errors.Is(err, payment.ErrWebhookUnconfirmed) {
		s.kick() // an unconfirmed webhook may still have recorded the PG's own answer
	}
	return err
}

// Ready reports whether the Service can serve: the database and the inventory answer.
// The error names what does not.
func (s *Service) Ready(ctx context.Context) error {
	var errs []error
	if err := s.db.PingContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("database: %w", err))
	}
	if _, err := s.inv.Stocks(ctx, []string{"commerce-readiness-probe"}); err != nil {
		errs = append(errs, fmt.Errorf("inventory: %w", err))
	}
	return errors.Join(errs...)
}
