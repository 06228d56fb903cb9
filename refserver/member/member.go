package member

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Limits and defaults.
const (
	MinLoginIDLen  = 3
	MaxLoginIDLen  = 64
	MinPasswordLen = 8
	// MaxPasswordLen is bcrypt's limit.
	MaxPasswordLen = 72

	DefaultAccessTTL  = 15 * time.Minute
	DefaultRefreshTTL = 30 * 24 * time.Hour
	// DefaultAccountFailures and DefaultAddressFailures are the failed logins allowed per
	// login ID and per client address within DefaultFailureWindow (token buckets).
	DefaultAccountFailures = 5
	DefaultAddressFailures = 20
	DefaultFailureWindow   = 15 * time.Minute
	// DefaultCheckTimeout bounds one denylist check.
	DefaultCheckTimeout = time.Second
	// DenyMargin is how long past its expiry a revoked token stays on the denylist: more
	// than the clock leeway of any verifier (refserver accepts tokens 30 s past exp).
	DenyMargin = time.Minute
)

// denyTimeout bounds the denials that follow a revocation (see afterRevocation).
const denyTimeout = 10 * time.Second

// afterRevocation is the context of the denials that follow a revocation: ctx's values
// without its cancellation, for at most denyTimeout. A caller going away must not cut them
// short: a client that replays a stolen refresh token, or logs out, and hangs up at once
// would otherwise leave access tokens valid that its request revoked.
func afterRevocation(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), denyTimeout)
}

// Member is a signed-up member.
type Member struct {
	// ID is the member's user ID everywhere else (orders, points, coupons): a UUID.
	ID        string
	LoginID   string
	CreatedAt time.Time
}

// Tokens is what a login or a refresh hands out.
type Tokens struct {
	UserID    string
	SessionID string
	// AccessToken is a bearer JWT valid until AccessExpiresAt.
	AccessToken     string
	AccessExpiresAt time.Time
	// RefreshToken trades once for a new pair (Refresh) until RefreshExpiresAt.
	RefreshToken     string
	RefreshExpiresAt time.Time
}

// AccessClaims are the claims of an access token: sub (user ID), jti, sid (session), iat,
// exp. Servers verifying it read the same JSON.
type AccessClaims struct {
	SessionID string `json:"sid,omitempty"`
	jwt.RegisteredClaims
}

// Service signs members up and runs their sessions. It is safe for concurrent use.
type Service struct {
	db           *bun.DB
	deny         Denylist
	secret       []byte
	now          func() time.Time
	accessTTL    time.Duration
	refreshTTL   time.Duration
	cost         int
	checkTimeout time.Duration
	limiter      Limiter
	perLoginID   int // failed logins allowed per login ID within window
	perAddress   int // and per client address
	window       time.Duration
	dummy        []byte // a hash to compare against for unknown login IDs, so they take as long
	// checks gives each client address one bcrypt hash or comparison at a time, and work
	// caps them all (WithPasswordChecks); waiting counts the requests waiting for either.
	checks  addressGate
	work    chan struct{}
	waiting atomic.Int64
	// workHook, when set (tests), runs just before each bcrypt hash or comparison.
	workHook func()
}

// Option configures a Service. An option given an invalid value (see each option) makes New
// fail with a *ValidationError naming the option (ErrInvalidRequest).
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*Service
}

// WithClock sets the clock of token times and login limits (default time.Now). It must not
// be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.now, "WithClock", now) }
}

// WithTokenTTLs sets how long access and refresh tokens are valid (defaults
// DefaultAccessTTL, DefaultRefreshTTL). Both must be positive.
func WithTokenTTLs(access, refresh time.Duration) Option {
	return func(s *settings) {
		if access <= 0 || refresh <= 0 {
			s.Reject("WithTokenTTLs", fmt.Sprintf("%v, %v: both must be positive", access, refresh))
			return
		}
		s.accessTTL, s.refreshTTL = access, refresh
	}
}

// WithBcryptCost sets bcrypt's cost (default bcrypt.DefaultCost; tests use
// bcrypt.MinCost). It must be within bcrypt.MinCost..bcrypt.MaxCost.
func WithBcryptCost(cost int) Option {
	return func(s *settings) {
		if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
			s.Reject("WithBcryptCost", fmt.Sprintf("%d is not within %d..%d", cost, bcrypt.MinCost, bcrypt.MaxCost))
			return
		}
		s.cost = cost
	}
}

