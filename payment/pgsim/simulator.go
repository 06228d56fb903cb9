package pgsim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/payment"
)

// Card tokens that decide the outcome of an approval, for deterministic tests. Any other
// token is approved, unless the decline rate says otherwise.
const (
	// TokenDecline is declined with CodeCardDeclined.
	TokenDecline = "tok_decline"
	// TokenInsufficientFunds is declined with CodeInsufficientFunds.
	TokenInsufficientFunds = "tok_insufficient_funds"
)

// Decline codes of the simulator.
const (
	CodeCardDeclined        = "CARD_DECLINED"
	CodeInsufficientFunds   = "INSUFFICIENT_FUNDS"
	CodeDoNotHonor          = "DO_NOT_HONOR" // a random decline (WithDeclineRate)
	CodeInvalidRequest      = "INVALID_REQUEST"
	CodeIdempotencyConflict = "IDEMPOTENCY_CONFLICT" // same key, different request
	CodeNotCancelable       = "NOT_CANCELABLE"       // cancel of a payment not approved here
	CodeExceedsRemaining    = "EXCEEDS_REMAINING"    // cancel beyond what is left of the payment
)

// Simulator is an in-process payment gateway implementing payment.Gateway: idempotent per
// payment ID and per cancel ID like a real PG, with configurable latency, random declines and
// faults, faults scripted per call, webhooks signed with HMAC-SHA256, and counters of what it
// did (charges above all). NewHandler serves it over HTTP; Client is the matching adapter.
// It is safe for concurrent use. Call Close when done.
type Simulator struct {
	latencyMin, latencyMax time.Duration
	declineRate            float64
	faultRates             map[Fault]float64
	idempotent             bool
	keyRetention           time.Duration
	secret                 []byte
	deliver                func(ctx context.Context, body []byte, signature string) error
	deliveryAttempts       int
	clock                  func() time.Time
	logger                 *slog.Logger

	mu           sync.Mutex
	rng          *rand.Rand
	payments     map[string]*charge
	cancels      map[string]*cancellation
	approveCalls map[string]int
	charges      map[string]int
	stats        Stats
	fault        Fault
	injected     map[string][]Fault
	refSeq       int64

	inFlight  atomic.Int64
	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// charge is a payment as the PG recorded it.
type charge struct {
	req      payment.ApproveRequest
	keyAt    time.Time // when its idempotency key was first used
	ref      string
	declined *payment.DeclineError
	canceled int64
	made     []payment.GatewayCancel // the refunds that make up canceled, in order
}

// cancellation is a refund as the PG recorded it.
type cancellation struct {
	req      payment.CancelRequest
	keyAt    time.Time
	ref      string
	declined *payment.DeclineError
}

// Stats counts what a Simulator did.
type Stats struct {
	// ApproveCalls is how many Approve calls arrived, faulted ones included.
	ApproveCalls int
	// Charges is how many approvals were executed, i.e. how many times money was taken.
	Charges int
	// Declines is how many approvals were declined (replays not counted).
	Declines int
	// CancelCalls is how many Cancel calls arrived.
	CancelCalls int
	// Cancels is how many refunds were executed, and CanceledAmount their total.
	Cancels        int
	CanceledAmount int64
	// StatusCalls is how many Status calls arrived.
	StatusCalls int
}

// New returns a Simulator that approves everything at once until configured otherwise. An
// option given an invalid value is refused with an *errcode.InvalidError naming it, and no
// Simulator.
func New(opts ...Option) (*Simulator, error) {
	s := &Simulator{
		faultRates:       make(map[Fault]float64),
		idempotent:       true,
		secret:           []byte(DefaultWebhookSecret),
		deliveryAttempts: 3,
		clock:            time.Now,
		logger:           slog.New(slog.DiscardHandler),
		rng:              rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		payments:         make(map[string]*charge),
		cancels:          make(map[string]*cancellation),
		approveCalls:     make(map[string]int),
		charges:          make(map[string]int),
		injected:         make(map[string][]Fault),
		closed:           make(chan struct{}),
	}
	set := settings{Simulator: s}
	if err := option.Apply(&set, opts); err != nil {
		return nil, fmt.Errorf("pgsim: %w", err)
	}
	return s, nil
}

// Close releases every call hanging in a fault and waits for webhook deliveries to finish.
func (s *Simulator) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		close(s.closed)
	})
	s.wg.Wait()
}

