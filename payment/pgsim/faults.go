package pgsim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/payment"
)

// Fault is a failure the simulator plays instead of answering normally.
type Fault int

// The faults. The first three leave the request unprocessed; the last two process it (an
// approval charges) and then fail to deliver the answer, as real PGs sometimes do.
const (
	// FaultNone: answer normally.
	FaultNone Fault = iota
	// FaultUnavailable: refuse before processing (HTTP 503): payment.ErrGatewayUnavailable.
	FaultUnavailable
	// FaultError: fail before processing (HTTP 500). The caller cannot tell that nothing was
	// processed: payment.ErrOutcomeUnknown.
	FaultError
	// FaultTimeout: hang, unprocessed, until the caller gives up (its context ends).
	FaultTimeout
	// FaultSlow: process, then hang until the caller gives up: a timeout after the charge.
	FaultSlow
	// FaultLostResponse: process, then lose the response (the connection is reset):
	// payment.ErrOutcomeUnknown.
	FaultLostResponse
)

// String names the fault.
func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultUnavailable:
		return "unavailable"
	case FaultError:
		return "error"
	case FaultTimeout:
		return "timeout"
	case FaultSlow:
		return "slow"
	case FaultLostResponse:
		return "lost-response"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// The simulator's failures, recognised by the HTTP server to answer in kind.
var (
	errUnavailable = fmt.Errorf("pgsim: 503 service unavailable: %w", payment.ErrGatewayUnavailable)
	errInternal    = fmt.Errorf("pgsim: 500 internal error: %w", payment.ErrOutcomeUnknown)
	errLost        = fmt.Errorf("pgsim: response lost: %w", payment.ErrOutcomeUnknown)
	errClosed      = errors.New("pgsim: simulator closed")
)

// pickFault chooses the fault for a call with idempotency key id ("" for none). s.mu is held.
func (s *Simulator) pickFault(id string) Fault {
	if q := s.injected[id]; id != "" && len(q) > 0 {
		if len(q) == 1 {
			delete(s.injected, id)
		} else {
			s.injected[id] = q[1:]
		}
		return q[0]
	}
	if s.fault != FaultNone {
		return s.fault
	}
	for f := FaultUnavailable; f <= FaultLostResponse; f++ {
		if r := s.faultRates[f]; r > 0 && s.rng.Float64() < r {
			return f
		}
	}
	return FaultNone
}

// before waits the latency, then plays the faults that leave the call unprocessed.
func (s *Simulator) before(ctx context.Context, f Fault) error {
	if s.latencyMax > 0 {
		s.mu.Lock()
		d := s.latencyMin + time.Duration(s.rng.Int64N(int64(s.latencyMax-s.latencyMin)+1))
		s.mu.Unlock()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("pgsim: %w", ctx.Err())
		case <-s.closed:
			return errClosed
		}
	}
	switch f {
	case FaultUnavailable:
		return errUnavailable
	case FaultError:
		return errInternal
	case FaultTimeout:
		return s.hang(ctx)
	}
	return ctx.Err()
}

// after plays the faults that lose the answer of a processed call.
func (s *Simulator) after(ctx context.Context, f Fault) error {
	switch f {
	case FaultSlow:
		return s.hang(ctx)
	case FaultLostResponse:
		return errLost
	}
	return nil
}

// hang blocks until the caller gives up or the simulator is closed.
func (s *Simulator) hang(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("pgsim: no answer before the caller gave up: %w", ctx.Err())
	case <-s.closed:
		return errClosed
	}
}