// WithLoginLimits sets the failed logins allowed per login ID and per address within window
// (defaults DefaultAccountFailures, DefaultAddressFailures, DefaultFailureWindow). The
// counts must be positive and window at least a millisecond.
func WithLoginLimits(perLoginID, perAddress int, window time.Duration) Option {
	return func(s *settings) {
		if perLoginID < 1 || perAddress < 1 || window < time.Millisecond {
			s.Reject("WithLoginLimits", fmt.Sprintf("%d, %d, %v: need positive counts and a window of at least 1ms", perLoginID, perAddress, window))
			return
		}
		s.perLoginID, s.perAddress, s.window = perLoginID, perAddress, window
	}
}

// WithLimiter sets where the login limits are kept (default a MemoryLimiter, right for one
// instance only; give every instance of a server the same NewRedisLimiter). It must not be
// nil.
func WithLimiter(l Limiter) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.limiter, "WithLimiter", l) }
}

// WithPasswordChecks sets how many bcrypt hashes and comparisons (sign-ups and logins) run
// at once in the process (default DefaultPasswordChecks); the others wait their turn, as a
// client address's own do, until their context ends. It must be positive.
func WithPasswordChecks(n int) Option {
	return func(s *settings) {
		if n < 1 {
			s.Reject("WithPasswordChecks", fmt.Sprintf("%d: must be positive", n))
			return
		}
		s.work = make(chan struct{}, n)
	}
}

// DefaultPasswordChecks is how many bcrypt hashes and comparisons a Service runs at once
// unless WithPasswordChecks says otherwise: half the CPUs Go uses (at least one), so that
// sign-ups and logins, which anyone can send, never take the whole machine from the
// orders.
func DefaultPasswordChecks() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// WithCheckTimeout bounds one denylist check (default DefaultCheckTimeout). It must be
// positive.
func WithCheckTimeout(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.checkTimeout, "WithCheckTimeout", d) }
}

// New returns a Service keeping members in db (create the tables with CreateSchema),
// revoked tokens in deny, and signing access tokens with secret (HS256).
func New(db *bun.DB, deny Denylist, secret []byte, opts ...Option) (*Service, error) {
	if db == nil || deny == nil || len(secret) == 0 {
		return nil, errors.New("member: New needs a database, a denylist and a secret")
	}
	s := &Service{db: db, deny: deny, secret: secret, now: time.Now, accessTTL: DefaultAccessTTL,
		refreshTTL: DefaultRefreshTTL, cost: bcrypt.DefaultCost, checkTimeout: DefaultCheckTimeout,
		limiter: NewMemoryLimiter(), perLoginID: DefaultAccountFailures, perAddress: DefaultAddressFailures,
		window: DefaultFailureWindow}
	set := settings{Service: s}
	if err := option.Apply(&set, opts); err != nil {
		return nil, fmt.Errorf("member: %w", err)
	}
	if s.work == nil {
		s.work = make(chan struct{}, DefaultPasswordChecks())
	}
	var err error
	if s.dummy, err = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), s.cost); err != nil {
		return nil, fmt.Errorf("member: bcrypt cost %d: %w", s.cost, err)
	}
	return s, nil
}

type memberRow struct {
	bun.BaseModel `bun:"table:members"`

	ID           string `bun:"id,pk"`
	LoginID      string `bun:"login_id"`
	PasswordHash string `bun:"password_hash"`
	CreatedAt    int64  `bun:"created_at"`
	// SignUpKey is signUpKey of the login ID and the key the sign-up ran under ("" for
	// none; see SignUpOnce).
	SignUpKey string `bun:"signup_key"`
}

type sessionRow struct {
	bun.BaseModel `bun:"table:member_sessions"`

	ID         string `bun:"id,pk"`
	UserID     string `bun:"user_id"`
	CreatedAt  int64  `bun:"created_at"`
	RevokedAt  int64  `bun:"revoked_at"`
	RevokedWhy string `bun:"revoked_why"`
}

type refreshRow struct {
	bun.BaseModel `bun:"table:member_refresh_tokens"`

	Hash            string `bun:"hash,pk"`
	SessionID       string `bun:"session_id"`
	AccessJTI       string `bun:"access_jti"`
	AccessExpiresAt int64  `bun:"access_expires_at"`
	ExpiresAt       int64  `bun:"expires_at"`
	UsedAt          int64  `bun:"used_at"`
	CreatedAt       int64  `bun:"created_at"`
}

