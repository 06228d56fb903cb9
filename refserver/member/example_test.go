package member_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A member signs up and logs in; each refresh token trades once for a new pair, and a
// refresh token presented twice revokes the whole session, its access tokens included.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:member-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := member.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	secret := []byte("example secret of 32 bytes or more, never a real one")
	svc, err := member.New(db, member.NewSQLDenylist(db, time.Now), secret, member.WithBcryptCost(bcrypt.MinCost))
	if err != nil {
		panic(err)
	}

	if _, err := svc.SignUp(ctx, "kim", "correct horse battery"); err != nil {
		panic(err)
	}
	_, err = svc.SignUp(ctx, "kim", "another password")
	fmt.Println("taken:", errors.Is(err, member.ErrLoginIDTaken))
	first, err := svc.Login(ctx, "kim", "correct horse battery", "127.0.0.1")
	if err != nil {
		panic(err)
	}
	second, err := svc.Refresh(ctx, first.RefreshToken) // rotation
	if err != nil {
		panic(err)
	}
	fmt.Println("same session:", second.SessionID == first.SessionID)

	_, err = svc.Refresh(ctx, first.RefreshToken) // the first token again: stolen?
	fmt.Println("reused:", errors.Is(err, member.ErrRefreshTokenReused))
	_, err = svc.Refresh(ctx, second.RefreshToken)
	fmt.Println("session revoked:", err != nil)

	// A server verifies an access token's signature and expiry, then asks whether it was revoked.
	var claims member.AccessClaims
	if _, err := jwt.ParseWithClaims(second.AccessToken, &claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"})); err != nil {
		panic(err)
	}
	revoked, err := svc.Revoked(ctx, claims.ID)
	fmt.Println("access token revoked:", revoked, err)
	// Output:
	// taken: true
	// same session: true
	// reused: true
	// session revoked: true
	// access token revoked: true <nil>
}
