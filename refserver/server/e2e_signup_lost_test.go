package server_test

import (
	"database/sql"
	"net/http"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// newSignUpLossyEnv is a full-mode server whose MySQL (a database of the test's own in the
// package's server) is behind a lossyLink, with a direct connection to that database.
func newSignUpLossyEnv(t *testing.T) (*attackEnv, *lossyLink, *sql.DB) {
	t.Helper()
	dsn := testenv.MySQLDSN(t)
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	link := newLossyLink(t, mc.Addr)
	mc.Addr = link.Addr()
	opts := testenv.Redis(t).Options()
	cfg, sim, setHook := fullConfig(t, mc.FormatDSN(), opts.Addr, opts.DB)
	a := start(t, backend{name: "lossy-signup", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil, fastHash)
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return &attackEnv{app: a}, link, db
}

// members returns the IDs of the members with loginID.
func members(t *testing.T, db *sql.DB, loginID string) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT id FROM members WHERE login_id = ?", loginID)
	require.NoError(t, err)
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

// TestAttackSignUpRetriedAfterLostReply: a sign-up sent with an Idempotency-Key whose
// member row committed but whose reply was lost (503, "retry later") is retried as told,
// with the same key and body: it gets the 201 it lost, the same member, again on every
// retry, and there is one member row. Neither a retry with the key and another password
// nor one without the key learns anything or changes anything: they stay 409
// login_id_taken, as for anyone else signing up with a taken login ID.
func TestAttackSignUpRetriedAfterLostReply(t *testing.T) {
	e, link, db := newSignUpLossyEnv(t)
	body := server.SignUpJSON{LoginID: "carol", Password: "correct horse"}
	r, lost := e.lost(t, link, testenv.Nth(1, contains("INSERT INTO `members`")), "POST", "/v1/members", "", "signup-1", body)
	require.Len(t, lost, 1)
	expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	ids := members(t, db, "carol")
	require.Len(t, ids, 1, "the member row committed")

	other := server.SignUpJSON{LoginID: "carol", Password: "another horse"}
	expectProblem(t, e.call("POST", "/v1/members", "", "signup-1", other), http.StatusConflict, "login_id_taken")
	expectProblem(t, e.call("POST", "/v1/members", "", "", body), http.StatusConflict, "login_id_taken")
	expectProblem(t, e.call("POST", "/v1/members", "", "signup-2", body), http.StatusConflict, "login_id_taken")

	r = e.untilFinal(t, "sign-up retried", "POST", "/v1/members", "", "signup-1", body)
	m := as[server.MemberJSON](t, expect(t, r, http.StatusCreated))
	assert.Equal(t, ids[0], m.ID)
	assert.Equal(t, "carol", m.LoginID)
	again := as[server.MemberJSON](t, expect(t, e.call("POST", "/v1/members", "", "signup-1", body), http.StatusCreated))
	assert.Equal(t, m, again, "the same answer")

	expectProblem(t, e.call("POST", "/v1/members", "", "signup-1", other), http.StatusConflict, "login_id_taken")
	expectProblem(t, e.call("POST", "/v1/members", "", "", body), http.StatusConflict, "login_id_taken")
	assert.Equal(t, ids, members(t, db, "carol"), "one member row, the first")
	s := login1(t, e.app, "carol")
	assert.Equal(t, m.ID, s.UserID)
	expectProblem(t, e.call("POST", "/v1/sessions", "", "", other), http.StatusUnauthorized, "invalid_credentials")
}