// SetFault plays f on every call (Approve, Cancel, Status) until SetFault(FaultNone): the PG
// is down, erroring or hanging.
func (s *Simulator) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// InjectFault plays f on the next times Approve or Cancel calls whose idempotency key is id
// (a payment ID for Approve, a cancel ID for Cancel). It wins over SetFault and the rates.
func (s *Simulator) InjectFault(id string, f Fault, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range times {
		s.injected[id] = append(s.injected[id], f)
	}
}

// Stats returns the counters.
func (s *Simulator) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Charges returns how many times the payment was charged: 0 or 1 unless WithoutIdempotency.
func (s *Simulator) Charges(paymentID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.charges[paymentID]
}

// ApproveCalls returns how many Approve calls arrived for the payment.
func (s *Simulator) ApproveCalls(paymentID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.approveCalls[paymentID]
}

// InFlight returns how many calls are being served right now.
func (s *Simulator) InFlight() int { return int(s.inFlight.Load()) }

// Approve charges a payment, once per payment ID.
func (s *Simulator) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.mu.Lock()
	s.stats.ApproveCalls++
	s.approveCalls[req.PaymentID]++
	f := s.pickFault(req.PaymentID)
	s.mu.Unlock()

	if err := s.before(ctx, f); err != nil {
		return payment.Approval{}, err
	}
	a, err := s.approve(req)
	if ferr := s.after(ctx, f); ferr != nil {
		return payment.Approval{}, ferr
	}
	return a, err
}

func (s *Simulator) approve(req payment.ApproveRequest) (payment.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prior := s.payments[req.PaymentID]
	if prior != nil && s.kept(prior.keyAt) {
		if prior.req != req {
			return payment.Approval{}, &payment.DeclineError{Code: CodeIdempotencyConflict,
				Message: "payment ID already used for another request"}
		}
		return prior.result() // a replay: the first answer, no second charge, no new webhook
	}
	if req.PaymentID == "" || req.Amount <= 0 || len(req.Currency) != 3 {
		return payment.Approval{}, &payment.DeclineError{Code: CodeInvalidRequest, Message: "payment ID, amount and currency are required"}
	}
	c := &charge{req: req, keyAt: s.clock()}
	switch {
	case req.Token == TokenDecline:
		c.declined = &payment.DeclineError{Code: CodeCardDeclined, Message: "the card was declined"}
	case req.Token == TokenInsufficientFunds:
		c.declined = &payment.DeclineError{Code: CodeInsufficientFunds, Message: "insufficient funds"}
	case s.declineRate > 0 && s.rng.Float64() < s.declineRate:
		c.declined = &payment.DeclineError{Code: CodeDoNotHonor, Message: "do not honor"}
	default:
		s.refSeq++
		c.ref = fmt.Sprintf("pgsim-pay-%d", s.refSeq)
		s.stats.Charges++
		s.charges[req.PaymentID]++
	}
	if c.declined != nil {
		s.stats.Declines++
	}
	s.payments[req.PaymentID] = c
	s.notify(c.event())
	return c.result()
}

// kept reports whether an idempotency key first used at t still deduplicates. s.mu is held.
func (s *Simulator) kept(t time.Time) bool {
	return s.idempotent && (s.keyRetention == 0 || s.clock().Sub(t) < s.keyRetention)
}

func (c *charge) result() (payment.Approval, error) {
	if c.declined != nil {
		d := *c.declined
		return payment.Approval{}, &d
	}
	return payment.Approval{Reference: c.ref}, nil
}

// Cancel refunds (part of) an approved payment, once per cancel ID.
func (s *Simulator) Cancel(ctx context.Context, req payment.CancelRequest) (payment.Cancellation, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.mu.Lock()
	s.stats.CancelCalls++
	f := s.pickFault(req.CancelID)
	s.mu.Unlock()

	if err := s.before(ctx, f); err != nil {
		return payment.Cancellation{}, err
	}
	c, err := s.cancel(req)
	if ferr := s.after(ctx, f); ferr != nil {
		return payment.Cancellation{}, ferr
	}
	return c, err
}