// Why a session was revoked.
const (
	revokedLogout = "logout"
	revokedReuse  = "reuse"
)

func checkLoginID(id string) error {
	if len(id) < MinLoginIDLen || len(id) > MaxLoginIDLen {
		return &ValidationError{Field: "login_id", Reason: fmt.Sprintf("must be %d-%d bytes", MinLoginIDLen, MaxLoginIDLen)}
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' ||
			c == '-' || c == '@' || c == '+') {
			return &ValidationError{Field: "login_id", Reason: "may hold only letters, digits and . _ - @ +"}
		}
	}
	return nil
}

func checkPassword(pw string) error {
	if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen || !utf8.ValidString(pw) {
		return &ValidationError{Field: "password", Reason: fmt.Sprintf("must be %d-%d bytes of UTF-8", MinPasswordLen, MaxPasswordLen)}
	}
	return nil
}

// SignUp records a member. Errors: *ValidationError, ErrLoginIDTaken. A sign-up whose
// answer was lost cannot be retried: the retry meets ErrLoginIDTaken. SignUpOnce can.
func (s *Service) SignUp(ctx context.Context, loginID, password string) (Member, error) {
	return s.SignUpOnce(ctx, loginID, password, "", "")
}

// SignUpOnce is SignUp at most once per key (1..MaxKeyLen bytes, chosen by the client, a
// UUID for example; "" is SignUp): a retry with the same login ID, password and key —
// after a lost answer, even one whose insert committed — gets the member that sign-up
// recorded, as it first answered, instead of ErrLoginIDTaken. addr is the client's
// address, for the login limits (see below).
//
// The key is recorded with the member, as an HMAC under the Service's secret (never as
// sent), in the same insert: a retry finds it whether or not the first answer got out,
// which an idempotency store kept apart from the member row could not know. Only the
// key's holder can get the member this way, and only with the password: a sign-up with a
// taken login ID and no key, another key, or the key and another password is
// ErrLoginIDTaken, as for anyone else, so the answer is no oracle of the password to
// whoever learns a login ID (nor to whoever learns a key: the password check of a retry
// with the right key is a login attempt, charged to the login ID's and the address's
// failure budgets like Login's and given back when it matches, and refused with
// *RateLimitError once they are spent). Errors: *ValidationError, ErrLoginIDTaken,
// *RateLimitError, and an error matching errcode.ErrUnavailable when the limiter cannot
// answer such a retry.
func (s *Service) SignUpOnce(ctx context.Context, loginID, password, key, addr string) (Member, error) {
	if err := checkLoginID(loginID); err != nil {
		return Member{}, err
	}
	if err := checkPassword(password); err != nil {
		return Member{}, err
	}
	if password == loginID {
		return Member{}, &ValidationError{Field: "password", Reason: "must not be the login ID"}
	}
	if len(key) > MaxKeyLen {
		return Member{}, &ValidationError{Field: "IdempotencyKey", Reason: fmt.Sprintf("must be at most %d bytes", MaxKeyLen)}
	}
	gate := "" // a sign-up without an address (SignUp: the caller's own) waits for the cap only
	if addr != "" {
		gate = "addr " + addr
	}
	leave, err := s.takeTurn(ctx, gate)
	if err != nil {
		return Member{}, fmt.Errorf("member: wait for a turn to hash the password: %w", err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	leave()
	if err != nil {
		return Member{}, fmt.Errorf("member: hash the password: %w", err)
	}
	row := &memberRow{ID: uuid.NewString(), LoginID: loginID, PasswordHash: string(hash), CreatedAt: s.now().UnixMicro()}
	if key != "" {
		row.SignUpKey = s.signUpKey(loginID, key)
	}
	if _, err := s.db.NewInsert().Model(row).Exec(ctx); err != nil {
		if !sqlutil.IsDuplicateKey(err) {
			return Member{}, fmt.Errorf("member: insert member: %w", sqlutil.Unavailable(s.db, err))
		}
		if key == "" {
			return Member{}, fmt.Errorf("%w: %s", ErrLoginIDTaken, loginID)
		}
		return s.signedUpAgain(ctx, loginID, password, row.SignUpKey, addr)
	}
	return row.member(), nil
}

// member is the Member of a row.
func (r *memberRow) member() Member {
	return Member{ID: r.ID, LoginID: r.LoginID, CreatedAt: time.UnixMicro(r.CreatedAt).UTC()}
}

// signUpKey is what a member row records of the key its sign-up ran under: an HMAC of
// the login ID and the key under the Service's secret, in hex.
func (s *Service) signUpKey(loginID, key string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("commercekit sign-up\x00"))
	m.Write([]byte(loginID))
	m.Write([]byte{0})
	m.Write([]byte(key))
	return hex.EncodeToString(m.Sum(nil))
}

// signedUpAgain answers a sign-up with key (signUpKey's) whose login ID is taken: the
// member, when its sign-up ran under the same key and password has it (a retry of that
// sign-up), else ErrLoginIDTaken. The password check is charged to the login limits as
// Login's is.
func (s *Service) signedUpAgain(ctx context.Context, loginID, password, key, addr string) (Member, error) {
	taken := fmt.Errorf("%w: %s", ErrLoginIDTaken, loginID)
	row := new(memberRow)
	if err := s.db.NewSelect().Model(row).Where("login_id = ?", loginID).Scan(ctx); err != nil {
		if sqlutil.IsNoRows(err) {
			return Member{}, taken
		}
		return Member{}, fmt.Errorf("member: read member: %w", sqlutil.Unavailable(s.db, err))
	}
	if row.SignUpKey == "" || !hmac.Equal([]byte(row.SignUpKey), []byte(key)) {
		return Member{}, taken
	}
	if _, err := s.checkPassword(ctx, loginID, password, addr, s.now(), row); err != nil {
		if errors.Is(err, ErrBadCredentials) {
			return Member{}, taken
		}
		return Member{}, err
	}
	return row.member(), nil
}

// refundTimeout bounds a refund of checkPassword, sent whether or not its attempt's
// context has ended.
const refundTimeout = 5 * time.Second

// checkPassword reads loginID's member (unless the caller has: read) and checks password
// against it, charged to the login limits of loginID and addr: the member, or
// ErrBadCredentials (no such member, or another password), *RateLimitError, or a
// dependency's error.
func (s *Service) checkPassword(ctx context.Context, loginID, password, addr string, now time.Time, read *memberRow) (*memberRow, error) {
	acct, from := "id "+loginID, "addr "+addr
	// Every attempt takes its tokens before the password check and gets them back if it
	// succeeds: attempts sent at once are limited like attempts sent one by one. The login
	// ID's is taken first (a guess at one account is refused before it costs a read), the
	// address's only once the member is read, just before the check and in the address's
	// turn (addressGate): checks in flight hold tokens, and a database stall that holds up
	// logins, or a crowd of them from one address, must not turn them into failures. A
	// limiter that cannot answer refuses the attempt; a refund it loses leaves the budget
	// one attempt short until it refills.
	//
	// The refunds are sent even when the attempt's context has ended (its client went
	// away during the read or its wait for the address's turn, which an attacker can do
	// at will): a refund on the ended context would fail in Redis, and every such attempt
	// would cost the login ID a failure without a password checked, nor a token of the
	// attacker's address, whose is taken only in its turn.
	if d, err := s.limiter.Take(ctx, acct, s.perLoginID, s.window, now); err != nil || d > 0 {
		return nil, limited("login_id", d, err)
	}
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), refundTimeout)
	defer cancel()
	refuse := func(err error) (*memberRow, error) {
		_ = s.limiter.Refund(settle, acct, s.perLoginID, s.window, now)
		return nil, err
	}
	row, err := read, error(nil)
	if row == nil {
		row = new(memberRow)
		err = s.db.NewSelect().Model(row).Where("login_id = ?", loginID).Scan(ctx)
	}
	hash, found := []byte(row.PasswordHash), err == nil
	switch {
	case sqlutil.IsNoRows(err):
		hash = s.dummy
	case err != nil:
		return refuse(fmt.Errorf("member: read member: %w", sqlutil.Unavailable(s.db, err)))
	}
	leave, err := s.takeTurn(ctx, from)
	if err != nil {
		return refuse(fmt.Errorf("member: wait for the address's turn: %w", err))
	}
	if d, err := s.limiter.Take(ctx, from, s.perAddress, s.window, now); err != nil || d > 0 {
		leave()
		return refuse(limited("address", d, err))
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && found // compared even when not found: as slow
	if ok {
		_ = s.limiter.Reset(settle, acct)
		_ = s.limiter.Refund(settle, from, s.perAddress, s.window, now)
	}
	leave()
	if !ok {
		return nil, ErrBadCredentials
	}
	return row, nil
}

