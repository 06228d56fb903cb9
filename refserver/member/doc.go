// Package member is the reference server's member service: sign-up, login, refresh-token
// rotation and logout, with the members and their sessions in SQL (bun: MySQL/MariaDB or
// SQLite) and a denylist of logged-out access tokens (Redis or SQL).
//
// # Members
//
// SignUp records a login ID (3-64 bytes of letters, digits and . _ - @ +; compared byte for
// byte, so "Alice" and "alice" are two members) and a password (8-72 bytes) hashed with
// bcrypt. The password is never stored, logged or returned. A login ID that is taken fails
// with ErrLoginIDTaken. A repeated sign-up is not answered with the member because its
// login ID (or even its password) matches: that would be an oracle of accounts and
// passwords escaping the login limits. A client whose sign-up answer may be lost — a
// database failure after the commit, a network cut — signs up with SignUpOnce and a key
// of its own: the key is recorded with the member (as an HMAC under the Service's
// secret) in the same insert, and a retry with the same login ID, password and key gets
// the member that sign-up recorded. Without the key, with another one, or with the key
// and another password, the retry is ErrLoginIDTaken like any other; the password check
// of a retry with the right key counts as a login attempt (see Login limits).
//
// bcrypt is the costliest work anyone can ask of the server, so it is rationed: a client
// address hashes (sign-up) or checks (login) one password at a time in a process, its
// other requests waiting their turn, and the process runs at most WithPasswordChecks of
// them at once (DefaultPasswordChecks: half its CPUs), so that sign-ups and logins never
// take the whole machine from the orders. A request whose context ends while it waits
// fails with the context's error (refserver: 503 with Retry-After).
//
// # Sessions
//
// Login checks the password and opens a session: an access token (an HS256 JWT with sub =
// the member's user ID, a unique jti, sid = the session ID and a short expiry, 15 minutes
// by default) and a refresh token (32 random bytes, stored only as their SHA-256, valid 30
// days by default). Refresh trades a refresh token for a new pair (rotation): each
// refresh token works once. Presenting one that was already used means two parties hold
// it, so the whole session (the token family) is revoked and every access token it issued
// that has not expired goes on the denylist (ErrRefreshTokenReused). A refresh whose answer
// was lost after its rotation committed (a database or network failure: the caller was
// told to retry) would meet that rule on its retry; RefreshOnce, given a key by the
// caller, answers the retry with the same pair instead, while the new refresh token is
// unused. Only the key's holder gets it: a presentation without the key is a reuse.
//
// Logout revokes the caller's session with the same effect as above and puts the caller's
// access token on the denylist until a minute past its expiry (DenyMargin, beyond any
// verifier's clock leeway), that token last: a logout that fails part-way (503) leaves the
// caller a token to retry with, unless the denylist answers from the SQL record the
// revocation already wrote (then the logout is done). A refresh token of a revoked session
// denies the session's live access tokens again, so a denial that failed after a reuse is
// finished by a retry. The denylist's SQL entries for a revoked session's tokens are
// written in the transaction that revokes it, so no failure after it (nor a thief who
// never retries) leaves one of them off the record.
// The server checks every authenticated request with Revoked. A denylist that cannot
// answer is an error matching errcode.ErrUnavailable: a request is never let through
// because the check failed. In full mode the denylist is RedisDenylist: entries are
// written to SQL first (the system of record) and read from Redis; a Redis that comes back
// empty is rebuilt from SQL by the next check before it answers, so a revoked token is
// never let through because Redis forgot it. A denial is also recorded unpublished, in
// the same transaction, until its server has written it into Redis; every server
// publishes what is left on that list before it answers, at most a second apart
// (WithPublishCheck), so a denial whose server could not reach Redis, or died before it
// wrote it, reaches every server within that second. A check that cannot read the list
// fails closed (see RedisDenylist).
//
// # Login limits
//
// Failed logins are limited per login ID and per client address with token buckets (by
// default 5 failures per login ID and 20 per address, refilled over 15 minutes; the server
// passes an IPv6 client's /64 as its address). Every attempt takes a token before the
// password is checked, so attempts sent at once count like attempts sent one by one; once
// a bucket is empty, logins with that ID or from that address fail with *RateLimitError
// until a token has refilled. A successful login refills the login ID's bucket and gives
// the address its token back. The login ID's token is taken first; the address's once the
// member is read, just before the check, and one check per address runs at a time in a
// process: a check in flight holds its token, and a database stall or a crowd of logins
// from one address (an office behind one NAT) must not look like failures. A login ID that no member can have (see SignUp) is refused
// as invalid before the limits and the database, so no spelling the database would match
// to a member (MySQL ignores trailing spaces) gets a budget of its own.
//
// The buckets live in a Limiter (WithLimiter). The default, a MemoryLimiter, keeps them in
// the process, which is right for one instance only: behind a load balancer an attacker
// would get a budget per instance. RedisLimiter keeps them in Redis, shared by every
// instance (refserver uses it in full mode), on Redis's clock: instances whose clocks
// disagree refill and remember them alike. A limiter that cannot answer fails the login
// closed with an error matching errcode.ErrUnavailable: no attempt goes unlimited.
package member
