package coupon

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// issuerOf reads the name of the issuer that issues the template ("" when none has claimed
// it yet). With lock, on MySQL, the read is a locking read with a shared lock on the
// template's row, held until the transaction ends: it sees the latest committed issuer even
// in a transaction with an older snapshot, and ClaimIssuance, which takes the row's
// exclusive lock, waits for that transaction.
func issuerOf(ctx context.Context, db bun.IDB, templateID string, lock bool) (string, error) {
	query := "SELECT issuer FROM coupon_templates WHERE id = ?"
	if lock && !sqlutil.IsSQLite(db) {
		query += " LOCK IN SHARE MODE" // MariaDB knows no FOR SHARE
	}
	var issuer sql.NullString
	switch err := db.NewRaw(query, templateID).Scan(ctx, &issuer); {
	case sqlutil.IsNoRows(err):
		return "", fmt.Errorf("%w: %q", ErrTemplateNotFound, templateID)
	case err != nil:
		return "", err
	}
	return issuer.String, nil
}

// otherIssuer is the rejection of r by a Service whose issuer is not issuer, the template's.
func otherIssuer(r TakeRequest, issuer string) error {
	return &IssueError{Err: ErrOtherIssuer, TemplateID: r.Template.ID, UserID: r.UserID, RequestID: r.RequestID, Issuer: issuer}
}

// claim is the check before a take: it returns nil when the template is issued by the
// Service's issuer, claiming it first if no issuer has (a template created by an earlier
// version), and otherwise the rejection (ErrOtherIssuer). A template once found to be the
// issuer's is remembered (outside a caller's transaction, which could roll the claim back),
// so that the losers of a rush on it are still turned away by the issuer alone: the
// decisive check is the one in the transaction that writes the coupon (verify).
func (s *Service) claim(ctx context.Context, r TakeRequest) error {
	id, name := r.Template.ID, s.issuer.Name()
	s.mu.Lock()
	mine := s.issuing[id]
	s.mu.Unlock()
	if mine {
		return nil
	}
	// In a caller's transaction a plain read could be of a snapshot older than the claim.
	inTx := sqlutil.IsTx(s.db)
	issuer, err := issuerClaiming(ctx, s.db, id, name, inTx)
	switch {
	case err != nil:
		return err
	case issuer != name:
		return otherIssuer(r, issuer)
	}
	if !inTx {
		s.mu.Lock()
		s.issuing[id] = true
		s.mu.Unlock()
	}
	return nil
}

// issuerClaiming reads the template's issuer as issuerOf does, first recording name as its
// issuer if none is recorded yet (a template created by an earlier version, or whose claim
// in a caller's transaction rolled back).
func issuerClaiming(ctx context.Context, db bun.IDB, templateID, name string, lock bool) (string, error) {
	issuer, err := issuerOf(ctx, db, templateID, lock)
	if err != nil || issuer != "" {
		return issuer, err
	}
	_, err = db.NewUpdate().Model((*templateRow)(nil)).Set("issuer = ?", name).
		Where("id = ?", templateID).Where("issuer IS NULL").Exec(ctx)
	if err != nil {
		return "", err
	}
	return issuerOf(ctx, db, templateID, lock)
}

// verify checks, in tx, the transaction that writes r's coupon, that the template is still
// issued by the Service's issuer, holding the template row's shared lock until tx ends
// (issuerOf): a ClaimIssuance for another issuer either committed before, and the coupon
// is refused (ErrOtherIssuer), or waits for tx, and counts the coupon if tx commits it.
// A template claimed by nobody (a claim in a caller's transaction that rolled back) is
// claimed here.
func (s *Service) verify(ctx context.Context, tx bun.IDB, r TakeRequest) error {
	issuer, err := issuerClaiming(ctx, tx, r.Template.ID, s.issuer.Name(), true)
	switch {
	case err != nil:
		return err
	case issuer != s.issuer.Name():
		s.mu.Lock()
		delete(s.issuing, r.Template.ID)
		s.mu.Unlock()
		return otherIssuer(r, issuer)
	}
	return nil
}

