package payment

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/observe"
)

// writeTimeout bounds the recording of a PG's answer after the caller's context has ended: the
// answer is recorded even when the caller stopped waiting for it.
const writeTimeout = 30 * time.Second

// Service records payments and drives them through a Gateway.
//
// It takes a *bun.DB, not a bun.IDB, and has no WithTx on purpose: every answer of the PG is
// recorded in a transaction of its own, and the PG is called outside any transaction, so that
// neither a crash nor a rollback of the caller's work can leave a charge at the PG without a
// record of it. The one write that joins a caller's transaction is Request, which records a
// payment before the PG is called (see Request and Submit). Call Pay and Submit after
// committing your own transaction, never from inside it (on SQLite with a single
// connection, calling them inside would wait forever).
type Service struct {
	db       *bun.DB
	gw       Gateway
	logger   *slog.Logger
	clock    func() time.Time
	observer Observer
	verifier WebhookVerifier
	// keyWindow is how long after its creation a payment or refund may be sent to the PG
	// again without asking the PG first (WithGatewayKeyWindow).
	keyWindow time.Duration
}

// Option configures a Service.
type Option func(*serviceSettings)

// serviceSettings is what the options of New fill.
type serviceSettings struct {
	option.Errors
	*Service
}

// WithLogger sets the logger (default: discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *serviceSettings) { option.NotNil(&s.Errors, &s.logger, "WithLogger", l) }
}

// WithClock sets the clock (default time.Now) that stamps records and ages payments for the
// Reconciler. It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *serviceSettings) { option.NotNil(&s.Errors, &s.clock, "WithClock", now) }
}

// WithObserver sets the Observer told of every transition and refund (default: none). It
// must not be nil.
func WithObserver(o Observer) Option {
	return func(s *serviceSettings) { option.NotNil(&s.Errors, &s.observer, "WithObserver", o) }
}

// WithWebhookVerifier sets what HandleWebhook verifies and decodes webhooks with: the
// Gateway's own signature scheme (pgsim.WebhookVerifier for the simulator). It must not be
// nil.
func WithWebhookVerifier(v WebhookVerifier) Option {
	return func(s *serviceSettings) { option.NotNil(&s.Errors, &s.verifier, "WithWebhookVerifier", v) }
}

// DefaultGatewayKeyWindow is the default of WithGatewayKeyWindow: well within the day real
// PGs keep their idempotency keys for (Stripe prunes them after 24 hours).
const DefaultGatewayKeyWindow = time.Hour

// WithGatewayKeyWindow sets how long after its creation a payment (or refund) still unsettled
// may be sent to the PG again on the strength of its idempotency key alone (default
// DefaultGatewayKeyWindow). It must be shorter than the time the PG keeps its keys: a PG
// takes a request repeated after it pruned the key for a new one, and charges (or refunds)
// again. An older payment is looked up first (Gateway.Status) and sent again only if the
// PG never saw it; an older refund is sent again only if the PG's refunded total shows it
// was not made. It must be positive.
func WithGatewayKeyWindow(d time.Duration) Option {
	return func(s *serviceSettings) { option.Positive(&s.Errors, &s.keyWindow, "WithGatewayKeyWindow", d) }
}

// New returns a Service storing payments in db (run CreateSchema first) and charging them
// through gw. Wrap gw with the resilient package for timeouts, retries, a circuit breaker and a
// bulkhead. An option given an invalid value (see each option) is refused with a
// *ValidationError naming it (ErrInvalidRequest), and no Service.
func New(db *bun.DB, gw Gateway, opts ...Option) (*Service, error) {
	if db == nil || gw == nil {
		return nil, errors.New("payment: New needs a database and a gateway")
	}
	s := &Service{
		db:        db,
		gw:        gw,
		logger:    slog.New(slog.DiscardHandler),
		clock:     time.Now,
		observer:  observe.Nop{},
		keyWindow: DefaultGatewayKeyWindow,
	}
	set := serviceSettings{Service: s}
	if err := option.Apply(&set, opts); err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	return s, nil
}

