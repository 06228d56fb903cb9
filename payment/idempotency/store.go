package idempotency

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/observe"
)

// Store keeps idempotency keys in a Backend. It is safe for concurrent use; all its state is
// in the backend, so any number of processes may share one.
type Store struct {
	backend     Backend
	retention   time.Duration
	lockTimeout time.Duration
	clock       func() time.Time
	logger      *slog.Logger
	observer    Observer
	bg          *background
}

// New returns a Store on b. It fails with an *InvalidError naming the option when an
// option is given an invalid value (lock timeout not positive, retention not above the lock
// timeout, a nil clock, logger or observer).
func New(b Backend, opts ...Option) (*Store, error) {
	s := &Store{
		backend:     b,
		retention:   DefaultRetention,
		lockTimeout: DefaultLockTimeout,
		clock:       time.Now,
		logger:      slog.New(slog.DiscardHandler),
		observer:    observe.Nop{},
		bg:          newBackground(),
	}
	set := settings{Store: s}
	optErr := option.Apply(&set, opts)
	switch {
	case b == nil:
		return nil, &InvalidError{Field: "backend", Reason: "nil"}
	case optErr != nil:
		return nil, optErr
	case s.retention <= s.lockTimeout:
		return nil, &InvalidError{Field: "WithRetention", Reason: fmt.Sprintf("%v is not longer than the lock timeout %v", s.retention, s.lockTimeout)}
	}
	return s, nil
}

// WithBackend returns a copy of s, with the same options, on another backend — typically
// the same SQL backend bound to the caller's transaction, so a Complete commits or rolls
// back with the caller's own writes:
//
//	store.WithBackend(sqlBackend.WithTx(tx)).Complete(ctx, claim, resp)
//
// Claim on a store bound to a transaction is rarely what you want: concurrent requests do
// not see the claim until the transaction commits.
func (s *Store) WithBackend(b Backend) *Store {
	c := *s
	c.backend = b
	return &c
}

// JoinsTx reports whether the backend can run in the caller's SQL transaction.
func (s *Store) JoinsTx() bool { return s.backend.JoinsTx() }

// LockTimeout returns how long a claim holds its key.
func (s *Store) LockTimeout() time.Duration { return s.lockTimeout }

// Claim is the outcome of Store.Claim: either a replay (Replayed, with the stored
// Response), or a held claim the caller must finish with Complete or Release.
type Claim struct {
	Ref
	// Replayed is true when the key already holds the final response of the same request;
	// Response is that response and there is nothing to run or finish.
	Replayed bool
	Response Response
	// Token fences the claim: Complete and Release present it. Empty when Replayed.
	Token string
	// LockedUntil is when the claim expires and may be taken over by a retry.
	LockedUntil time.Time
	// TookOver is true when the claim took the key over from a request whose lock expired.
	TookOver bool
}

// Claim starts an idempotent request — the low-level step that Do wraps, for callers that
// must complete inside their own transaction. It returns:
//   - a Claim with Replayed set, when the key holds the final response of a request with
//     the same fingerprint;
//   - a held Claim, when the key is free, expired, or held by a crashed request (lock
//     expired) with the same fingerprint; the caller runs the request and then calls
//     Complete or Release;
//   - a *KeyError matching ErrKeyReused when the key is bound to another fingerprint
//     (whether that request is running or done), or ErrInProgress when the first request
//     still holds its lock;
//   - an *InvalidError for a malformed scope, key or fingerprint.
func (s *Store) Claim(ctx context.Context, scope, key string, fp Fingerprint) (Claim, error) {
	return s.claim(ctx, scope, key, fp, s.report)
}

