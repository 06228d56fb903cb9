package idempotency

import (
	"context"
	"time"
)

// Func runs the request guarded by a key. Its two results are the caller's explicit choice
// of what happens to the key:
//   - (resp, nil): resp is the FINAL response, stored and replayed byte for byte to every
//     retry. Business failures belong here, as a Response with an ErrorCode (a declined
//     card, insufficient points): a retry must not charge again, it must see the same
//     decline.
//   - (_, err): a TRANSIENT failure; nothing is stored and the claim is released, so the
//     client may retry with the same key and the request runs again. Return an error for
//     context cancellation, timeouts, "PG unavailable, retry later" and validation failures
//     that happened before any effect — anything after which running again is correct.
//
// fn must be safe to run again after a crash: a process that dies between fn's effects
// and the stored response leaves a claim that a retry takes over after the lock timeout,
// and runs fn again (the payment ID must therefore be the PG's own idempotency key).
type Func func(ctx context.Context) (Response, error)

// finishTimeout bounds storing or releasing a claim once fn has returned.
const finishTimeout = 10 * time.Second

// Do runs fn at most once per (scope, key) among concurrent and repeated requests, with
// Stripe's semantics:
//   - first request: fn runs and Do returns its response with replayed = false;
//   - same key and fingerprint after completion: the stored response, replayed = true,
//     without running fn (business failures included, see Func);
//   - different fingerprint: a *KeyError matching ErrKeyReused, also while the first
//     request still runs (a retry will not fix it, so not 409);
//   - first request still running: a *KeyError matching ErrInProgress;
//   - first request crashed (claimed, never finished): ErrInProgress until its lock
//     timeout, then the next request with the same fingerprint takes the key over and runs.
//
// fn's context is the caller's, with a deadline at most the lock timeout after the claim,
// so fn stops before another request may take its key over. When fn returns an error, Do
// releases the claim and returns that error unchanged. When fn panics, Do releases the
// claim and the panic continues. When the claim was lost while fn ran (fenced: its lock
// expired and another request took over), Do returns a *KeyError matching ErrLockLost and
// fn's response is not stored; the request that took over answers for the key. When
// storing the response fails otherwise (the backend is unreachable), Do returns that error;
// the claim then expires with its lock and a retry runs fn again.
func (s *Store) Do(ctx context.Context, scope, key string, fp Fingerprint, fn Func) (resp Response, replayed bool, err error) {
	if fn == nil {
		return Response{}, false, &InvalidError{Field: "fn", Reason: "nil"}
	}
	start := time.Now() // before the claim, so fn's deadline is no later than the lock's
	c, err := s.Claim(ctx, scope, key, fp)
	if err != nil {
		return Response{}, false, err
	}
	if c.Replayed {
		return c.Response, true, nil
	}

	finished := false
	defer func() {
		if !finished { // fn panicked: free the key, let the panic go on
			s.releaseDetached(ctx, c)
		}
	}()
	fnCtx, cancel := context.WithDeadline(ctx, start.Add(s.lockTimeout))
	defer cancel()
	resp, err = fn(fnCtx)
	finished = true

	if err == nil {
		err = resp.validate()
	}
	if err != nil {
		s.releaseDetached(ctx, c)
		return Response{}, false, err
	}
	dctx, dcancel := detached(ctx)
	defer dcancel()
	if err := s.Complete(dctx, c, resp); err != nil {
		return Response{}, false, err
	}
	return resp, false, nil
}

// releaseDetached releases c on a detached context. A failure is only logged: the claim
// then expires with its lock.
func (s *Store) releaseDetached(ctx context.Context, c Claim) {
	dctx, cancel := detached(ctx)
	defer cancel()
	if err := s.Release(dctx, c); err != nil {
		s.logger.WarnContext(ctx, "idempotency: releasing a claim failed; it expires with its lock", "scope", c.Scope, "key", c.Key, "error", err)
	}
}

// detached returns a context with ctx's values but not its cancellation, bounded by
// finishTimeout: storing or releasing a claim once fn has returned must not be lost to a
// cancellation that arrives after fn.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
}
