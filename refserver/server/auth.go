package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/refserver/member"
)

// RoleAdmin is the value of the "role" claim that opens the admin routes.
const RoleAdmin = "admin"

// Principal is the authenticated caller.
type Principal struct {
	UserID string
	Admin  bool
	// TokenID (jti), SessionID (sid, set on tokens from a login) and ExpiresAt identify the
	// token, for the denylist and logout.
	TokenID   string
	SessionID string
	ExpiresAt time.Time
}

// Claims are the JWT claims the server reads: the registered ones (sub = user ID, exp
// required, jti), role, and sid (the session of a token from a login).
type Claims struct {
	Role      string `json:"role,omitempty"`
	SessionID string `json:"sid,omitempty"`
	jwt.RegisteredClaims
}

// authenticator verifies bearer tokens: HS256 only, with an expiry, times (iat, nbf, exp)
// between 1970 and 9999 (checkTokenTimes), and a subject that is a valid user ID
// (commerce.ValidateUserID).
type authenticator struct {
	secret []byte
	parser *jwt.Parser
}

func newAuthenticator(secret []byte, now func() time.Time) *authenticator {
	return &authenticator{secret: secret, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second),
		jwt.WithTimeFunc(now),
	)}
}

// Authentication failures, each a 401 with its own code.
var (
	errNoToken      = errors.New("missing bearer token")
	errBadToken     = errors.New("invalid bearer token")
	errTokenExpired = errors.New("bearer token expired")
)

// authenticate reads the Authorization header.
func (a *authenticator) authenticate(r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return Principal{}, errNoToken
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(strings.TrimSpace(token), &c, func(*jwt.Token) (any, error) { return a.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, errTokenExpired
	case errors.Is(err, jwt.ErrTokenMalformed):
		// Not the library's words: its JSON errors name the server's Go types.
		return Principal{}, fmt.Errorf("%w: the token is malformed", errBadToken)
	case err != nil:
		return Principal{}, fmt.Errorf("%w: %v", errBadToken, err)
	}
	if err := checkTokenTimes(&c); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", errBadToken, err)
	}
	if err := commerce.ValidateUserID(c.Subject); err != nil {
		// Validly signed, but it names no possible user: as unusable as a bad signature.
		return Principal{}, fmt.Errorf("%w: the subject is not a user ID: %v", errBadToken, err)
	}
	for field, id := range map[string]string{"jti": c.ID, "sid": c.SessionID} {
		// The denylist and the sessions key on them: one no store can hold is unusable.
		if err := member.CheckTokenID(field, id); err != nil {
			return Principal{}, fmt.Errorf("%w: %w", errBadToken, err)
		}
	}
	return Principal{UserID: c.Subject, Admin: c.Role == RoleAdmin, TokenID: c.ID, SessionID: c.SessionID,
		ExpiresAt: c.ExpiresAt.Time}, nil
}

// maxTokenTime is the latest iat, nbf or exp a token may carry: the end of year 9999.
// The JWT library reads these claims as float seconds and converts them to int64, so a
// value beyond int64 (1e300) comes out as a time in the far past, and an exp past about
// year 294,000 overflows the microseconds the logout denylist records.
var maxTokenTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// checkTokenTimes refuses a token whose iat, nbf or exp (when present) is before the Unix
// epoch or after maxTokenTime: no token this server or its tools mint has one, and such a
// time is not what the token says (see maxTokenTime).
func checkTokenTimes(c *Claims) error {
	for _, t := range []struct {
		claim string
		date  *jwt.NumericDate
	}{{"iat", c.IssuedAt}, {"nbf", c.NotBefore}, {"exp", c.ExpiresAt}} {
		if t.date != nil && (t.date.Unix() < 0 || t.date.After(maxTokenTime)) {
			return fmt.Errorf("the %s claim is not a time between 1970 and 9999", t.claim)
		}
	}
	return nil
}

// scrapeToken is the scrape token of /metrics (Config.MetricsToken), kept as its SHA-256:
// comparing two digests in constant time tells nothing of the token, not even its length.
type scrapeToken struct {
	sum [sha256.Size]byte
	set bool
}

func newScrapeToken(token string) scrapeToken {
	return scrapeToken{sum: sha256.Sum256([]byte(token)), set: token != ""}
}

// matches reports whether r's bearer token is the scrape token.
func (t scrapeToken) matches(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !t.set || !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1
}

// authProblem is the 401 for an authentication failure.
func authProblem(err error) Problem {
	code := "invalid_token"
	switch {
	case errors.Is(err, errNoToken):
		code = "missing_token"
	case errors.Is(err, errTokenExpired):
		code = "token_expired"
	}
	return newProblem(http.StatusUnauthorized, code, "Unauthorized", err.Error())
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principal returns the authenticated caller of an authenticated route.
func principal(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// IssueToken signs a token for userID, valid for ttl from now, with the admin role when
// admin is set, with a fresh jti (so that logout can revoke it): what `refserver token`
// prints, and what tests and the flash-sale driver use.
func IssueToken(secret []byte, userID string, admin bool, ttl time.Duration, now time.Time) (string, error) {
	if err := commerce.ValidateUserID(userID); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", errors.New("ttl must be positive")
	}
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   userID,
		ID:        uuid.NewString(),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if admin {
		c.Role = RoleAdmin
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
