package server_test

import (
	"database/sql"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/driver/sqliteshim"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/refserver/server"
)

// fastHash keeps bcrypt cheap in tests (its cost is the point in production, not here).
var fastHash = server.WithMemberOptions(member.WithBcryptCost(bcrypt.MinCost))

// signUpAndLogin signs a member up and logs in.
func signUpAndLogin(t *testing.T, a *app, login string) server.SessionJSON {
	t.Helper()
	expect(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: login, Password: "correct horse"}), http.StatusCreated)
	return login1(t, a, login)
}

func login1(t *testing.T, a *app, login string) server.SessionJSON {
	t.Helper()
	return as[server.SessionJSON](t, expect(t, a.call("POST", "/v1/sessions", "", "",
		server.LoginJSON{LoginID: login, Password: "correct horse"}), http.StatusCreated))
}

func TestMembersSessions(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil, fastHash)

			// Sign-up: validated, duplicates refused, byte for byte.
			m := as[server.MemberJSON](t, expect(t, a.call("POST", "/v1/members", "", "",
				server.SignUpJSON{LoginID: "alice", Password: "correct horse"}), http.StatusCreated))
			assert.Equal(t, "alice", m.LoginID)
			expectProblem(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "alice", Password: "other password"}),
				http.StatusConflict, "login_id_taken")
			expect(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "ALICE", Password: "correct horse"}), http.StatusCreated)
			p := expectProblem(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "bob", Password: "short"}),
				http.StatusBadRequest, "invalid_request")
			assert.Equal(t, "password", p.Field)
			expectProblem(t, a.call("POST", "/v1/members", "", "", `{"login_id":"bob"}x`), http.StatusBadRequest, "malformed_request")

			// Login; the token works on user routes and its subject is the member.
			expectProblem(t, a.call("POST", "/v1/sessions", "", "", server.LoginJSON{LoginID: "alice", Password: "wrong horse"}),
				http.StatusUnauthorized, "invalid_credentials")
			s1 := login1(t, a, "alice")
			assert.Equal(t, m.ID, s1.UserID)
			assert.Equal(t, "Bearer", s1.TokenType)
			assert.InDelta(t, member.DefaultAccessTTL.Seconds(), s1.ExpiresIn, 2)
			expect(t, a.call("GET", "/v1/orders", s1.AccessToken, "", nil), http.StatusOK)
			expect(t, a.call("GET", "/v1/cart", s1.AccessToken, "", nil), http.StatusOK)

			// Refresh rotates; replaying the old refresh token revokes the whole family,
			// including the access token the rotation issued.
			s2 := as[server.SessionJSON](t, expect(t, a.call("POST", "/v1/sessions/refresh", "", "",
				server.RefreshJSON{RefreshToken: s1.RefreshToken}), http.StatusOK))
			expect(t, a.call("GET", "/v1/orders", s2.AccessToken, "", nil), http.StatusOK)
			expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s1.RefreshToken}),
				http.StatusUnauthorized, "refresh_token_reused")
			for _, tok := range []string{s1.AccessToken, s2.AccessToken} {
				expectProblem(t, a.call("GET", "/v1/orders", tok, "", nil), http.StatusUnauthorized, "token_revoked")
			}
			expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s2.RefreshToken}),
				http.StatusUnauthorized, "invalid_refresh_token")

			// Logout: the old access token is a 401 at once (but a logout again is done
			// already: 204), its refresh token is dead, and other sessions are untouched.
			s3, s4 := login1(t, a, "alice"), login1(t, a, "alice")
			expect(t, a.call("DELETE", "/v1/sessions", s3.AccessToken, "", nil), http.StatusNoContent)
			expectProblem(t, a.call("GET", "/v1/orders", s3.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
			expect(t, a.call("DELETE", "/v1/sessions", s3.AccessToken, "", nil), http.StatusNoContent)
			expectProblem(t, a.call("GET", "/v1/orders", s3.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
			expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s3.RefreshToken}),
				http.StatusUnauthorized, "invalid_refresh_token")
			expect(t, a.call("GET", "/v1/orders", s4.AccessToken, "", nil), http.StatusOK)

			// Tokens of `refserver token` keep working, and can be logged out too.
			tool := token(t, "tool-user", false)
			expect(t, a.call("GET", "/v1/orders", tool, "", nil), http.StatusOK)
			expect(t, a.call("DELETE", "/v1/sessions", tool, "", nil), http.StatusNoContent)
			expectProblem(t, a.call("GET", "/v1/orders", tool, "", nil), http.StatusUnauthorized, "token_revoked")
			expect(t, a.call("GET", "/v1/orders", token(t, "tool-user", false), "", nil), http.StatusOK)
		})
	}
}

