package testkit

import (
	"context"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
)

// ErrConnReset is how FailStatement fails a statement: its connection reset, as when the
// database server goes away (it matches syscall.ECONNRESET).
var ErrConnReset error = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

// FailStatement is a bun query hook (db.WithQueryHook) that, once armed, fails one
// statement with ErrConnReset: the nth (from 1) of those whose text contains every one of
// its matches. The statement never reaches the database: database/sql answers a statement
// whose context is done with the context's error, and the hook gives it a context done
// with ErrConnReset. It works alike on every database, in a transaction or out of one.
type FailStatement struct {
	mu      sync.Mutex
	match   []string
	n, seen int
	failed  string
}

// Arm makes f fail the nth statement containing every one of match from now on.
func (f *FailStatement) Arm(n int, match ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.match, f.n, f.seen, f.failed = match, n, 0, ""
}

// Disarm stops failing statements and returns the one failed since Arm ("" for none).
func (f *FailStatement) Disarm() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.match = nil
	return f.failed
}

// BeforeQuery implements bun.QueryHook.
func (f *FailStatement) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.match == nil || f.failed != "" {
		return ctx
	}
	for _, m := range f.match {
		if !strings.Contains(e.Query, m) {
			return ctx
		}
	}
	if f.seen++; f.seen != f.n {
		return ctx
	}
	f.failed = e.Query
	return resetCtx{ctx}
}

// AfterQuery implements bun.QueryHook.
func (f *FailStatement) AfterQuery(context.Context, *bun.QueryEvent) {}

// resetCtx is a context done with ErrConnReset.
type resetCtx struct{ context.Context }

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (resetCtx) Done() <-chan struct{} { return closedChan }
func (resetCtx) Err() error            { return ErrConnReset }

// RequireConnReset checks that err is the failure of a statement FailStatement or
// FaultySQLite failed: ErrConnReset, classified as a dependency failure
// (errcode.ErrUnavailable), and none of the business answers not.
func RequireConnReset(t testing.TB, err error, not ...error) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	require.ErrorIs(t, err, ErrConnReset)
	for _, business := range not {
		require.NotErrorIs(t, err, business)
	}
}
