package coupon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// maxTakeAttempts bounds how often Issue takes again after its ordinal turned out to be
// held durably by another request.
const maxTakeAttempts = 4

// Issue issues one coupon of the template to the user, first come first served: never more
// than the template's TotalQuantity in all, never more than its PerUserLimit to one user.
//
// Issue is idempotent on requestID: calling it again with the same request ID (at the same
// time or later, even after the window closed) returns the coupon the first call issued,
// and issues nothing more. A request ID already used for another template or user returns
// ErrRequestConflict.
//
// Rejections are *IssueError wrapping ErrNotStarted, ErrEnded, ErrSoldOut, ErrLimitReached
// or ErrRequestConflict, or ErrOtherIssuer when the template is issued by another issuer than
// the Service's (see ClaimIssuance; a request that issuer served still gets its coupon); a
// missing template, ErrTemplateNotFound; a malformed ID,
// *ValidationError wrapping ErrInvalidArgument.
func (s *Service) Issue(ctx context.Context, templateID, userID, requestID string) (Coupon, error) {
	return s.IssueThen(ctx, templateID, userID, requestID, nil)
}

// IssuedFunc writes what must commit with a newly issued coupon (an event, say) through tx,
// the transaction that inserts the coupon. Its error rolls the coupon back.
type IssuedFunc func(ctx context.Context, tx bun.Tx, c Coupon) error

// IssueThen is Issue calling then (when not nil) in the transaction that writes the coupon,
// once per coupon actually issued: a replayed request returns the earlier coupon without
// calling it. With an issuer that does not join transactions (Redis) the take happens
// before that transaction, as for Issue.
func (s *Service) IssueThen(ctx context.Context, templateID, userID, requestID string, then IssuedFunc) (c Coupon, err error) {
	start := time.Now()
	defer func() { s.observe(OpIssue, templateID, start, err) }()
	for _, arg := range [][2]string{{"templateID", templateID}, {"userID", userID}, {"requestID", requestID}} {
		if err := validateID(arg[0], arg[1]); err != nil {
			return Coupon{}, err
		}
	}
	tpl, err := s.Template(ctx, templateID)
	if err != nil {
		return Coupon{}, err
	}
	now := s.now()
	r := TakeRequest{Template: tpl, UserID: userID, RequestID: requestID, then: then}
	if err := tpl.checkWindow(now, userID, requestID); err != nil {
		// A retry of a request that was served inside the window still gets its coupon.
		served, found, lerr := couponByRequest(ctx, s.db, requestID)
		switch {
		case lerr != nil:
			return Coupon{}, fail("issuing", lerr)
		case found:
			return s.replayed(served, r, now)
		}
		return Coupon{}, err
	}
	if err := s.claim(ctx, r); err != nil {
		c, err = s.refused(ctx, r, err)
		return c, fail("issuing", err)
	}
	if s.issuer.JoinsTx() {
		c, err = s.issueInTx(ctx, r, now)
	} else {
		c, err = s.takeThenWrite(ctx, r, now)
	}
	return c, fail("issuing", err)
}

// issueInTx issues with an issuer that joins the transaction: take and write commit or
// roll back together.
func (s *Service) issueInTx(ctx context.Context, r TakeRequest, now time.Time) (Coupon, error) {
	for attempt := 1; ; attempt++ {
		var c Coupon
		err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
			r := r
			r.tx = tx
			if err := s.verify(ctx, tx, r); err != nil {
				return err
			}
			taken, err := s.issuer.Take(ctx, r)
			if err != nil {
				return err
			}
			if taken.Replay {
				return errReplay // roll the take back; the coupon is read below
			}
			c = newCoupon(r.Template, r.UserID, r.RequestID, taken, now)
			return r.write(ctx, tx, c)
		})
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrNotLoaded) {
			// The template's first issue: the issuer's SQL state is created outside the
			// issuing transactions (creating it inside them would have every first issuer
			// lock the same gap and deadlock).
			if attempt == maxTakeAttempts {
				return Coupon{}, err
			}
			if err := s.warm(ctx, r.Template); err != nil {
				return Coupon{}, err
			}
			continue
		}
		if errors.Is(err, ErrOtherIssuer) {
			return s.refused(ctx, r, err)
		}
		rejected := errors.Is(err, ErrSoldOut) || errors.Is(err, ErrLimitReached)
		if !rejected && !errors.Is(err, errReplay) && !sqlutil.IsDuplicateKey(err) {
			return Coupon{}, err
		}
		// The request may have been served already, by this user or another: a retry
		// (perhaps of the request that took the last coupon) gets its coupon, a reuse of
		// the request ID a conflict.
		existing, found, lerr := couponByRequest(ctx, s.db, r.RequestID)
		if lerr != nil {
			return Coupon{}, lerr
		}
		if found {
			return s.replayed(existing, r, now)
		}
		if rejected {
			return Coupon{}, err
		}
		// Another request of the same user committed the same ordinal first: take again,
		// reading the user's coupons with a locking read this time.
		if attempt == maxTakeAttempts {
			return Coupon{}, fmt.Errorf("coupon: ordinal still taken after %d attempts: %w", attempt, err)
		}
		r.retry = true
	}
}