// TestLoginLimits: failed logins per login ID end in 429 with Retry-After, even with the
// right password; another login ID is not affected.
func TestLoginLimits(t *testing.T) {
	a := start(t, embedded, nil, fastHash, server.WithMemberOptions(member.WithLoginLimits(3, 100, time.Minute)))
	signUpAndLogin(t, a, "alice")
	for range 3 {
		expectProblem(t, a.call("POST", "/v1/sessions", "", "", server.LoginJSON{LoginID: "alice", Password: "guess-guess"}),
			http.StatusUnauthorized, "invalid_credentials")
	}
	r := a.call("POST", "/v1/sessions", "", "", server.LoginJSON{LoginID: "alice", Password: "correct horse"})
	expectProblem(t, r, http.StatusTooManyRequests, "too_many_login_attempts")
	assert.Equal(t, "20", r.Header.Get("Retry-After"))
	signUpAndLogin(t, a, "bob")
}

// TestDenylistDown: a denylist that cannot answer fails authenticated requests with 503
// dependency_unavailable; public routes still answer.
func TestDenylistDown(t *testing.T) {
	var dsn string
	a := start(t, embedded, func(c *server.Config) { dsn = c.DBDSN }, fastHash)
	s := signUpAndLogin(t, a, "alice")
	db, err := sql.Open(sqliteshim.ShimName, "file:"+dsn+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("DROP TABLE member_denied_tokens")
	require.NoError(t, err)
	r := a.call("GET", "/v1/orders", s.AccessToken, "", nil)
	expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	expect(t, a.call("GET", "/v1/products", "", "", nil), http.StatusOK)
}

func TestCart(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil, fastHash)
			admin := setup(t, a, "p1", 3000, 100)
			expect(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: "p2", Name: "Product p2",
				Price: 1200, Stock: 100}), http.StatusCreated)
			alice := signUpAndLogin(t, a, "alice").AccessToken
			bob := signUpAndLogin(t, a, "bob").AccessToken

			expectProblem(t, a.call("POST", "/v1/orders", alice, "empty-1", server.PlaceOrderJSON{FromCart: true}),
				http.StatusUnprocessableEntity, "cart_empty")
			c := as[server.CartJSON](t, expect(t, a.call("POST", "/v1/cart/items", alice, "add-1",
				server.LineJSON{ProductID: "p1", Qty: 2}), http.StatusOK))
			require.Len(t, c.Items, 1)
			r := expect(t, a.call("POST", "/v1/cart/items", alice, "add-1", server.LineJSON{ProductID: "p1", Qty: 2}), http.StatusOK)
			assert.Equal(t, "true", r.Header.Get(server.ReplayedHeader), "adding is idempotent on its key")
			expect(t, a.call("POST", "/v1/cart/items", alice, "add-2", server.LineJSON{ProductID: "p2", Qty: 1}), http.StatusOK)
			c = as[server.CartJSON](t, expect(t, a.call("PUT", "/v1/cart/items/p2", alice, "", server.CartQtyJSON{Qty: 3}), http.StatusOK))
			assert.Equal(t, []server.CartItemJSON{
				{ProductID: "p1", Qty: 2, Name: "Product p1", UnitPrice: 3000, Amount: 6000, Available: 100, InStock: true, AddedAt: c.Items[0].AddedAt},
				{ProductID: "p2", Qty: 3, Name: "Product p2", UnitPrice: 1200, Amount: 3600, Available: 100, InStock: true, AddedAt: c.Items[1].AddedAt},
			}, c.Items)
			assert.Equal(t, int64(9600), c.Subtotal)

			// Bad input: a clear error, nothing changed.
			expectProblem(t, a.call("PUT", "/v1/cart/items/p2", alice, "", server.CartQtyJSON{Qty: 1000}), http.StatusBadRequest, "invalid_request")
			expectProblem(t, a.call("PUT", "/v1/cart/items/p2", alice, "", server.CartQtyJSON{Qty: 0}), http.StatusBadRequest, "invalid_request")
			expectProblem(t, a.call("POST", "/v1/cart/items", alice, "add-3", server.LineJSON{ProductID: "p1", Qty: 998}),
				http.StatusUnprocessableEntity, "quantity_too_large")
			expectProblem(t, a.call("POST", "/v1/cart/items", alice, "add-4", server.LineJSON{ProductID: "nope", Qty: 1}),
				http.StatusNotFound, "product_not_found")
			expectProblem(t, a.call("POST", "/v1/orders", alice, "bad-1", server.PlaceOrderJSON{FromCart: true,
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusBadRequest, "malformed_request")
			assert.Equal(t, c, as[server.CartJSON](t, expect(t, a.call("GET", "/v1/cart", alice, "", nil), http.StatusOK)))
			st := as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
			assert.Equal(t, int64(0), st.Reserved, "a cart reserves nothing")

			// The order from the cart equals the order of the same lines.
			fromCart := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-1",
				server.PlaceOrderJSON{FromCart: true}), http.StatusCreated))
			direct := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", bob, "order-1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}, {ProductID: "p2", Qty: 3}}}), http.StatusCreated))
			assert.Equal(t, direct.Lines, fromCart.Lines)
			assert.Equal(t, [4]int64{direct.Subtotal, direct.Discount, direct.Points, direct.AmountDue},
				[4]int64{fromCart.Subtotal, fromCart.Discount, fromCart.Points, fromCart.AmountDue})
			assert.Equal(t, "PENDING_PAYMENT", fromCart.Status)
			assert.Empty(t, as[server.CartJSON](t, a.call("GET", "/v1/cart", alice, "", nil)).Items, "the cart is emptied")
			again := expect(t, a.call("POST", "/v1/orders", alice, "order-1", server.PlaceOrderJSON{FromCart: true}), http.StatusCreated)
			assert.Equal(t, fromCart.ID, as[server.OrderJSON](t, again).ID)
			expect(t, a.call("POST", "/v1/orders/"+fromCart.ID+"/pay", alice, "pay-1", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
			expect(t, a.call("DELETE", "/v1/cart/items/p1", alice, "", nil), http.StatusOK)
			audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
			assert.True(t, audit.OK, "%v", audit.Discrepancies)
		})
	}
}

