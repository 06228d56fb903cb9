package member

import (
	"context"
	"sync"
)

// addressGate lets one password check (login) or hash (sign-up) per client address run at
// a time in this process; the others from the same address wait their turn (or their
// context's end). See Service.takeTurn.
//
// A check holds one token of its address's budget of failed logins while it runs and
// gives it back if the password is right: that is what limits guesses sent at once like
// guesses sent one by one. But it also means that checks in flight count as failures
// until they end, so a crowd of right passwords from one address (an office behind one
// NAT, every login held up by a database stall and released together) would find the
// budget empty and be refused as "too many failed logins". With one check per address at
// a time, a process's checks in flight hold one token per address at most: a login with
// the right password is refused only when the address really has spent its budget (less
// one token per other instance checking for it at that moment). Checks are CPU-bound
// (bcrypt), so taking turns per address costs no throughput on a busy server.
type addressGate struct {
	mu sync.Mutex
	m  map[string]*turn // addresses with a check running or waiting
}

// turn is one address's place in the gate: a slot, and how many hold or wait for it.
type turn struct {
	slot  chan struct{}
	users int
}

// enter waits until no other check of addr runs in this process, and returns the
// function that ends this one; it fails only when ctx ends first.
func (g *addressGate) enter(ctx context.Context, addr string) (leave func(), err error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*turn{}
	}
	t := g.m[addr]
	if t == nil {
		t = &turn{slot: make(chan struct{}, 1)}
		g.m[addr] = t
	}
	t.users++
	g.mu.Unlock()
	forget := func() {
		g.mu.Lock()
		if t.users--; t.users == 0 {
			delete(g.m, addr)
		}
		g.mu.Unlock()
	}
	select {
	case t.slot <- struct{}{}:
		return func() { <-t.slot; forget() }, nil
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// takeTurn waits until no other bcrypt hash or comparison of the gate key runs in this
// process (addressGate; "" waits for none) and fewer than WithPasswordChecks run in all,
// and returns the function that ends this one's turn; it fails only when ctx ends first.
func (s *Service) takeTurn(ctx context.Context, key string) (leave func(), err error) {
	leaveKey := func() {}
	s.waiting.Add(1)
	if key != "" {
		leaveKey, err = s.checks.enter(ctx, key)
	}
	if err == nil {
		select {
		case s.work <- struct{}{}:
		case <-ctx.Done():
			leaveKey()
			err = ctx.Err()
		}
	}
	s.waiting.Add(-1)
	if err != nil {
		return nil, err
	}
	if s.workHook != nil {
		s.workHook()
	}
	return func() { <-s.work; leaveKey() }, nil
}
