package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/commercekit/commercekit/payment/pgsim"
)

// MinSecretLen is the shortest JWT or webhook secret accepted, in bytes: 32 random bytes
// (e.g. `openssl rand -hex 32`) are out of reach of a brute-force search of an HS256 key.
const MinSecretLen = 32

// PublishedSecrets are the secrets the project publishes (in its code, its compose file, its
// documentation and their history): anyone can sign tokens or webhooks with them, so no
// deployment but the embedded default accepts them.
var PublishedSecrets = []string{
	DevJWTSecret,
	pgsim.DefaultWebhookSecret,
	"compose-jwt-secret-change-me",
	"compose-webhook-secret",
	// What scripts/bench.sh gave its mixed-mode server before it drew secrets of its own.
	"bench-jwt-secret-0123456789abcdef0123456789",
	"bench-webhook-secret-0123456789abcdef01234",
}

// validateSecrets checks the JWT and webhook secrets. The embedded default needs neither
// (it signs tokens with DevJWTSecret and shares a random webhook secret with its in-process
// simulator), but without a JWT secret, or with one of PublishedSecrets for either, it
// listens on loopback only (anyone who reaches it could mint an admin token, or sign a
// webhook, with the public one); any
// other deployment must set both, each of at least MinSecretLen bytes,
// without surrounding whitespace (a stray newline from a file, say), none of
// PublishedSecrets in any case or padding, and the two different (the PG knows the webhook
// secret: it must not be able to sign tokens). A secret that is set, other than a
// published one (embedded only), is never shorter than MinSecretLen.
func (c Config) validateSecrets() []error {
	var errs []error
	for _, s := range []struct{ env, value string }{
		{"COMMERCEKIT_JWT_SECRET", c.JWTSecret}, {"COMMERCEKIT_WEBHOOK_SECRET", c.WebhookSecret},
	} {
		switch {
		case s.value == "" && c.Mode() == "embedded":
		case s.value == "":
			errs = append(errs, fmt.Errorf("%s is required unless every backend is embedded (generate one with `openssl rand -hex 32`)", s.env))
		case isPublished(s.value) && c.Mode() != "embedded":
			errs = append(errs, fmt.Errorf("%s is a secret the project publishes; set your own (`openssl rand -hex 32`)", s.env))
		case len(s.value) < MinSecretLen && !isPublished(s.value):
			errs = append(errs, fmt.Errorf("%s must be at least %d bytes (`openssl rand -hex 32`)", s.env, MinSecretLen))
		case strings.TrimSpace(s.value) != s.value && c.Mode() != "embedded":
			errs = append(errs, fmt.Errorf("%s starts or ends with whitespace; set it without (`openssl rand -hex 32`)", s.env))
		}
	}
	if c.Mode() == "embedded" && !loopbackAddr(c.Addr) {
		if c.JWTSecret == "" || isPublished(c.JWTSecret) {
			// DevJWTSecret, or another secret the project publishes, would sign the tokens:
			// whoever reaches the server could mint an admin token.
			errs = append(errs, fmt.Errorf("COMMERCEKIT_ADDR %q listens beyond loopback while bearer tokens are signed with a secret the project publishes, "+
				"with which anyone can mint an admin token: set COMMERCEKIT_JWT_SECRET to your own (`openssl rand -hex 32`), or listen on %s", c.Addr, DefaultAddr))
		}
		if isPublished(c.WebhookSecret) {
			errs = append(errs, fmt.Errorf("COMMERCEKIT_ADDR %q listens beyond loopback while webhooks are verified with a secret the project publishes, "+
				"with which anyone can sign one: leave COMMERCEKIT_WEBHOOK_SECRET unset (a random one is drawn) or set your own, or listen on %s", c.Addr, DefaultAddr))
		}
	}
	if c.JWTSecret != "" && c.JWTSecret == c.WebhookSecret {
		errs = append(errs, errors.New("COMMERCEKIT_WEBHOOK_SECRET must differ from COMMERCEKIT_JWT_SECRET: the PG that signs webhooks must not be able to sign tokens"))
	}
	return append(errs, c.validateMetricsToken()...)
}

// loopbackAddr reports whether addr (host:port) listens on loopback only: localhost or a
// loopback IP, not every interface (an empty host, 0.0.0.0, ::) nor another address.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// validateMetricsToken checks the scrape token of /metrics, optional in every mode: one that
// is set is a secret of its own, held by the scraper, which must not be able to sign tokens
// or webhooks with it.
func (c Config) validateMetricsToken() []error {
	const env = "COMMERCEKIT_METRICS_TOKEN"
	switch t := c.MetricsToken; {
	case t == "":
	case isPublished(t):
		return []error{fmt.Errorf("%s is a secret the project publishes; set your own (`openssl rand -hex 32`)", env)}
	case len(t) < MinSecretLen || strings.TrimSpace(t) != t:
		return []error{fmt.Errorf("%s must be at least %d bytes, without surrounding whitespace (`openssl rand -hex 32`)", env, MinSecretLen)}
	case t == c.JWTSecret || t == c.WebhookSecret:
		return []error{fmt.Errorf("%s must differ from COMMERCEKIT_JWT_SECRET and COMMERCEKIT_WEBHOOK_SECRET: whoever scrapes the metrics must not be able to sign tokens or webhooks", env)}
	}
	return nil
}

// isPublished reports whether secret is one of PublishedSecrets, whatever its case and
// surrounding whitespace: variants an attacker tries first.
func isPublished(secret string) bool {
	secret = strings.TrimSpace(secret)
	for _, p := range PublishedSecrets {
		if strings.EqualFold(secret, p) {
			return true
		}
	}
	return false
}

// randomSecret returns a fresh random secret: the embedded default's webhook secret, shared
// by its in-process simulator and its webhook route for the life of the process.
func randomSecret() (string, error) {
	b := make([]byte, MinSecretLen)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("refserver: generating a webhook secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}