// TestConcurrentOrderFromCart: many requests ordering one cart with one Idempotency-Key
// make exactly one order, reserve its stock once and empty the cart once; every success
// is that order.
func TestConcurrentOrderFromCart(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil, fastHash)
			admin := setup(t, a, "p1", 1000, 50)
			alice := signUpAndLogin(t, a, "alice").AccessToken
			expect(t, a.call("POST", "/v1/cart/items", alice, "add-1", server.LineJSON{ProductID: "p1", Qty: 4}), http.StatusOK)

			const n = 16
			var wg sync.WaitGroup
			res := make([]resp, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					res[i], errs[i] = a.try("POST", "/v1/orders", alice, "one-key", server.PlaceOrderJSON{FromCart: true})
				})
			}
			wg.Wait()
			ids := map[string]bool{}
			for i := range n {
				require.NoError(t, errs[i])
				switch res[i].Status {
				case http.StatusCreated:
					var o server.OrderJSON
					require.NoError(t, jsonUnmarshal(res[i].Body, &o))
					ids[o.ID] = true
				case http.StatusConflict: // request_in_progress: the first is still running
					assert.Contains(t, string(res[i].Body), "request_in_progress")
				default:
					t.Errorf("request %d: %d %s", i, res[i].Status, res[i].Body)
				}
			}
			require.Len(t, ids, 1, "one order")
			// A retry after the race gets the same order.
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "one-key", server.PlaceOrderJSON{FromCart: true}), http.StatusCreated))
			assert.True(t, ids[o.ID])
			page := as[server.OrderPageJSON](t, a.call("GET", "/v1/orders", alice, "", nil))
			require.Len(t, page.Orders, 1)
			assert.Equal(t, int64(4), page.Orders[0].Lines[0].Qty)
			st := as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
			assert.Equal(t, [2]int64{46, 4}, [2]int64{st.Available, st.Reserved}, "reserved once")
			assert.Empty(t, as[server.CartJSON](t, a.call("GET", "/v1/cart", alice, "", nil)).Items)
			audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
			assert.True(t, audit.OK, "%v", audit.Discrepancies)
		})
	}
}

// TestTokenAnswersAreNotStored: an answer carrying tokens (a login, a refresh, a keyed
// refresh answered again) says Cache-Control: no-store and Pragma: no-cache, as OAuth 2.0
// requires of its token answers (RFC 6749 §5.1): a shared cache or a browser's history
// must not keep a live refresh token.
func TestTokenAnswersAreNotStored(t *testing.T) {
	a := start(t, embedded, nil, fastHash)
	expect(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "alice", Password: "correct horse"}), http.StatusCreated)
	noStore := func(name string, r resp) {
		t.Helper()
		assert.Equal(t, "no-store", r.Header.Get("Cache-Control"), name)
		assert.Equal(t, "no-cache", r.Header.Get("Pragma"), name)
	}
	login := expect(t, a.call("POST", "/v1/sessions", "", "", server.LoginJSON{LoginID: "alice", Password: "correct horse"}), http.StatusCreated)
	noStore("login", login)
	s := as[server.SessionJSON](t, login)
	refresh := server.RefreshJSON{RefreshToken: s.RefreshToken}
	noStore("refresh", expect(t, a.call("POST", "/v1/sessions/refresh", "", "refresh-1", refresh), http.StatusOK))
	noStore("refresh answered again", expect(t, a.call("POST", "/v1/sessions/refresh", "", "refresh-1", refresh), http.StatusOK))
}
