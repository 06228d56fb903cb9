package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/commercekit/commercekit/refserver/server"
)

// token prints a development bearer token signed with COMMERCEKIT_JWT_SECRET (or -secret),
// or with the embedded default's public development secret when neither is set.
func token(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("refserver token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "user ID (the token's subject), required")
	admin := fs.Bool("admin", false, "grant the admin role")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	secret := fs.String("secret", getenv("COMMERCEKIT_JWT_SECRET"), "HS256 secret ($COMMERCEKIT_JWT_SECRET; default: the embedded development secret)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" {
		fs.Usage()
		return errors.New("token: -sub is required")
	}
	if *secret == "" {
		*secret = server.DevJWTSecret
		fmt.Fprintln(stderr, "refserver token: COMMERCEKIT_JWT_SECRET is unset; signing with the public development secret (embedded mode only)")
	}
	t, err := server.IssueToken([]byte(*secret), *sub, *admin, *ttl, time.Now())
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, t)
	return err
}