// limited is the error of an attempt the limiter refused: err when it could not answer,
// else a *RateLimitError.
func limited(by string, wait time.Duration, err error) error {
	if err != nil {
		return err
	}
	return &RateLimitError{By: by, RetryAfter: wait}
}

// Login checks a member's password and opens a session. addr is the client's address, for
// the per-address limit. Errors: *RateLimitError, ErrBadCredentials, *ValidationError (a
// login ID or password no member can have, refused before the limits and the database),
// errcode.ErrUnavailable (the limiter could not answer; see the package doc).
func (s *Service) Login(ctx context.Context, loginID, password, addr string) (Tokens, error) {
	// Only a login ID a member can have reaches the database and the limits: the database
	// would match variants of it (MySQL ignores trailing spaces), each with its own budget.
	if err := checkLoginID(loginID); err != nil {
		return Tokens{}, err
	}
	if password == "" || len(password) > MaxPasswordLen {
		return Tokens{}, &ValidationError{Field: "password", Reason: fmt.Sprintf("must be 1-%d bytes", MaxPasswordLen)}
	}
	now := s.now()
	row, err := s.checkPassword(ctx, loginID, password, addr, now, nil)
	if err != nil {
		return Tokens{}, err
	}
	var t Tokens
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		sess := &sessionRow{ID: uuid.NewString(), UserID: row.ID, CreatedAt: now.UnixMicro()}
		if _, err := tx.NewInsert().Model(sess).Exec(ctx); err != nil {
			return err
		}
		t, err = s.issue(ctx, tx, sess, now, "")
		return err
	})
	if err != nil {
		return Tokens{}, fmt.Errorf("member: open a session: %w", err)
	}
	return t, nil
}