func (s *Simulator) cancel(req payment.CancelRequest) (payment.Cancellation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cancels[req.CancelID]; ok && s.kept(c.keyAt) {
		if c.req.PaymentID != req.PaymentID || c.req.Amount != req.Amount {
			return payment.Cancellation{}, &payment.DeclineError{Code: CodeIdempotencyConflict,
				Message: "cancel ID already used for another request"}
		}
		return c.result()
	}
	if req.CancelID == "" || req.Amount <= 0 {
		return payment.Cancellation{}, &payment.DeclineError{Code: CodeInvalidRequest, Message: "cancel ID and a positive amount are required"}
	}
	c := &cancellation{req: req, keyAt: s.clock()}
	p, ok := s.payments[req.PaymentID]
	switch {
	case !ok || p.declined != nil:
		c.declined = &payment.DeclineError{Code: CodeNotCancelable, Message: "no approved payment " + req.PaymentID}
	case req.Amount > p.req.Amount-p.canceled:
		c.declined = &payment.DeclineError{Code: CodeExceedsRemaining,
			Message: fmt.Sprintf("%d exceeds the %d left", req.Amount, p.req.Amount-p.canceled)}
	default:
		s.refSeq++
		c.ref = fmt.Sprintf("pgsim-cancel-%d", s.refSeq)
		p.canceled += req.Amount
		p.made = append(p.made, payment.GatewayCancel{CancelID: req.CancelID, Amount: req.Amount, Reference: c.ref})
		s.stats.Cancels++
		s.stats.CanceledAmount += req.Amount
		s.notify(cancelEvent(p, c))
	}
	s.cancels[req.CancelID] = c
	return c.result()
}

func (c *cancellation) result() (payment.Cancellation, error) {
	if c.declined != nil {
		d := *c.declined
		return payment.Cancellation{}, &d
	}
	return payment.Cancellation{Reference: c.ref}, nil
}

// Status returns what the simulator knows of a payment, or payment.ErrNotAtGateway.
func (s *Simulator) Status(ctx context.Context, paymentID string) (payment.GatewayPayment, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.mu.Lock()
	s.stats.StatusCalls++
	f := s.pickFault("")
	s.mu.Unlock()

	if err := s.before(ctx, f); err != nil {
		return payment.GatewayPayment{}, err
	}
	s.mu.Lock()
	c, ok := s.payments[paymentID]
	var gp payment.GatewayPayment
	if ok {
		gp = c.status()
	}
	s.mu.Unlock()
	if err := s.after(ctx, f); err != nil {
		return payment.GatewayPayment{}, err
	}
	if !ok {
		return payment.GatewayPayment{}, fmt.Errorf("pgsim: %w: %q", payment.ErrNotAtGateway, paymentID)
	}
	return gp, nil
}

func (c *charge) status() payment.GatewayPayment {
	gp := payment.GatewayPayment{
		PaymentID: c.req.PaymentID, State: payment.GatewayApproved, Amount: c.req.Amount,
		Currency: c.req.Currency, Reference: c.ref, Canceled: c.canceled,
		// Listed even when there are none: nil would say the PG does not list its refunds.
		Cancels: append([]payment.GatewayCancel{}, c.made...),
	}
	if c.declined != nil {
		gp.State, gp.DeclineCode, gp.DeclineMessage = payment.GatewayDeclined, c.declined.Code, c.declined.Message
	}
	return gp
}

// CodeReversed is the decline code of a payment Overturn turned from approved to declined.
const CodeReversed = "REVERSED"

// Overturn changes the simulator's record of a payment to the opposite outcome, as a PG that
// reverses its answer (a fraud reversal, a bug at the PG) would: an approved payment becomes
// declined with CodeReversed, a declined one approved (and counted as charged). It sends no
// webhook (Webhook then signs the new outcome). For tests of records the PG contradicts; it
// returns payment.ErrNotAtGateway for a payment the simulator never saw.
func (s *Simulator) Overturn(paymentID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.payments[paymentID]
	if !ok {
		return fmt.Errorf("pgsim: %w: %q", payment.ErrNotAtGateway, paymentID)
	}
	if c.declined == nil {
		c.declined, c.ref = &payment.DeclineError{Code: CodeReversed, Message: "the approval was reversed"}, ""
		return nil
	}
	s.refSeq++
	c.declined, c.ref = nil, fmt.Sprintf("pgsim-pay-%d", s.refSeq)
	s.stats.Charges++
	s.charges[paymentID]++
	return nil
}