// takeThenWrite issues with an issuer that keeps its count outside SQL (Redis): take
// there, then write the coupon in a transaction of its own, giving the take back when the
// write failed for sure. See the package documentation for the window between the two.
func (s *Service) takeThenWrite(ctx context.Context, r TakeRequest, now time.Time) (Coupon, error) {
	if sqlutil.IsTx(s.db) {
		return Coupon{}, ErrCannotJoinTx
	}
	for attempt := 1; ; {
		taken, err := s.take(ctx, r)
		if err != nil {
			return Coupon{}, err
		}
		c := newCoupon(r.Template, r.UserID, r.RequestID, taken, now)
		werr := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
			if err := s.verify(ctx, tx, r); err != nil {
				return err // ErrOtherIssuer: a ClaimIssuance for another issuer came first
			}
			return r.write(ctx, tx, c)
		})
		if werr == nil {
			return c, nil
		}
		if !s.definitelyFailed(werr) {
			// The write may have committed after all: keep the take (at worst one coupon
			// fewer is issued). A retry with the same request ID resumes it.
			s.log.Warn("coupon: write of a taken coupon ended in doubt; keeping the take",
				"template", r.Template.ID, "request", r.RequestID, "err", werr)
			return Coupon{}, werr
		}
		existing, found, lerr := couponByRequest(ctx, s.db, r.RequestID)
		switch {
		case lerr != nil:
			s.log.Warn("coupon: cannot check a failed write; keeping the take",
				"template", r.Template.ID, "request", r.RequestID, "err", lerr)
			return Coupon{}, werr
		case found && existing.TemplateID == r.Template.ID && existing.UserID == r.UserID:
			return s.replayed(existing, r, now) // the take now accounts for this coupon
		case found:
			s.giveBack(ctx, r)
			return s.replayed(existing, r, now) // ErrRequestConflict
		case sqlutil.IsDuplicateKey(werr):
			// The ordinal or the place is held durably by a coupon the issuer did not
			// count: its state is behind SQL (a loss of state with writes in flight). The
			// issuer counts that coupon and gives this take back, and the request takes
			// again: another ordinal and place, or sold out. The coupons the issuer missed
			// are at most the writes that were in flight; only collisions that count none
			// of them count as attempts.
			held, err := colliding(ctx, s.db, c)
			if err != nil {
				s.log.Warn("coupon: cannot read the coupons a write collided with; keeping the take",
					"template", r.Template.ID, "request", r.RequestID, "err", err)
				return Coupon{}, werr
			}
			adopted, err := s.issuer.Adopt(ctx, r, held)
			if err != nil {
				return Coupon{}, err
			}
			s.log.Warn("coupon: issuer state is behind SQL; counted the coupons it missed, taking again",
				"template", r.Template.ID, "user", r.UserID, "ordinal", c.Ordinal, "place", c.Place, "adopted", adopted)
			if adopted == 0 {
				if attempt == maxTakeAttempts {
					return Coupon{}, fmt.Errorf("coupon: ordinal or place still taken after %d attempts: %w", attempt, werr)
				}
				attempt++
			}
		default:
			s.giveBack(ctx, r)
			return Coupon{}, werr
		}
	}
}

// write inserts the coupon and calls the request's IssuedFunc, through tx.
func (r TakeRequest) write(ctx context.Context, tx bun.Tx, c Coupon) error {
	if err := insertCoupon(ctx, tx, c); err != nil {
		return err
	}
	if r.then != nil {
		if err := r.then(ctx, tx, c); err != nil {
			return &issuedFuncError{err: err}
		}
	}
	return nil
}

// issuedFuncError is an IssuedFunc's error: the transaction was rolled back before any
// commit was attempted, so the write certainly failed.
type issuedFuncError struct{ err error }

func (e *issuedFuncError) Error() string { return e.err.Error() }
func (e *issuedFuncError) Unwrap() error { return e.err }

// take asks the issuer, loading its state from SQL first when it has none.
func (s *Service) take(ctx context.Context, r TakeRequest) (Taken, error) {
	taken, err := s.issuer.Take(ctx, r)
	if !errors.Is(err, ErrNotLoaded) {
		return taken, err
	}
	if err := s.warm(ctx, r.Template); err != nil {
		return Taken{}, err
	}
	return s.issuer.Take(ctx, r)
}