// issue signs an access token and records a refresh token for the session in tx: the
// given one (a rotation's, see successor), or 32 random bytes when it is "".
func (s *Service) issue(ctx context.Context, tx bun.IDB, sess *sessionRow, now time.Time, refreshToken string) (Tokens, error) {
	t := Tokens{UserID: sess.UserID, SessionID: sess.ID, AccessExpiresAt: now.Add(s.accessTTL),
		RefreshExpiresAt: now.Add(s.refreshTTL), RefreshToken: refreshToken}
	jti := uuid.NewString()
	var err error
	if t.AccessToken, err = s.sign(sess, jti, now, t.AccessExpiresAt); err != nil {
		return Tokens{}, err
	}
	if t.RefreshToken == "" {
		var raw [32]byte
		_, _ = rand.Read(raw[:])
		t.RefreshToken = base64.RawURLEncoding.EncodeToString(raw[:])
	}
	_, err = tx.NewInsert().Model(&refreshRow{Hash: hashToken(t.RefreshToken), SessionID: sess.ID, AccessJTI: jti,
		AccessExpiresAt: t.AccessExpiresAt.UnixMicro(), ExpiresAt: t.RefreshExpiresAt.UnixMicro(),
		CreatedAt: now.UnixMicro()}).Exec(ctx)
	if err != nil {
		return Tokens{}, fmt.Errorf("member: record the refresh token: %w", err)
	}
	return t, nil
}

// sign signs the access token jti of the session, issued at iat and expiring at exp (both
// to the second, as JWTs hold them: signing again what a row recorded gives the same token).
func (s *Service) sign(sess *sessionRow, jti string, iat, exp time.Time) (string, error) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, AccessClaims{SessionID: sess.ID,
		RegisteredClaims: jwt.RegisteredClaims{Subject: sess.UserID, ID: jti, IssuedAt: jwt.NewNumericDate(iat),
			ExpiresAt: jwt.NewNumericDate(exp)}}).SignedString(s.secret)
	if err != nil {
		return "", fmt.Errorf("member: sign the access token: %w", err)
	}
	return tok, nil
}

// successor is the refresh token that the rotation of refreshToken under the caller's key
// issues: an HMAC of both under the Service's secret, so that a retry with the same token
// and key finds the token its lost answer carried, and no one without the secret can
// compute it.
func (s *Service) successor(refreshToken, key string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("commercekit refresh rotation\x00"))
	m.Write([]byte(refreshToken))
	m.Write([]byte{0})
	m.Write([]byte(key))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// hashToken is the SHA-256 of a refresh token in hex: what the database holds.
