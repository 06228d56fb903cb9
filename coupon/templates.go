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
func (s *Service) CreateTemplate(ctx context.Context, t Template) (Template, error) {
	t, err := t.normalize()
	if err != nil {
		return Template{}, err
	}
	t.CreatedAt = s.now()
	var stored Template
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(toTemplateRow(t)).Exec(ctx)
		if err == nil {
			stored = t
			return nil
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
		s.mu.Lock()
		s.templates[id] = t
		s.mu.Unlock()
	}
	return t, nil
}
