package coupon

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// CreateTemplate validates t, applies defaults (PerUserLimit 1, times in UTC at microsecond
// precision) and stores it. It is idempotent on the ID: creating a template that exists
// with the same terms returns the stored one; with other terms, ErrTemplateExists.
// Invalid input returns a *ValidationError wrapping ErrInvalidTemplate and stores nothing.
// The template is issued by the Service's issuer (see ClaimIssuance); with an issuer that
// joins the transaction (sqlcoupon), the issuer's state for the template is created with it.
func (s *Service) CreateTemplate(ctx context.Context, t Template) (Template, error) {
	t, err := t.normalize()
	if err != nil {
		return Template{}, err
	}
	t.CreatedAt = s.now()
	var stored Template
	row := toTemplateRow(t)
	row.Issuer = s.issuer.Name()
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(row).Exec(ctx)
		if err == nil {
			stored = t
			return s.createState(ctx, tx, t)
		}
		if !sqlutil.IsDuplicateKey(err) {
			return err
		}
		return errDuplicate
	})
	if err == errDuplicate {
		if stored, err = s.Template(ctx, t.ID); err != nil {
			return Template{}, err
		}
		if !stored.sameTerms(t) {
			return Template{}, fmt.Errorf("%w: %q", ErrTemplateExists, t.ID)
		}
		return stored, nil
	}
	if err != nil {
		return Template{}, fail("creating template", err)
	}
	return stored, nil
}

// createState creates, in tx, the state of an issuer that joins the transaction for a new
// template (no coupons yet), so that no Issue ever finds it missing: in a caller's
// transaction whose snapshot predates its creation elsewhere, it could not be read.
func (s *Service) createState(ctx context.Context, tx bun.Tx, t Template) error {
	rc, ok := s.issuer.(Recounter)
	if !ok || !s.issuer.JoinsTx() {
		return nil
	}
	return rc.Load(ctx, tx, t, func(func(Holding, error) bool) {}, true)
}

// Template returns the template with that ID, or an error wrapping ErrTemplateNotFound.
func (s *Service) Template(ctx context.Context, id string) (Template, error) {
	if err := validateID("templateID", id); err != nil {
		return Template{}, err
	}
	s.mu.Lock()
	t, ok := s.templates[id]
	s.mu.Unlock()
	if ok {
		return t, nil
	}
	var row templateRow
	switch err := s.db.NewSelect().Model(&row).Where("id = ?", id).Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return Template{}, fmt.Errorf("%w: %q", ErrTemplateNotFound, id)
	case err != nil:
		return Template{}, fail("reading template", err)
	}
	t = row.template()
	// Only what is committed may be cached: a template read inside the caller's
	// transaction could still be rolled back.
	if !sqlutil.IsTx(s.db) {
		// A template created by an earlier version may have no state yet in an issuer
		// that joins the transaction: create it here, outside any caller's transaction,
		// before an Issue in one (whose snapshot might not see it) needs it.
		if s.issuer.JoinsTx() {
			if err := s.warm(ctx, t); err != nil {
				return Template{}, fail("loading the issuer's state", err)
			}
		}
		s.mu.Lock()
		s.templates[id] = t
		s.mu.Unlock()
	}
	return t, nil
}