func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Refresh trades a refresh token for a new access and refresh token of the same session.
// Errors: ErrInvalidRefreshToken; ErrRefreshTokenReused, after which the session is
// revoked and its unexpired access tokens are denied (to the end, even when ctx is
// cancelled meanwhile). A refresh whose answer was lost (an error matching
// errcode.ErrUnavailable after its commit) cannot be retried: the token is used, and
// presenting it again is a reuse. RefreshOnce can.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	return s.RefreshOnce(ctx, refreshToken, "")
}

// MaxKeyLen bounds the key of RefreshOnce and of SignUpOnce.
const MaxKeyLen = 255

// RefreshOnce is Refresh at most once per key (1..MaxKeyLen bytes; "" is Refresh): a
// retry with the same refresh token and key — after a lost answer, even one whose commit
// went unanswered — gets the answer of the rotation it retries, the same pair, as long as
// the refresh token that rotation issued has not been used. Once it has, the retry is a
// reuse like any other presentation; so is a presentation with another key, or none, which
// keeps the rotation's theft detection whole: only the holder of the key the rotation ran
// under gets its answer again.
func (s *Service) RefreshOnce(ctx context.Context, refreshToken, key string) (Tokens, error) {
	if refreshToken == "" || len(refreshToken) > 128 {
		return Tokens{}, ErrInvalidRefreshToken
	}
	if len(key) > MaxKeyLen {
		return Tokens{}, &ValidationError{Field: "IdempotencyKey", Reason: fmt.Sprintf("must be at most %d bytes", MaxKeyLen)}
	}
	next := ""
	if key != "" {
		next = s.successor(refreshToken, key)
	}
	hash, now := hashToken(refreshToken), s.now()
	var (
		t             Tokens
		reused, stale []refreshRow
	)
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		t, reused, stale = Tokens{}, nil, nil
		tok := new(refreshRow)
		if err := tx.NewSelect().Model(tok).Where("hash = ?", hash).Scan(ctx); err != nil {
			if sqlutil.IsNoRows(err) {
				return ErrInvalidRefreshToken
			}
			return err
		}
		// Lock the session first, then read the token again under the lock: every writer
		// of a session's tokens holds its session's lock.
		sess, err := lockSession(ctx, tx, tok.SessionID)
		if err != nil {
			return err
		}
		if err := sqlutil.ForUpdate(tx.NewSelect().Model(tok).Where("hash = ?", hash)).Scan(ctx); err != nil {
			return err
		}
		switch {
		case sess.RevokedAt != 0:
			// Deny its live access tokens again: the denial that followed the revocation
			// may have failed (a 503), and this is the retry.
			if stale, err = s.revoke(ctx, tx, sess, "", now); err != nil {
				return err
			}
			return ErrInvalidRefreshToken
		case tok.UsedAt != 0:
			if next != "" {
				var again bool
				if t, again, err = s.answerAgain(ctx, tx, sess, next, now); err != nil || again {
					return err
				}
			}
			reused, err = s.revoke(ctx, tx, sess, revokedReuse, now)
			return err
		case tok.ExpiresAt <= now.UnixMicro():
			return ErrInvalidRefreshToken
		}
		if _, err := tx.NewUpdate().Model(tok).Set("used_at = ?", now.UnixMicro()).WherePK().Exec(ctx); err != nil {
			return err
		}
		t, err = s.issue(ctx, tx, sess, now, next)
		return err
	})
	switch {
	case errors.Is(err, ErrInvalidRefreshToken):
		if derr := s.denyAll(ctx, stale); derr != nil {
			return Tokens{}, derr
		}
		return Tokens{}, err
	case err != nil:
		return Tokens{}, fmt.Errorf("member: refresh: %w", err)
	case reused != nil:
		if err := s.denyAll(ctx, reused); err != nil {
			return Tokens{}, err
		}
		return Tokens{}, ErrRefreshTokenReused
	}
	return t, nil
}

// answerAgain returns the tokens a rotation of the session locked by tx issued with the
// refresh token next (see successor), and true, when it did and next was not used since:
// the answer a retry of that rotation lost. It returns false otherwise.
func (s *Service) answerAgain(ctx context.Context, tx bun.IDB, sess *sessionRow, next string, now time.Time) (Tokens, bool, error) {
	var rows []refreshRow
	if err := sqlutil.ForUpdate(tx.NewSelect().Model(&rows).Where("hash = ?", hashToken(next))).Scan(ctx); err != nil {
		return Tokens{}, false, err
	}
	if len(rows) != 1 || rows[0].SessionID != sess.ID || rows[0].UsedAt != 0 || rows[0].ExpiresAt <= now.UnixMicro() {
		return Tokens{}, false, nil
	}
	r := rows[0]
	t := Tokens{UserID: sess.UserID, SessionID: sess.ID, AccessExpiresAt: time.UnixMicro(r.AccessExpiresAt),
		RefreshToken: next, RefreshExpiresAt: time.UnixMicro(r.ExpiresAt)}
	var err error
	if t.AccessToken, err = s.sign(sess, r.AccessJTI, time.UnixMicro(r.CreatedAt), t.AccessExpiresAt); err != nil {
		return Tokens{}, false, err
	}
	return t, true, nil
}

