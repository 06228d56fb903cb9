package outbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/outbox"
)

// TestHeadersArePublishedAsAddedOrRefused: every event Add accepts is published with
// exactly the headers it was given — none altered on the way through the table, none
// lost to the column's size — and one whose headers cannot be kept so is refused with
// ErrInvalidEvent, nothing written.
func TestHeadersArePublishedAsAddedOrRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		good := outbox.Event{ID: "good", Topic: "orders", Key: "k", Type: "x", Payload: []byte(`{}`),
			Headers: map[string]string{"trace": "가나다 😀", "quote": `"\`}}
		_, err := outbox.Add(ctx, db, good)
		require.NoError(t, err)
		for name, h := range map[string]map[string]string{
			"invalid UTF-8 value": {"bin": "\xff\xfe"},
			"invalid UTF-8 name":  {"\xff": "v"},
			"over 64 KiB":         {"big": strings.Repeat("a", 70_000)},
		} {
			ev := outbox.Event{ID: "bad", Topic: "orders", Key: "k", Type: "x", Payload: []byte(`{}`), Headers: h}
			_, err := outbox.Add(ctx, db, ev)
			require.ErrorIs(t, err, outbox.ErrInvalidEvent, name)
			var ee *outbox.EventError
			require.ErrorAs(t, err, &ee, name)
			assert.Equal(t, "Headers", ee.Field, name)
		}
		var log publishLog
		r, err := outbox.NewRelay(db, &log)
		require.NoError(t, err)
		relayUntilDone(t, r, db)
		got := log.snapshot()
		require.Len(t, got, 1)
		assert.Equal(t, good.Headers, got[0].Headers)
		dead, err := r.DeadLetters(ctx, 0)
		require.NoError(t, err)
		assert.Empty(t, dead)
	})
}