// claim is Claim, telling report of its outcome: s.report for a request's claim, nothing
// for the claim Do makes only to store the response of a request whose claim's record was
// lost (that request was told of already).
func (s *Store) claim(ctx context.Context, scope, key string, fp Fingerprint, report func(Event)) (Claim, error) {
	ref := Ref{Scope: scope, Key: key}
	if err := validate(ref, fp); err != nil {
		return Claim{}, err
	}
	now := s.now()
	q := ClaimRequest{
		Ref: ref, Fingerprint: fp, Token: rand.Text(),
		Now: now, LockedUntil: now.Add(s.lockTimeout), ExpiresAt: now.Add(s.retention),
	}
	outcome, rec, err := s.backend.Claim(ctx, q)
	if err != nil {
		if errors.Is(err, errcode.ErrUnavailable) {
			// The claim may still have been stored (a reply lost, or a command that a
			// stalled server runs later): abandon it, or its key would answer
			// ErrInProgress until the lock timeout for a request that never ran.
			c := Claim{Ref: ref, Token: q.Token}
			s.retryLater(ctx, c, "abandoning a claim of unknown outcome", false, func(ctx context.Context) error {
				if err := s.backend.Release(ctx, ref, q.Token); err != nil && !errors.Is(err, ErrLockLost) {
					return err
				}
				return nil
			})
		}
		return Claim{}, err
	}
	switch {
	case outcome == ClaimCreated:
		report(EventClaimed)
		return Claim{Ref: ref, Token: q.Token, LockedUntil: q.LockedUntil}, nil
	case outcome == ClaimTakenOver:
		report(EventTakenOver)
		s.logger.InfoContext(ctx, "idempotency: took over the key of a request whose lock expired", "scope", scope, "key", key)
		return Claim{Ref: ref, Token: q.Token, LockedUntil: q.LockedUntil, TookOver: true}, nil
	case outcome != ClaimExists || rec == nil:
		return Claim{}, fmt.Errorf("idempotency: backend %T returned outcome %d without a record", s.backend, outcome)
	case rec.Fingerprint != fp:
		report(EventKeyReused)
		return Claim{}, &KeyError{Scope: scope, Key: key, Err: ErrKeyReused}
	case rec.Done:
		report(EventReplayed)
		return Claim{Ref: ref, Replayed: true, Response: rec.Response}, nil
	default:
		report(EventInProgress)
		return Claim{}, &KeyError{Scope: scope, Key: key, Err: ErrInProgress, LockedUntil: rec.LockedUntil}
	}
}

// Complete stores resp as the final response of c, to be replayed to every later request
// with the same key and fingerprint for the retention period. It is idempotent: completing
// c again with the same response (a retry after a lost reply) succeeds and changes
// nothing. It returns a *KeyError matching ErrLockLost when c no longer holds the key (its
// lock expired and another request took over, it was released, or it was completed with
// another response): then nothing is stored.
func (s *Store) Complete(ctx context.Context, c Claim, resp Response) error {
	if err := checkHeld(c); err != nil {
		return err
	}
	if err := resp.validate(); err != nil {
		return err
	}
	now := s.now()
	err := s.backend.Complete(ctx, CompleteRequest{Ref: c.Ref, Token: c.Token, Response: resp, Now: now, ExpiresAt: now.Add(s.retention)})
	if err != nil {
		return s.fenced(ctx, c, "complete", err)
	}
	s.report(EventCompleted)
	return nil
}

// Release gives c up without a response, so the key is free at once: the next request with
// it runs, whatever its fingerprint. Use it for failures after which the client should
// retry (nothing happened, or it is safe to run again). It returns a *KeyError matching
// ErrLockLost when c no longer holds the key.
func (s *Store) Release(ctx context.Context, c Claim) error {
	if err := checkHeld(c); err != nil {
		return err
	}
	if err := s.backend.Release(ctx, c.Ref, c.Token); err != nil {
		return s.fenced(ctx, c, "release", err)
	}
	s.report(EventReleased)
	return nil
}

// Purge deletes the records whose retention has passed and returns how many. Expired
// records are ignored whether or not they are purged; purging only reclaims space. The
// Redis backend lets Redis expire keys by itself and always returns 0.
func (s *Store) Purge(ctx context.Context) (int64, error) {
	return s.backend.Purge(ctx, s.now())
}

// RunPurger purges at once and then every interval (real time) until ctx is cancelled, and
// returns ctx's error. A failed purge is logged and retried at the next tick.
func (s *Store) RunPurger(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		return &InvalidError{Field: "interval", Reason: fmt.Sprintf("%v is not positive", every)}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.Purge(ctx); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "idempotency: purge failed", "error", err)
		} else if n > 0 {
			s.logger.DebugContext(ctx, "idempotency: purged expired keys", "count", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Store) now() time.Time { return s.clock().UTC() }

func checkHeld(c Claim) error {
	if c.Replayed || c.Token == "" {
		return &InvalidError{Field: "claim", Reason: "holds no lock (a replay, or the zero Claim)"}
	}
	return nil
}

// fenced turns a backend's ErrLockLost into a *KeyError; other errors pass as they are.
func (s *Store) fenced(ctx context.Context, c Claim, op string, err error) error {
	if !errors.Is(err, ErrLockLost) {
		return err
	}
	s.report(EventLockLost)
	s.logger.WarnContext(ctx, "idempotency: "+op+" refused, the claim is no longer held", "scope", c.Scope, "key", c.Key)
	return &KeyError{Scope: c.Scope, Key: c.Key, Err: ErrLockLost}
}
