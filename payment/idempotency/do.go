package idempotency

import (
	"context"
	"errors"
	"time"

	"github.com/commercekit/commercekit/errcode"
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
// expired and another request took over) and that request still holds the key (running
// within its lock, or done), Do returns a *KeyError matching ErrLockLost and fn's response
// is not stored; that request answers for the key. When nobody holds the key any more —
// the claim's record is merely gone (a backend that lost its data, as a Redis restarted
// without persistence does), or the request that took over released the key or let its
// own lock expire too — Do claims it again, stores fn's response and returns it. That
// second claim is no request of its own: the Observer is told of its completion, never of
// the claim or of its refusal.
//
// Do never reports work it did as failed: when storing fn's response fails because the
// backend is unavailable (errcode.ErrUnavailable), Do still returns the response — it is
// the true outcome — and keeps storing it in the background (completion is idempotent, so
// trying again is safe) until it is stored or the claim's lock expires; meanwhile a retry
// with the key gets ErrInProgress, then the stored response. A backend that comes back
// without the claim's record gets the response under a new claim, as above, unless a
// retry claimed the freed key first: that retry then runs fn again and answers for the
// key. A release that fails the same
// way is retried in the background too, so the key is freed as soon as the backend is back;
// and when fn itself fails with errcode.ErrUnavailable, the claim is released in the
// background from the start, so the answer does not wait for another timeout.
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
	switch {
	case errors.Is(err, errcode.ErrUnavailable):
		// A dependency is down, quite likely the backend too: answer at once and free the
		// key in the background rather than wait for another timeout.
		s.retryLater(ctx, c, "releasing the claim", true, func(ctx context.Context) error { return s.Release(ctx, c) })
		return Response{}, false, err
	case err != nil:
		s.releaseDetached(ctx, c)
		return Response{}, false, err
	}
	if err := s.store(ctx, c, fp, resp); err != nil {
		return Response{}, false, err
	}
	return resp, false, nil
}

// store completes c with resp. When c was fenced and no other request holds the key
// (running, or done with its own response), the record is gone: it claims the key again
// and stores resp under the new claim. While the backend is unavailable it keeps trying in
// the background, the new claim included, and returns nil: the response is the true
// outcome all the same. Otherwise it returns the first fencing error (a *KeyError
// matching ErrLockLost) or the backend's error.
func (s *Store) store(ctx context.Context, c Claim, fp Fingerprint, resp Response) error {
	cur := c // the claim resp is stored under: c, or the new one once c's record was gone
	op := func(ctx context.Context) error {
		err := s.Complete(ctx, cur, resp)
		if !errors.Is(err, ErrLockLost) || cur.Token != c.Token {
			return err
		}
		again, cerr := s.claim(ctx, c.Scope, c.Key, fp, func(Event) {}) // no request of its own: told nothing
		switch {
		case errors.Is(cerr, errcode.ErrUnavailable):
			return cerr // claim again when the backend is back
		case cerr != nil || again.Replayed:
			return err
		}
		s.logger.WarnContext(ctx, "idempotency: the claim's record was gone; storing the response under a new claim", "scope", c.Scope, "key", c.Key)
		cur = again
		return s.Complete(ctx, cur, resp)
	}
	dctx, dcancel := detached(ctx)
	defer dcancel()
	err := op(dctx)
	if errors.Is(err, errcode.ErrUnavailable) {
		s.retryLater(ctx, c, "storing the response", false, op)
		return nil
	}
	return err
}

// releaseDetached releases c on a detached context; when the backend is unavailable it
// keeps trying in the background. Any other failure is only logged: the claim then
// expires with its lock.
func (s *Store) releaseDetached(ctx context.Context, c Claim) {
	dctx, cancel := detached(ctx)
	defer cancel()
	err := s.Release(dctx, c)
	switch {
	case errors.Is(err, errcode.ErrUnavailable):
		s.retryLater(ctx, c, "releasing the claim", false, func(ctx context.Context) error { return s.Release(ctx, c) })
	case err != nil:
		s.logger.WarnContext(ctx, "idempotency: releasing a claim failed; it expires with its lock", "scope", c.Scope, "key", c.Key, "error", err)
	}
}

// detached returns a context with ctx's values but not its cancellation, bounded by
// finishTimeout: storing or releasing a claim once fn has returned must not be lost to a
// cancellation that arrives after fn.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
}