// now returns the clock's time as stored: UTC, to the microsecond.
func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// Pay charges a payment through the PG and returns it as recorded, with an error saying why it
// is not APPROVED:
//   - nil: APPROVED;
//   - a *DeclineError (ErrDeclined): DECLINED, final;
//   - ErrGatewayUnavailable: still REQUESTED, nothing was charged; call Pay again later with
//     the same request, or leave it to the Reconciler;
//   - ErrOutcomeUnknown (or the context's error): UNKNOWN, the PG may have charged it; a
//     repeated Pay, a webhook or the Reconciler will learn the PG's answer;
//   - ErrUnderReview: REVIEW, the PG's answer contradicts the record; a person must decide.
//
// Pay is Request in a transaction of its own, then Submit: it records the payment as
// REQUESTED and commits that, then calls the PG with the payment ID as its idempotency key,
// then records the answer. It is idempotent on PaymentID: calling it again with the same
// request returns a settled payment as it is, and asks the PG again (same key, so never a
// second charge) for one still REQUESTED or UNKNOWN — once the payment is older than the
// key window (WithGatewayKeyWindow), by looking it up (Gateway.Status) and sending it again
// only if the PG never saw it, since the PG may have pruned the key. The same PaymentID
// with a different request is refused with ErrPaymentIDReused.
func (s *Service) Pay(ctx context.Context, req PayRequest) (Payment, error) {
	p, created, err := s.request(ctx, s.db, req, takenAfter)
	if err != nil {
		return Payment{}, err
	}
	by := takingUp
	if created {
		// Recorded taken up (see request): committed before the call, it is visible to an
		// Attempt of the same request, which must not abandon it while this call is on the
		// way to the PG.
		by = recorder
	}
	return s.submit(ctx, p, by)
}

// Request records req as a REQUESTED payment through db, without calling the PG, and returns
// the payment as recorded. db is the caller's bun.Tx or a *bun.DB (a transaction of its own).
// In the caller's transaction, the record commits or rolls back with the caller's own work
// (say, the order's move to PAYING), so that one never commits without the other; it runs
// under a savepoint: a failure undoes only its own writes and leaves the transaction usable.
// Once db has committed, Submit charges the payment; if the caller dies first, the Reconciler
// submits it (a payment left REQUESTED is one the PG may never have seen).
//
// Request is idempotent on PaymentID: a payment already recorded with an equal request is
// returned as it is, whatever its state; the same PaymentID with a different request is
// refused with ErrPaymentIDReused. An invalid request is a *ValidationError
// (ErrInvalidRequest) and records nothing. The Observer is told of the creation once it is
// recorded: inside a caller's transaction, before the caller commits (which may still roll it
// back).
func (s *Service) Request(ctx context.Context, db bun.IDB, req PayRequest) (Payment, error) {
	p, _, err := s.request(ctx, db, req, untaken)
	return p, err
}

// RequestToAttempt is Request for the caller that will send the payment itself with
// AttemptRecorded once db has committed. The payment is recorded as taken up by that caller,
// in the same INSERT, so that its Attempt makes no write of its own before the PG call. Every
// other submitter (Submit, the Reconciler, another Attempt) takes it up again before it
// sends it, and the caller's AttemptRecorded then loses its abandonment to it, as Attempt's
// does.
func (s *Service) RequestToAttempt(ctx context.Context, db bun.IDB, req PayRequest) (Payment, error) {
	p, _, err := s.request(ctx, db, req, takenNow)
	return p, err
}

// recordAs is how request records a new payment: untaken, or taken up by its caller (its
// updated_at past its created_at, see takeUp), so that no other Attempt can abandon it.
type recordAs int

const (
	untaken recordAs = iota
	// takenAfter: created now, taken up a microsecond later (Pay, which sends it at once).
	takenAfter
	// takenNow: created a microsecond ago, taken up now (RequestToAttempt): its updated_at is
	// not past the time of the transaction recording it, so a reconciler's cutoff at that
	// time, if the caller dies before its Attempt, sees it as an untaken payment would be.
	takenNow
)