// ClaimIssuance makes the Service's issuer the one that issues the template's coupons: how a
// template moves from one issuer to the other (from sqlcoupon to rediscoupon, or back).
// Until then, a Service whose issuer is not the template's refuses to issue it
// (ErrOtherIssuer), so that two issuers, each with its own count, never serve one template
// at once. In one transaction, ClaimIssuance takes the template row's exclusive lock,
// which waits for every coupon being written under the former issuer (each is written
// holding that row's shared lock), records the Service's issuer, and builds its state for
// the template from the coupons durably issued (Recounter.Load, replacing any state it had:
// for rediscoupon a Recount, for sqlcoupon its counter set to the coupons issued). Coupons
// the former issuer took but had not started writing then are refused when they are
// written (its take is given back), and from then on it refuses every issue of the
// template, except replays of requests it served. Claiming a template the Service's issuer
// already issues only rebuilds that state, safely while issues are in flight.
//
// Instances still running with the former issuer answer the template's requests from
// their own count until they stop: a rejection (ErrSoldOut, ErrLimitReached) of theirs may
// be out of date, never a coupon.
func (s *Service) ClaimIssuance(ctx context.Context, templateID string) (err error) {
	tpl, err := s.Template(ctx, templateID)
	if err != nil {
		return err
	}
	name := s.issuer.Name()
	if !sqlutil.IsTx(s.db) {
		s.warmMu.Lock()
		defer s.warmMu.Unlock()
	}
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		var locked []string
		err := sqlutil.ForUpdate(tx.NewSelect().Model((*templateRow)(nil)).Column("id").Where("id = ?", tpl.ID)).Scan(ctx, &locked)
		if err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*templateRow)(nil)).Set("issuer = ?", name).Where("id = ?", tpl.ID).Exec(ctx); err != nil {
			return err
		}
		rc, ok := s.issuer.(Recounter)
		if !ok {
			return nil
		}
		return rc.Load(ctx, tx, tpl, allHoldings(ctx, tx, tpl.ID), false)
	})
	if err != nil {
		return fail("claiming issuance", err)
	}
	if !sqlutil.IsTx(s.db) {
		s.mu.Lock()
		s.issuing[tpl.ID] = true
		s.mu.Unlock()
	}
	return nil
}

// ClaimAllIssuance claims (ClaimIssuance) every template whose coupons another issuer
// issues, and returns how many it moved: what a process calls at start so that the
// configuration started last decides each template's issuer (a deployment adding Redis to a
// SQL one moves every template to rediscoupon). Instances still running with the former
// issuer then refuse those templates (ErrOtherIssuer) until they are replaced. Templates no
// issuer has claimed yet are left to the first issue.
func (s *Service) ClaimAllIssuance(ctx context.Context) (int, error) {
	var ids []string
	err := s.db.NewSelect().Model((*templateRow)(nil)).Column("id").
		Where("issuer IS NOT NULL AND issuer <> ?", s.issuer.Name()).Order("id").Scan(ctx, &ids)
	if err != nil {
		return 0, fail("listing the templates of other issuers", err)
	}
	for i, id := range ids {
		if err := s.ClaimIssuance(ctx, id); err != nil {
			return i, err
		}
	}
	return len(ids), nil
}

// refused returns the coupon a request already served returns, whoever issued it, or err,
// the rejection of a Service whose issuer is not the template's.
func (s *Service) refused(ctx context.Context, r TakeRequest, err error) (Coupon, error) {
	if !errors.Is(err, ErrOtherIssuer) {
		return Coupon{}, err
	}
	existing, found, lerr := couponByRequest(ctx, s.db, r.RequestID)
	switch {
	case lerr != nil:
		return Coupon{}, lerr
	case found:
		return s.replayed(existing, r, s.now())
	}
	return Coupon{}, err
}
