package server_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestRelayDeadLettersAdmin: an event the relay set aside (a poison event) is listed to
// admins, skipped once, and a second resolution of it is a harmless 404; users may not touch
// dead letters.
func TestRelayDeadLettersAdmin(t *testing.T) {
	var dsn string
	a := start(t, embedded, func(c *server.Config) { dsn = c.DBDSN })
	admin, alice := token(t, "ops", true), token(t, "alice", false)
	page := as[server.DeadLetterPageJSON](t, expect(t, a.call("GET", "/v1/admin/outbox/dead-letters", admin, "", nil), http.StatusOK))
	assert.Empty(t, page.DeadLetters)

	// What the relay does to an event the publisher can never take.
	db, err := sql.Open(sqliteshim.ShimName, "file:"+dsn+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	_, err = db.ExecContext(t.Context(), `INSERT INTO outbox_events (id, topic, aggregate_key, seq, event_type, payload, created_at, dead_at, dead_reason)
		VALUES ('ev-poison', 'commerce-orders', 'ord-1', 1, 'order.created', '{}', ?, ?, 'message too large for the broker')`, at, at)
	require.NoError(t, err)

	expectProblem(t, a.call("GET", "/v1/admin/outbox/dead-letters", alice, "", nil), http.StatusForbidden, "forbidden")
	expectProblem(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-poison/skip", alice, "", nil), http.StatusForbidden, "forbidden")
	page = as[server.DeadLetterPageJSON](t, expect(t, a.call("GET", "/v1/admin/outbox/dead-letters", admin, "", nil), http.StatusOK))
	require.Len(t, page.DeadLetters, 1)
	assert.Equal(t, server.DeadLetterJSON{ID: "ev-poison", Topic: "commerce-orders", Key: "ord-1", Seq: 1, Type: "order.created",
		Error: "message too large for the broker", SetAsideAt: at}, page.DeadLetters[0])

	expect(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-poison/skip", admin, "", nil), http.StatusNoContent)
	// Sent again after its answer was lost: done already. The other resolution is refused.
	expect(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-poison/skip", admin, "", nil), http.StatusNoContent)
	expectProblem(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-poison/redrive", admin, "", nil), http.StatusConflict, "dead_letter_resolved")
	expectProblem(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-unknown/redrive", admin, "", nil), http.StatusNotFound, "not_dead_letter")
	page = as[server.DeadLetterPageJSON](t, expect(t, a.call("GET", "/v1/admin/outbox/dead-letters", admin, "", nil), http.StatusOK))
	assert.Empty(t, page.DeadLetters)
	sent := func(id string) bool {
		var ok bool
		require.NoError(t, db.QueryRowContext(t.Context(), `SELECT sent_at IS NOT NULL FROM outbox_events WHERE id = ?`, id).Scan(&ok))
		return ok
	}
	assert.True(t, sent("ev-poison"), "a skipped dead letter leaves with the sent events")

	// A redriven dead letter (its cause fixed) is published by the relay.
	_, err = db.ExecContext(t.Context(), `INSERT INTO outbox_events (id, topic, aggregate_key, seq, event_type, payload, created_at, dead_at, dead_reason)
		VALUES ('ev-redrive', 'commerce-orders', 'ord-2', 1, 'order.created', '{}', ?, ?, 'broker refused it')`, at, at)
	require.NoError(t, err)
	expect(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-redrive/redrive", admin, "", nil), http.StatusNoContent)
	require.Eventually(t, func() bool { return sent("ev-redrive") }, 30*time.Second, 20*time.Millisecond)
	expect(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-redrive/redrive", admin, "", nil), http.StatusNoContent)
	expectProblem(t, a.call("POST", "/v1/admin/outbox/dead-letters/ev-redrive/skip", admin, "", nil), http.StatusConflict, "dead_letter_resolved")
}

// TestRelayDeadLettersListingReadsNoPayload: the relay sets aside the events the broker
// can never take, typically those too large for it, up to outbox.MaxPayloadLen (8 MiB)
// each. The listing shows none of their payloads, yet read every one of them: 500 such
// letters, the listing's bound, cost a request 4 GiB. It reads the columns it shows.
func TestRelayDeadLettersListingReadsNoPayload(t *testing.T) {
	var dsn string
	a := start(t, embedded, func(c *server.Config) { dsn = c.DBDSN })
	admin := token(t, "ops", true)
	db, err := sql.Open(sqliteshim.ShimName, "file:"+dsn+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	const letters, payload = 20, 2 << 20
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for i := range letters {
		_, err = db.ExecContext(t.Context(), `INSERT INTO outbox_events (id, topic, aggregate_key, seq, event_type, payload, created_at, dead_at, dead_reason)
			VALUES (?, 'commerce-orders', ?, 1, 'order.created', zeroblob(?), ?, ?, 'message too large for the broker')`,
			fmt.Sprintf("ev-big-%02d", i), fmt.Sprintf("ord-%02d", i), payload, at, at)
		require.NoError(t, err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	page := as[server.DeadLetterPageJSON](t, expect(t, a.call("GET", "/v1/admin/outbox/dead-letters", admin, "", nil), http.StatusOK))
	runtime.ReadMemStats(&after)
	require.Len(t, page.DeadLetters, letters)
	assert.Equal(t, "ev-big-00", page.DeadLetters[0].ID)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(letters*payload/4),
		"the listing allocated %d MiB for %d letters of %d MiB it does not show", (after.TotalAlloc-before.TotalAlloc)>>20, letters, payload>>20)
}