// request is Request, also reporting whether it recorded the payment (or found it recorded);
// as says how a new payment is recorded.
func (s *Service) request(ctx context.Context, db bun.IDB, req PayRequest, as recordAs) (Payment, bool, error) {
	if err := req.Validate(); err != nil {
		return Payment{}, false, err
	}
	now := s.now()
	p := Payment{
		ID: req.PaymentID, OrderID: req.OrderID, Amount: req.Amount, Currency: req.Currency,
		Method: req.Method, Token: req.Token, State: StateRequested, CreatedAt: now, UpdatedAt: now,
	}
	switch as {
	case takenAfter:
		p.UpdatedAt = now.Add(time.Microsecond)
	case takenNow:
		p.CreatedAt = now.Add(-time.Microsecond)
	}
	created, err := insertPayment(ctx, db, p)
	if err != nil {
		return Payment{}, false, err
	}
	if created {
		s.transitioned(Transition{PaymentID: p.ID, To: StateRequested, Cause: CauseCreated, At: now})
		return p, true, nil
	}
	// In a caller's transaction, a locking read sees the row that refused the insert even when
	// the transaction's snapshot is older than it.
	if p, err = loadPayment(ctx, db, req.PaymentID, sqlutil.IsTx(db)); err != nil {
		return Payment{}, false, err
	}
	if !p.matches(req) {
		return Payment{}, false, fmt.Errorf("%w: %q", ErrPaymentIDReused, req.PaymentID)
	}
	return p, false, nil
}

// Submit charges a payment recorded by Request through the PG and returns it as recorded,
// with Pay's outcomes; it is Pay for a payment already recorded. It first reads the payment as
// committed: one never recorded (its transaction rolled back, or has not committed yet) is
// ErrPaymentNotFound and the PG is not called; one recorded from a different request is
// ErrPaymentIDReused; a settled one is returned as it is. Otherwise it calls the PG with the
// payment ID as its idempotency key (so repeating Submit, or racing the Reconciler, never
// charges twice) and records the answer. Call it outside any transaction. An ABANDONED
// payment is settled for Submit: it is never sent to the PG again (ErrAbandoned).
func (s *Service) Submit(ctx context.Context, req PayRequest) (Payment, error) {
	p, err := s.recorded(ctx, req)
	if err != nil {
		return Payment{}, err
	}
	return s.submit(ctx, p, takingUp)
}

// Attempt is Submit for the caller that recorded the payment (Request) and would rather give
// it up than leave it waiting for the PG: when the PG was certainly not reached
// (ErrGatewayUnavailable: the circuit breaker open, the bulkhead full, the connection
// refused), the payment moves from REQUESTED to ABANDONED, final — nothing was charged and
// nothing will send it again — and Attempt returns it with an error matching ErrAbandoned
// (and ErrGatewayUnavailable, errcode.ErrUnavailable): pay again with a new payment ID. The
// move is a conditional update that loses to any other submitter (Submit, Pay, the
// Reconciler, another Attempt) that ever took the payment up, before or after Attempt read
// it (its call may still be on the way to the PG): then that one has it, the
// payment stays REQUESTED and the error is ErrGatewayUnavailable, as from Submit. So of an
// abandonment and another submission, exactly one happens. Its other outcomes are Submit's.
func (s *Service) Attempt(ctx context.Context, req PayRequest) (Payment, error) {
	p, err := s.recorded(ctx, req)
	if err != nil {
		return Payment{}, err
	}
	return s.submit(ctx, p, abandoner)
}

