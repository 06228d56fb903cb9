package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/refserver/member"
)

// WithMemberOptions passes options to the member service (tests lower bcrypt's cost).
func WithMemberOptions(opts ...member.Option) Option {
	return func(s *settings) { s.memberOpts = append(s.memberOpts, opts...) }
}

// buildMembers creates the member and cart tables and services. The token denylist is in
// SQL, with a loop purging expired entries, and read through Redis when the server has
// Redis; the login limits are then in Redis too (shared by every instance), else in the
// process.
func (s *Server) buildMembers(ctx context.Context, secret []byte) error {
	st := s.st
	if err := member.CreateSchema(ctx, st.db); err != nil {
		return fmt.Errorf("creating the member tables: %w", err)
	}
	if err := cart.CreateSchema(ctx, st.db); err != nil {
		return fmt.Errorf("creating the cart tables: %w", err)
	}
	sqlDeny := member.NewSQLDenylist(st.db, s.now)
	st.loops = append(st.loops, func(ctx context.Context) error { return sqlDeny.RunPurger(ctx, time.Minute) })
	var deny member.Denylist = sqlDeny
	opts := []member.Option{member.WithClock(s.now)}
	if st.rdb != nil {
		deny = member.NewRedisDenylist(st.rdb, sqlDeny)
		opts = append(opts, member.WithLimiter(member.NewRedisLimiter(st.rdb, s.redisLimiterOptions()...)))
	} else {
		// The embedded SQLite has one connection: under load a check queues behind the
		// writes (a flash sale of 100 clients sees 1-2 s), so it gets longer than Redis's.
		opts = append(opts, member.WithCheckTimeout(5*time.Second))
	}
	var err error
	opts = append(opts, s.memberOpts...)
	if s.members, err = member.New(st.db, deny, secret, opts...); err != nil {
		return err
	}
	s.carts, err = cart.New(st.db, st.svc)
	return err
}

// checkRevoked is the denylist step of authentication: it answers 401 token_revoked for a
// token that was logged out (or whose session was revoked), 503 when the denylist cannot
// answer (never a pass), and returns whether the request may go on. On the route that
// revokes the token (revokes: logout) a revoked token is answered 204 instead: the logout
// it asks for is done, and a retry of one whose answer was lost must not be told it failed.
func (s *Server) checkRevoked(w http.ResponseWriter, r *http.Request, p Principal, revokes bool) bool {
	revoked, err := s.members.Revoked(r.Context(), p.TokenID)
	switch {
	case err != nil:
		s.writeError(w, r, err)
		return false
	case revoked && revokes:
		w.WriteHeader(http.StatusNoContent)
		return false
	case revoked:
		writeProblem(w, r, newProblem(http.StatusUnauthorized, "token_revoked", "Unauthorized",
			"the bearer token was revoked (logged out); log in again"))
		return false
	}
	return true
}

// SignUpJSON signs a member up, and LoginJSON logs one in.
type SignUpJSON struct {
	LoginID  string `json:"login_id"`
	Password string `json:"password"`
}

// LoginJSON opens a session.
type LoginJSON = SignUpJSON

// MemberJSON is a signed-up member; its id is the user ID of its orders, points and coupons.
type MemberJSON struct {
	ID        string    `json:"id"`
	LoginID   string    `json:"login_id"`
	CreatedAt time.Time `json:"created_at"`
}

// RefreshJSON trades a refresh token for a new pair.
type RefreshJSON struct {
	RefreshToken string `json:"refresh_token"`
}