// giveBack returns a take whose write failed. Its failure is logged, not returned: the
// caller's error is the write's, and a unit not given back means one coupon fewer issued,
// never one too many.
func (s *Service) giveBack(ctx context.Context, r TakeRequest) {
	if err := s.issuer.GiveBack(ctx, r); err != nil {
		s.log.Error("coupon: giving a take back failed; run Recount",
			"template", r.Template.ID, "request", r.RequestID, "err", err)
	}
}

// definitelyFailed reports whether a failed write certainly did not commit: the database
// answered with an error (SQLite always answers in-process), the IssuedFunc failed, or the
// template turned out to be another issuer's. Context and connection errors leave the
// outcome in doubt.
func (s *Service) definitelyFailed(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var me *mysql.MySQLError
	var fe *issuedFuncError
	return errors.As(err, &me) || errors.As(err, &fe) || errors.Is(err, ErrOtherIssuer) || sqlutil.IsSQLite(s.db)
}

// replayed returns the coupon an earlier call issued under r.RequestID, or
// ErrRequestConflict when that call was for another template or user.
func (s *Service) replayed(c Coupon, r TakeRequest, now time.Time) (Coupon, error) {
	if c.TemplateID != r.Template.ID || c.UserID != r.UserID {
		return Coupon{}, &IssueError{Err: ErrRequestConflict, TemplateID: r.Template.ID, UserID: r.UserID, RequestID: r.RequestID}
	}
	c.State = c.effectiveState(now)
	return c, nil
}

// warm loads the issuer's state for tpl from SQL unless another call just did. Loads are
// serialised in the process (so a burst of first issues loads once), except inside a
// caller's transaction, which must not wait on a lock the database cannot see.
func (s *Service) warm(ctx context.Context, tpl Template) error {
	if !sqlutil.IsTx(s.db) {
		s.warmMu.Lock()
		defer s.warmMu.Unlock()
	}
	if _, err := s.issuer.Taken(ctx, s.db, tpl.ID); !errors.Is(err, ErrNotLoaded) {
		return err
	}
	s.log.Info("coupon: loading issuer state from SQL", "template", tpl.ID)
	return s.load(ctx, tpl, true)
}

func (s *Service) load(ctx context.Context, tpl Template, onlyIfMissing bool) (err error) {
	start := time.Now()
	defer func() { s.observe(OpRecount, tpl.ID, start, err) }()
	rc, ok := s.issuer.(Recounter)
	if !ok {
		return fmt.Errorf("coupon: issuer %T reported ErrNotLoaded but does not implement Recounter", s.issuer)
	}
	return rc.Load(ctx, s.db, tpl, allHoldings(ctx, s.db, tpl.ID), onlyIfMissing)
}

// Recount replaces the issuer's state for the template with what SQL holds: the coupons
// durably issued, who holds which ordinal, under which request. It is how an issuer that
// keeps its count outside SQL (Redis) is resynchronised after an incident; Issue loads a
// missing state by itself. For an issuer that joins the transaction, whose count changes
// only with the coupons, it does nothing.
//
// A coupon taken before the recount but written after it is not counted until a take
// collides with its ordinal or place in SQL (see the package documentation): the total and
// the per-user limit hold regardless.
func (s *Service) Recount(ctx context.Context, templateID string) error {
	tpl, err := s.Template(ctx, templateID)
	if err != nil {
		return err
	}
	if _, ok := s.issuer.(Recounter); !ok || s.issuer.JoinsTx() {
		return nil
	}
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	return fail("recounting", s.load(ctx, tpl, false))
}

// Stats are a template's counts.
type Stats struct {
	// Taken is how many coupons the issuer has counted as issued.
	Taken int64
	// Issued is how many coupons are durably issued (rows in SQL); equal to Taken except
	// while writes are in flight or after an incident (see Recount).
	Issued int64
	// Reserved and Used count issued coupons in those states.
	Reserved int64
	Used     int64
}

// Stats returns the template's counts.
func (s *Service) Stats(ctx context.Context, templateID string) (Stats, error) {
	tpl, err := s.Template(ctx, templateID)
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	st.Taken, err = s.issuer.Taken(ctx, s.db, tpl.ID)
	if errors.Is(err, ErrNotLoaded) {
		if err = s.warm(ctx, tpl); err == nil {
			st.Taken, err = s.issuer.Taken(ctx, s.db, tpl.ID)
		}
	}
	if err != nil {
		return Stats{}, fail("counting", err)
	}
	var counts []struct {
		State string `bun:"state"`
		N     int64  `bun:"n"`
	}
	err = s.db.NewSelect().Model((*couponRow)(nil)).Column("state").ColumnExpr("COUNT(*) AS n").
		Where("template_id = ?", tpl.ID).Group("state").Scan(ctx, &counts)
	if err != nil {
		return Stats{}, fail("counting", err)
	}
	for _, c := range counts {
		st.Issued += c.N
		switch State(c.State) {
		case StateReserved:
			st.Reserved = c.N
		case StateUsed:
			st.Used = c.N
		}
	}
	return st, nil
}
