package member_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/member"
)

// TestCallsDuringAnOutage: with the database server down (the SQL denylist's too), every
// call of the member Service fails with an error matching errcode.ErrUnavailable, so that a
// caller of the library can tell "retry later" from a bug or a business answer (a login
// refused, a token taken for revoked).
func TestCallsDuringAnOutage(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, _, _ := testenv.LinkedMySQLAt(t, dsn)
	require.NoError(t, member.CreateSchema(ctx, db))
	svc := testkit.Must(member.New(db, member.NewSQLDenylist(db, nil), secret, member.WithBcryptCost(bcrypt.MinCost)))(t)
	_, err := svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	tok, err := svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
	require.NoError(t, err)

	server.Stop(t, 0)
	calls := map[string]func() error{
		"SignUp":                 func() error { _, err := svc.SignUp(ctx, "bob", "correct horse"); return err },
		"SignUpOnce":             func() error { _, err := svc.SignUpOnce(ctx, "bob", "correct horse", "k", "10.0.0.2"); return err },
		"Login":                  func() error { _, err := svc.Login(ctx, "alice", "correct horse", "10.0.0.1"); return err },
		"Refresh":                func() error { _, err := svc.Refresh(ctx, tok.RefreshToken); return err },
		"RefreshOnce":            func() error { _, err := svc.RefreshOnce(ctx, tok.RefreshToken, "r"); return err },
		"Logout":                 func() error { return svc.Logout(ctx, "jti-1", "", time.Now().Add(time.Hour)) },
		"Revoke":                 func() error { return svc.Revoke(ctx, tok.RefreshToken) },
		"Revoke (unknown token)": func() error { return svc.Revoke(ctx, "no-such-token") },
		"Revoked":                func() error { _, err := svc.Revoked(ctx, "jti-1"); return err },
	}
	testkit.AllUnavailable(t, calls)
}