// SessionJSON is what a login or a refresh returns.
type SessionJSON struct {
	UserID           string `json:"user_id"`
	TokenType        string `json:"token_type"`
	AccessToken      string `json:"access_token"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
}

func (s *Server) sessionJSON(t member.Tokens) SessionJSON {
	now := s.now()
	return SessionJSON{UserID: t.UserID, TokenType: "Bearer", AccessToken: t.AccessToken,
		ExpiresIn: int64(t.AccessExpiresAt.Sub(now).Seconds()), RefreshToken: t.RefreshToken,
		RefreshExpiresIn: int64(t.RefreshExpiresAt.Sub(now).Seconds())}
}

// clientAddr is the client's address as the connection shows it (no forwarding header
// is trusted), for per-address limits: an IPv4 address, or the /64 of an IPv6 one (a
// client commonly holds a whole /64, so its low bits would make new addresses at will).
func clientAddr(r *http.Request) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if ip = ip.Unmap(); ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip.WithZone(""), 64).Masked().String()
}

// limitAddress applies the per-user write rate to the unauthenticated member routes, per
// client address (a key with a space, which no user ID has). It answers 429 and returns
// false when the address is over the rate.
func (s *Server) limitAddress(w http.ResponseWriter, r *http.Request) bool {
	ok, retry := s.limiter.allow(r.Context(), "addr "+clientAddr(r))
	if !ok {
		p := newProblem(http.StatusTooManyRequests, "rate_limited", "Too Many Requests",
			"requests from this address exceed "+strconv.FormatFloat(s.cfg.RateLimit, 'g', -1, 64)+"/s")
		p.RetryAfter = retry
		writeProblem(w, r, p)
	}
	return ok
}

// signUp signs a member up: 201. An Idempotency-Key, optional here, makes the sign-up
// retryable (member.SignUpOnce): a retry with the same key, login ID and password after
// a 503 or a lost answer gets the same 201 and member, even when the first sign-up
// committed, where without a key it would be 409 login_id_taken. The key is recorded
// with the member row, in the insert itself, and not in the server's idempotency store:
// a store kept apart from the row cannot tell a sign-up whose commit reply was lost (the
// store frees the key of a 503) from one that never ran. A retry with the key and another
// password, with another key or without one is 409 login_id_taken like any sign-up with a
// taken login ID, so the route answers nothing about a member's password to anyone who
// lacks the key; the password check of a retry with the key counts as a login attempt
// (429 too_many_login_attempts once the login ID's or the address's failures are spent).
func (s *Server) signUp(w http.ResponseWriter, r *http.Request) {
	if !s.limitAddress(w, r) {
		return
	}
	var in SignUpJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	key, ok := optionalIdempotencyKey(w, r)
	if !ok {
		return
	}
	m, err := s.members.SignUpOnce(r.Context(), in.LoginID, in.Password, key, clientAddr(r))
	if err != nil {
		s.writeMemberError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, MemberJSON{ID: m.ID, LoginID: m.LoginID, CreatedAt: m.CreatedAt})
}

// optionalIdempotencyKey reads the Idempotency-Key of a route where it is optional: ""
// without one, or the key (see idempotencyKey, which answers 400 for a bad one and then
// returns false).
func optionalIdempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Header.Get(IdempotencyKeyHeader) == "" && r.Header.Get(IdempotencyKeyHeaderADR) == "" {
		return "", true
	}
	return idempotencyKey(w, r)
}

// writeMemberError answers an error of the member service: a *member.RateLimitError with
// its Retry-After, anything else as writeError does.
func (s *Server) writeMemberError(w http.ResponseWriter, r *http.Request, err error) {
	var rl *member.RateLimitError
	if errors.As(err, &rl) {
		p := s.problemFor(err)
		p.RetryAfter = int(math.Ceil(rl.RetryAfter.Seconds()))
		writeProblem(w, r, p)
		return
	}
	s.writeError(w, r, err)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.limitAddress(w, r) {
		return
	}
	var in LoginJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.members.Login(r.Context(), in.LoginID, in.Password, clientAddr(r))
	if err != nil {
		s.writeMemberError(w, r, err)
		return
	}
	writeSession(w, http.StatusCreated, s.sessionJSON(t))
}

func (s *Server) refreshSession(w http.ResponseWriter, r *http.Request) {
	if !s.limitAddress(w, r) {
		return
	}
	var in RefreshJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	// An Idempotency-Key, optional here, makes the refresh retryable (member.RefreshOnce).
	key, ok := optionalIdempotencyKey(w, r)
	if !ok {
		return
	}
	t, err := s.members.RefreshOnce(r.Context(), in.RefreshToken, key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeSession(w, http.StatusOK, s.sessionJSON(t))
}

// writeSession answers a session's tokens, never to be stored by a cache or a browser's
// history (RFC 6749 §5.1: Cache-Control: no-store, and Pragma: no-cache for HTTP/1.0).
func writeSession(w http.ResponseWriter, status int, v SessionJSON) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, status, v)
}

// revokeSession ends the session of a refresh token, for a client whose access token has
// expired (RFC 7009): 204, also for a token that is unknown or whose session has ended
// already (member.Service.Revoke), so the answer tells nothing of the token.
func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request) {
	if !s.limitAddress(w, r) {
		return
	}
	var in RefreshJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.members.Revoke(r.Context(), in.RefreshToken); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// logout revokes the caller's token and its session: 204. A token already revoked never
// gets here: checkRevoked answers 204 for it (the route Revokes).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	p := principal(r.Context())
	if err := s.members.Logout(r.Context(), p.TokenID, p.SessionID, p.ExpiresAt); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