// AttemptRecorded is Attempt for the caller that recorded p with RequestToAttempt, p as that
// call returned it, once its transaction has committed. It reads the payment as committed, as
// Attempt does. When no other submitter has taken the payment up since p was recorded, the
// take-up recorded with p is this call's own, and it sends the payment without a write
// first. Otherwise it is Attempt. Give each p to one AttemptRecorded only: two of them would
// each take the other's call for none and could abandon the payment under it.
func (s *Service) AttemptRecorded(ctx context.Context, p Payment) (Payment, error) {
	stored, err := s.recorded(ctx, PayRequest{PaymentID: p.ID, OrderID: p.OrderID, Amount: p.Amount,
		Currency: p.Currency, Method: p.Method, Token: p.Token})
	if err != nil {
		return Payment{}, err
	}
	if stored.State == StateRequested && stored.UpdatedAt.After(stored.CreatedAt) && stored.UpdatedAt.Equal(p.UpdatedAt) {
		return s.submit(ctx, stored, markedAbandoner)
	}
	return s.submit(ctx, stored, abandoner)
}

// recorded reads the payment req recorded, as committed, refusing another request with its ID.
func (s *Service) recorded(ctx context.Context, req PayRequest) (Payment, error) {
	if err := req.Validate(); err != nil {
		return Payment{}, err
	}
	p, err := loadPayment(ctx, s.db, req.PaymentID, false)
	if err != nil {
		return Payment{}, err
	}
	if !p.matches(req) {
		return Payment{}, fmt.Errorf("%w: %q", ErrPaymentIDReused, req.PaymentID)
	}
	return p, nil
}

// submitter is who sends a payment to the PG, and so what it does about an Attempt that
// may abandon the payment.
type submitter int

const (
	// takingUp first takes a REQUESTED payment up (see takeUp), so that no Attempt
	// abandons it while it is with the PG.
	takingUp submitter = iota
	// recorder has just recorded the payment itself, taken up: no Attempt can abandon it.
	recorder
	// abandoner is Attempt: it abandons the payment when the PG was not reached, unless
	// someone took it up meanwhile.
	abandoner
	// markedAbandoner is AttemptRecorded on a payment still as its RequestToAttempt recorded
	// it: taken up by this caller (at its updated_at), it is an abandoner that took it up
	// first.
	markedAbandoner
)

// submit asks the PG to approve p, as recorded, unless it is settled. A payment older than
// the key window is looked up first (see resume): the PG may have pruned its key.
func (s *Service) submit(ctx context.Context, p Payment, by submitter) (Payment, error) {
	switch {
	case p.State.Settled():
		return p, p.result(nil)
	case s.keyMayBeGone(p.CreatedAt):
		return s.resume(ctx, p, CauseGateway, by)
	}
	return s.approve(ctx, p, CauseGateway, by)
}

// keyMayBeGone reports whether the PG may have pruned the idempotency key of a payment or
// refund created at created: the key was first sent no earlier than that.
func (s *Service) keyMayBeGone(created time.Time) bool {
	return s.now().Sub(created) >= s.keyWindow
}