func lockSession(ctx context.Context, tx bun.IDB, id string) (*sessionRow, error) {
	sess := new(sessionRow)
	if err := sqlutil.ForUpdate(tx.NewSelect().Model(sess).Where("id = ?", id)).Scan(ctx); err != nil {
		return nil, err
	}
	return sess, nil
}

// revoke marks the locked session revoked (if it is not already) and returns its tokens
// whose access token has not expired, to be denied once tx commits (again, when it was
// already revoked: denying is idempotent). Their entries in member_denied_tokens are
// written in tx, so that they commit with the revocation: a denial that fails afterwards
// (Redis unreachable, a timeout part-way through the tokens) is still on record, and the
// Redis denylist rebuilt from that record denies them all.
func (s *Service) revoke(ctx context.Context, tx bun.IDB, sess *sessionRow, why string, now time.Time) ([]refreshRow, error) {
	if sess.RevokedAt == 0 {
		_, err := tx.NewUpdate().Model(sess).Set("revoked_at = ?", now.UnixMicro()).Set("revoked_why = ?", why).WherePK().Exec(ctx)
		if err != nil {
			return nil, err
		}
	}
	// A locking read: it sees the tokens committed since this transaction's first read
	// (a concurrent refresh's), which a plain read on MySQL would not.
	live := []refreshRow{}
	q := tx.NewSelect().Model(&live).Where("session_id = ? AND access_expires_at > ?", sess.ID, now.Add(-DenyMargin).UnixMicro())
	if err := sqlutil.ForUpdate(q).Scan(ctx); err != nil {
		return nil, err
	}
	rec, ours := s.deny.(recorder)
	return live, recordDenials(ctx, tx, ours && rec.recordsUnpublished(), deniedEntries(live)...)
}

// deniedEntries are the denylist entries of the access tokens of rows.
func deniedEntries(rows []refreshRow) []deniedRow {
	entries := make([]deniedRow, len(rows))
	for i, r := range rows {
		entries[i] = deniedRow{JTI: r.AccessJTI, ExpiresAt: r.AccessExpiresAt + DenyMargin.Microseconds()}
	}
	return entries
}

// denyAll puts the access tokens of rows, returned by revoke, on the denylist, under
// afterRevocation(ctx). The revocation recorded them: a denylist of this package only
// publishes them; another is told each one with Deny.
func (s *Service) denyAll(ctx context.Context, rows []refreshRow) error {
	if len(rows) == 0 {
		return nil
	}
	ctx, cancel := afterRevocation(ctx)
	defer cancel()
	if rec, ours := s.deny.(recorder); ours {
		return rec.publishRecorded(ctx, deniedEntries(rows)...)
	}
	for _, r := range rows {
		if err := s.deny.Deny(ctx, r.AccessJTI, time.UnixMicro(r.AccessExpiresAt).Add(DenyMargin)); err != nil {
			return err
		}
	}
	return nil
}

// Logout revokes an access token (its jti, until DenyMargin after it expires) and its
// session (sid, when the token has one: a token minted outside a login has none), denying
// every access token the session issued that has not expired. Errors: ErrNotRevocable for
// a token without a jti; a *errcode.InvalidError for a jti or sid the Service never mints
// (over MaxTokenIDLen bytes, or not printable ASCII); an error matching errcode.ErrUnavailable when the denylist cannot
// be written. Retry then: Logout is idempotent, and it denies the caller's own token last,
// so that a logout failing part-way leaves the caller a token to retry with, unless the
// denylist already answers from the SQL record, which the session's revocation wrote for
// all its tokens at once (the embedded SQL denylist; a Redis one rebuilt since): then the
// logout is done, and the retry finds the token revoked (refserver answers a logout with a
// revoked token 204 without calling Logout again). The denials run to the end
// even when ctx is cancelled meanwhile (for at most 10 s).
func (s *Service) Logout(ctx context.Context, jti, sessionID string, expires time.Time) error {
	if jti == "" {
		return ErrNotRevocable
	}
	if err := CheckTokenID("jti", jti); err != nil {
		return err
	}
	if err := CheckTokenID("sid", sessionID); err != nil {
		return err
	}
	if sessionID != "" {
		var live []refreshRow
		err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
			sess, err := lockSession(ctx, tx, sessionID)
			if sqlutil.IsNoRows(err) {
				return nil // not a session of ours: nothing more to revoke
			}
			if err != nil {
				return err
			}
			live, err = s.revoke(ctx, tx, sess, revokedLogout, s.now())
			return err
		})
		if err != nil {
			return fmt.Errorf("member: revoke session %s: %w", sessionID, err)
		}
		var own []refreshRow
		others := live[:0]
		for _, r := range live {
			if r.AccessJTI != jti {
				others = append(others, r)
			} else {
				own = append(own, r)
			}
		}
		if err := s.denyAll(ctx, others); err != nil {
			return err
		}
		if len(own) > 0 { // recorded with the revocation too
			return s.denyAll(ctx, own)
		}
	}
	ctx, cancel := afterRevocation(ctx)
	defer cancel()
	return s.deny.Deny(ctx, jti, expires.Add(DenyMargin))
}

// Revoke ends the session of a refresh token, as Logout ends the session of an access token:
// the session is revoked and every access token it issued that has not expired is denied.
// It is for a client whose access token has expired (RFC 7009's revocation of a refresh
// token): it needs none. Any refresh token the session issued works, used or expired, since
// ending a session is what a thief holding an old one could already cause by presenting it
// to Refresh. A token the Service does not know changes nothing and is no error (RFC 7009
// §2.2: the client could do nothing about it); one whose session is revoked already denies
// the session's live access tokens again (finishing a denial that failed, as a retried
// Logout does), so Revoke is idempotent. Errors: a *ValidationError for an empty token or one over 128 bytes,
// which the Service never issues; an error matching errcode.ErrUnavailable when the database
// or the denylist cannot be reached (retry). The denials run to the end even when ctx is
// cancelled meanwhile (for at most 10 s).
func (s *Service) Revoke(ctx context.Context, refreshToken string) error {
	if refreshToken == "" || len(refreshToken) > 128 {
		return &ValidationError{Field: "RefreshToken", Reason: "must be a refresh token this service issued"}
	}
	hash := hashToken(refreshToken)
	var live []refreshRow
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		live = nil
		tok := new(refreshRow)
		if err := tx.NewSelect().Model(tok).Where("hash = ?", hash).Scan(ctx); err != nil {
			if sqlutil.IsNoRows(err) {
				return nil
			}
			return err
		}
		sess, err := lockSession(ctx, tx, tok.SessionID)
		if err != nil {
			return err
		}
		live, err = s.revoke(ctx, tx, sess, revokedLogout, s.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("member: revoke the session of a refresh token: %w", err)
	}
	return s.denyAll(ctx, live)
}

// Revoked reports whether the access token jti is on the denylist, within the check
// timeout. A token without a jti (minted outside a login, e.g. by an older tool) is never
// on it. An error matches errcode.ErrUnavailable (the denylist did not answer) or, for a
// jti no token of the Service has (checkTokenID), errcode.ErrInvalidArgument: either way
// the caller must refuse the request.
func (s *Service) Revoked(ctx context.Context, jti string) (bool, error) {
	if jti == "" {
		return false, nil
	}
	if err := CheckTokenID("jti", jti); err != nil { // no token of ours: refused, not "not revoked"
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.checkTimeout)
	defer cancel()
	return s.deny.Denied(ctx, jti)
}

// MaxTokenIDLen bounds a token's jti and sid: the Service mints UUIDs (36 bytes).
const MaxTokenIDLen = 64

// CheckTokenID refuses a token ID (field "jti" or "sid"; empty when absent passes) the
// Service never mints and the denylist cannot hold: longer than MaxTokenIDLen or not printable ASCII. Such a token
// could be neither revoked nor found revoked, so it is refused rather than let through.
func CheckTokenID(field, id string) error {
	if len(id) > MaxTokenIDLen || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return errcode.Invalid(field, fmt.Sprintf("must be at most %d bytes of printable ASCII", MaxTokenIDLen))
	}
	return nil
}