// resume settles p, which is REQUESTED or UNKNOWN, without relying on the PG's idempotency
// key: it asks the PG (Gateway.Status) and records its answer, and sends the approval again
// only when the PG has never seen the payment. It returns Pay's outcomes.
func (s *Service) resume(ctx context.Context, p Payment, cause Cause, by submitter) (Payment, error) {
	st, err := s.gw.Status(ctx, p.ID)
	switch {
	case errors.Is(err, ErrNotAtGateway):
		// The PG never saw it (we died before calling, or the call never arrived).
		return s.approve(ctx, p, cause, by)
	case err != nil:
		s.logger.WarnContext(ctx, "payment: could not ask the gateway about a payment", "payment", p.ID, "err", err)
		if classify(err) == outcomeNone {
			return s.unreached(ctx, p, err, by, time.Time{})
		}
		return p, fmt.Errorf("%w: asking the gateway: %w", ErrOutcomeUnknown, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if p, err = s.recordStatus(wctx, p, st, cause); err != nil {
		return p, err
	}
	if !p.State.Settled() {
		return p, fmt.Errorf("%w: the gateway is still processing %q", ErrOutcomeUnknown, p.ID)
	}
	return p, p.result(nil)
}

// approve asks the PG to approve p, which is REQUESTED or UNKNOWN, and records the answer
// with cause; by says what it does about an Attempt abandoning p (see submitter).
func (s *Service) approve(ctx context.Context, p Payment, cause Cause, by submitter) (Payment, error) {
	var takenAt time.Time // when this Attempt took p up first (see takeUpFirst)
	switch by {
	case markedAbandoner:
		takenAt, by = p.UpdatedAt, abandoner
	case takingUp:
		var err error
		if p, err = s.takeUp(ctx, p); err != nil || p.State.Settled() {
			return p, cmp.Or(err, p.result(nil))
		}
	case abandoner:
		var (
			first bool
			err   error
		)
		if p, first, err = s.takeUpFirst(ctx, p); err != nil || p.State.Settled() {
			return p, cmp.Or(err, p.result(nil))
		}
		if first {
			takenAt = p.UpdatedAt
			break
		}
		// Another submitter (another Attempt included) took it up first and may have its
		// call on the way to the PG: this Attempt submits it as Submit does, taking it up
		// again, so that an Attempt that took it up before cannot abandon it under this
		// one's call either.
		by = takingUp
		if p, err = s.takeUp(ctx, p); err != nil || p.State.Settled() {
			return p, cmp.Or(err, p.result(nil))
		}
	}
	a, callErr := s.gw.Approve(ctx, p.approveRequest())
	// Record the answer even if ctx ended meanwhile: it may be the only trace of a charge.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	var err error
	switch classify(callErr) {
	case outcomeYes:
		p, err = s.settle(wctx, p, StateApproved, change{cause: cause, reference: truncate(a.Reference, 128)})
	case outcomeNo:
		d := declineOf(callErr)
		p, err = s.settle(wctx, p, StateDeclined, change{
			cause: cause, detail: truncate(d.Code, 255),
			declineCode: truncate(d.Code, 64), declineMessage: truncate(d.Message, 255),
		})
	case outcomeUnknown:
		s.logger.WarnContext(ctx, "payment: no answer from the gateway", "payment", p.ID, "err", callErr)
		p, err = s.settle(wctx, p, StateUnknown, change{cause: CauseNoAnswer, detail: truncate(callErr.Error(), 255)})
	case outcomeNone:
		s.logger.WarnContext(ctx, "payment: gateway unavailable", "payment", p.ID, "err", callErr)
		return s.unreached(wctx, p, callErr, by, takenAt)
	}
	if err != nil {
		return p, err
	}
	return p, p.result(callErr)
}

// unreached returns p, which the PG has not seen (callErr says why), with Pay's outcome;
// an abandoner first abandons it if it is still REQUESTED and no other submitter ever took
// it up: none at all, or, when the abandoner took it up first itself (at takenAt), none
// since.
func (s *Service) unreached(ctx context.Context, p Payment, callErr error, by submitter, takenAt time.Time) (Payment, error) {
	if by != abandoner || p.State != StateRequested {
		return p, p.result(callErr)
	}
	at, detail := s.now(), truncate(callErr.Error(), 255)
	if !at.After(p.UpdatedAt) { // a clock that stands still still moves it
		at = p.UpdatedAt.Add(time.Microsecond)
	}
	ch := change{cause: CauseAbandoned, detail: detail, untaken: true, takenAt: takenAt}
	ok, err := s.casState(ctx, p, StateAbandoned, ch, at)
	switch {
	case err != nil:
		return p, err
	case ok:
		s.transitioned(Transition{PaymentID: p.ID, From: p.State, To: StateAbandoned, Cause: CauseAbandoned, Detail: detail, At: at})
		p.State, p.UpdatedAt = StateAbandoned, at
		return p, p.result(callErr)
	}
	// Taken up (or settled) by another submitter: it is theirs.
	if p, err = loadPayment(ctx, s.db, p.ID, false); err != nil {
		return p, err
	}
	return p, p.result(callErr)
}

// takeUp marks p, if REQUESTED, as being submitted (a conditional update moving its
// updated_at past its created_at), so that no Attempt can abandon it any more, whenever it
// read it: of an abandonment and a submission, exactly one goes ahead. It returns p as it is then: one no longer REQUESTED
// (abandoned or settled meanwhile) is not to be sent.
func (s *Service) takeUp(ctx context.Context, p Payment) (Payment, error) {
	for p.State == StateRequested {
		at := s.now()
		if !at.After(p.UpdatedAt) { // a clock that stands still still moves it
			at = p.UpdatedAt.Add(time.Microsecond)
		}
		var n int64
		err := sqlutil.Retry(ctx, s.db, func(ctx context.Context) error {
			res, err := s.db.NewUpdate().Model((*paymentRow)(nil)).Set("updated_at = ?", at).
				Where("id = ?", p.ID).Where("state = ?", string(StateRequested)).Where("updated_at = ?", p.UpdatedAt).Exec(ctx)
			if err == nil {
				n, err = res.RowsAffected()
			}
			return err
		})
		if err != nil {
			return p, fmt.Errorf("payment: taking up %q: %w", p.ID, err)
		}
		if n == 1 {
			p.UpdatedAt = at
			return p, nil
		}
		if p, err = loadPayment(ctx, s.db, p.ID, false); err != nil {
			return p, err
		}
	}
	return p, nil
}

// takeUpFirst is takeUp for an Attempt: it takes p up only if no submitter ever did (its
// updated_at still its created_at), and reports whether it did. An Attempt that took p up
// first may abandon it (see unreached) unless another submitter takes it up after it; one
// that did not must not, as the submitter that did may have its call on the way to the PG.
// It returns p as it is then: one no longer REQUESTED is not to be sent.
func (s *Service) takeUpFirst(ctx context.Context, p Payment) (Payment, bool, error) {
	if p.State != StateRequested || !p.UpdatedAt.Equal(p.CreatedAt) {
		return p, false, nil
	}
	at := s.now()
	if !at.After(p.UpdatedAt) { // a clock that stands still still moves it
		at = p.UpdatedAt.Add(time.Microsecond)
	}
	var n int64
	err := sqlutil.Retry(ctx, s.db, func(ctx context.Context) error {
		res, err := s.db.NewUpdate().Model((*paymentRow)(nil)).Set("updated_at = ?", at).
			Where("id = ?", p.ID).Where("state = ?", string(StateRequested)).Where("updated_at = created_at").Exec(ctx)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return p, false, fmt.Errorf("payment: taking up %q: %w", p.ID, err)
	}
	if n == 1 {
		p.UpdatedAt = at
		return p, true, nil
	}
	p, err = loadPayment(ctx, s.db, p.ID, false)
	return p, false, err
}

// result is the error Pay returns for p as recorded; callErr is the gateway's error, if any.
func (p Payment) result(callErr error) error {
	switch p.State {
	case StateDeclined:
		return &DeclineError{Code: p.DeclineCode, Message: p.DeclineMessage}
	case StateUnknown:
		if callErr == nil || errors.Is(callErr, ErrOutcomeUnknown) {
			return cmp.Or(callErr, ErrOutcomeUnknown)
		}
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, callErr)
	case StateRequested:
		return cmp.Or(callErr, ErrGatewayUnavailable)
	case StateAbandoned:
		if callErr == nil {
			return fmt.Errorf("%w: %q", ErrAbandoned, p.ID)
		}
		return fmt.Errorf("%w: %q: %w", ErrAbandoned, p.ID, callErr)
	case StateReview:
		return fmt.Errorf("%w: %q", ErrUnderReview, p.ID)
	}
	return nil
}

// settle moves p to state to with ch, unless p is already there or past it. It reads p again
// and retries whenever the conditional update finds p moved meanwhile (a webhook, a retry or
// the reconciler settled it first), so exactly one of the racers makes the transition and
// the others return the payment as that one left it. A PG answer that contradicts the record
// (declined when it is APPROVED, approved when it is DECLINED) moves the payment to REVIEW
// (see review).
func (s *Service) settle(ctx context.Context, p Payment, to State, ch change) (Payment, error) {
	for {
		if to.Reaches(p.State) {
			return p, nil
		}
		if !p.State.CanTransitionTo(to) {
			return s.review(ctx, p, ch.cause, fmt.Sprintf("recorded %s, the gateway says %s", p.State, to))
		}
		at := s.now()
		ok, err := s.casState(ctx, p, to, ch, at)
		if err != nil {
			return p, err
		}
		if ok {
			from := p.State
			p.State, p.UpdatedAt = to, at
			if ch.reference != "" {
				p.PGReference = ch.reference
			}
			if to == StateDeclined {
				p.DeclineCode, p.DeclineMessage = ch.declineCode, ch.declineMessage
			}
			s.transitioned(Transition{PaymentID: p.ID, From: from, To: to, Cause: ch.cause, Detail: ch.detail, At: at})
			if from == StateAbandoned && to == StateApproved {
				p.RefundPending = p.Amount // recordVoid reserved it with the move
				p = s.void(ctx, p)
			}
			return p, nil
		}
		if p, err = loadPayment(ctx, s.db, p.ID, false); err != nil {
			return p, err
		}
	}
}

// review moves p to REVIEW because the PG's own answer contradicts the record (detail says
// how), logs it as an ERROR naming the payment, and tells the Observer. A payment in REVIEW
// is never settled automatically again: a person must decide (refund a charge the record
// declined, or accept a decline the record approved; ResolveReview gives back whatever the PG
// holds, by its record). It returns p as it is then.
func (s *Service) review(ctx context.Context, p Payment, cause Cause, detail string) (Payment, error) {
	for p.State != StateReview {
		at := s.now()
		ok, err := s.casState(ctx, p, StateReview, change{cause: cause, detail: truncate(detail, 255)}, at)
		if sqlutil.IsDuplicateKey(err) {
			// It was in REVIEW before, and ResolveReview took the PG's record then: a state
			// is entered once, so the PG contradicting it again is for a person, reported as
			// a conflict rather than failing as storage would.
			s.logger.ErrorContext(ctx, "payment: the gateway contradicts a resolved review; a person must settle it with the gateway",
				"payment", p.ID, "order", p.OrderID, "state", p.State, "detail", detail, "cause", cause)
			s.contradicted(p.ID, cause, detail)
			return p, fmt.Errorf("%w: %q left REVIEW once (ResolveReview) and cannot enter it again: %s", ErrUnresolvable, p.ID, detail)
		}
		if err != nil {
			return p, err
		}
		if ok {
			from := p.State
			p.State, p.UpdatedAt = StateReview, at
			s.logger.ErrorContext(ctx, "payment: the gateway contradicts the record; payment moved to REVIEW",
				"payment", p.ID, "order", p.OrderID, "from", from, "detail", detail, "cause", cause)
			s.transitioned(Transition{PaymentID: p.ID, From: from, To: StateReview, Cause: cause, Detail: detail, At: at})
			s.contradicted(p.ID, cause, detail)
			return p, nil
		}
		if p, err = loadPayment(ctx, s.db, p.ID, false); err != nil {
			return p, err
		}
	}
	return p, nil
}

// Ready returns nil unless the Gateway knows, without calling the PG, that a call would be
// refused now (it implements Readiness: a resilient.Gateway whose circuit breaker is open);
// then its error, which matches ErrGatewayUnavailable and errcode.ErrUnavailable and carries
// the breaker's remaining delay as its errcode.RetryAfter. A nil answer promises nothing:
// the call itself may still fail.
func (s *Service) Ready() error {
	if r, ok := s.gw.(Readiness); ok {
		return r.Ready()
	}
	return nil
}

// Get returns the payment with the ID, or ErrPaymentNotFound.
func (s *Service) Get(ctx context.Context, id string) (Payment, error) {
	return loadPayment(ctx, s.db, id, false)
}

// ByOrder returns the payments of an order, oldest first.
func (s *Service) ByOrder(ctx context.Context, orderID string) ([]Payment, error) {
	var rows []paymentRow
	if err := s.db.NewSelect().Model(&rows).Where("order_id = ?", orderID).Order("created_at", "id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("payment: reading payments of order %q: %w", orderID, sqlutil.Unavailable(s.db, err))
	}
	out := make([]Payment, 0, len(rows))
	for i := range rows {
		if rows[i].OrderID == orderID { // MySQL ignores trailing spaces
			out = append(out, rows[i].payment())
		}
	}
	return out, nil
}

// Transitions returns the history of a payment's state, oldest first, starting with its
// creation; ErrPaymentNotFound if there is no such payment.
func (s *Service) Transitions(ctx context.Context, paymentID string) ([]Transition, error) {
	var rows []transitionRow
	if err := s.db.NewSelect().Model(&rows).Where("payment_id = ?", paymentID).Order("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("payment: reading transitions of %q: %w", paymentID, sqlutil.Unavailable(s.db, err))
	}
	out := make([]Transition, 0, len(rows))
	for i := range rows {
		if rows[i].PaymentID == paymentID { // MySQL ignores trailing spaces
			out = append(out, rows[i].transition())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrPaymentNotFound, paymentID)
	}
	return out, nil
}

// Voided reports whether p is a payment that was abandoned (the PG not reached) and that the
// PG approved all the same, so that its charge is given back: the refund of all of it (its
// void) was recorded with the approval. Nothing may be fulfilled by such a payment, whatever
// its state says: APPROVED while the void is with the PG, REFUNDED once it is made. A payment
// in another state than these is not voided.
func (s *Service) Voided(ctx context.Context, p Payment) (bool, error) {
	if p.State != StateApproved && p.State != StatePartiallyRefunded && p.State != StateRefunded {
		return false, nil
	}
	_, err := s.GetRefund(ctx, voidRefundID(p.ID))
	if errors.Is(err, ErrRefundNotFound) {
		return false, nil
	}
	return err == nil, err
}

// void sends the refund recordVoid recorded for p, an abandoned payment the PG approved all
// the same, and returns p as it is then. A refund the PG does not settle now stays PENDING
// for the Reconciler, so its failure is only logged.
func (s *Service) void(ctx context.Context, p Payment) Payment {
	s.logger.WarnContext(ctx, "payment: the gateway approved an abandoned payment; refunding it", "payment", p.ID)
	r, err := s.GetRefund(ctx, voidRefundID(p.ID))
	if err == nil {
		p, err = s.sendRecorded(ctx, p, r)
	} else if now, gerr := s.Get(ctx, p.ID); gerr == nil {
		p = now
	}
	if err != nil {
		s.logger.WarnContext(ctx, "payment: refund of an abandoned payment not confirmed here; the reconciler sends it if it is still pending",
			"payment", p.ID, "err", err)
	}
	return p
}

// sendRecorded sends r, a refund the Service recorded itself with a move of its payment p
// (an abandoned payment's void, a review's give-back), if it is still PENDING, and returns p
// as it is then, with r's outcome (see Refund: ErrRefundRejected when the PG refused it).
// When p cannot be read back, it is returned as it was given, with the read's error
// (matching errcode.ErrUnavailable when the database failed) in place of r's outcome:
// never as if it were p as it is now.
func (s *Service) sendRecorded(ctx context.Context, p Payment, r Refund) (Payment, error) {
	var err error
	if r.State == RefundPending {
		r, err = s.completeRefund(ctx, r, false)
	} else {
		err = r.result(nil)
	}
	now, gerr := s.Get(ctx, p.ID)
	if gerr != nil {
		return p, fmt.Errorf("payment: reading %q back after its refund %q: %w", p.ID, r.ID, sqlutil.Unavailable(s.db, gerr))
	}
	return now, err
}
