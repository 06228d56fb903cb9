package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/ledger"
)

func TestHistoryPages(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		start := e.clock.Now()
		total := int64(0)
		for i := int64(1); i <= 25; i++ {
			_, err := e.l.Charge(e.ctx, ledger.ChargeRequest{ID: fmt.Sprint("c", i), User: "alice", Amount: i, Reference: fmt.Sprint("pay-", i)})
			require.NoError(t, err)
			e.clock.Advance(time.Second)
		}
		e.charge("other", "bob", 1)

		var seen []int64
		cursor := ""
		for page := 0; ; page++ {
			p, err := e.l.History(e.ctx, "alice", cursor, 10)
			require.NoError(t, err)
			for _, en := range p.Entries {
				seen = append(seen, en.Amount)
				total = en.Amount * (en.Amount + 1) / 2 // balance after charges 1..n
				assert.Equal(t, ledger.Entry{ID: fmt.Sprint("c", en.Amount), Type: ledger.TypeCharge, Amount: en.Amount,
					Change: en.Amount, Balance: ledger.Balance{Available: total, Total: total},
					Reference: fmt.Sprint("pay-", en.Amount), Time: start.Add(time.Duration(en.Amount-1) * time.Second)}, en)
			}
			if page == 0 {
				e.charge("late", "alice", 100) // committed while paging: only on a new first page
			}
			if p.Next == "" {
				break
			}
			cursor = p.Next
		}
		want := make([]int64, 0, 25)
		for i := int64(25); i >= 1; i-- {
			want = append(want, i)
		}
		assert.Equal(t, want, seen, "newest first, each once")

		p, err := e.l.History(e.ctx, "alice", "", 0)
		require.NoError(t, err)
		assert.Len(t, p.Entries, 26, "limit 0 means the default")
		assert.Equal(t, "late", p.Entries[0].ID)

		p, err = e.l.History(e.ctx, "nobody", "", 10)
		require.NoError(t, err)
		assert.Empty(t, p.Entries)
		assert.Empty(t, p.Next)

		for _, c := range []struct {
			cursor string
			limit  int
			field  string
		}{{"", -1, "limit"}, {"", ledger.MaxHistoryLimit + 1, "limit"}, {"!", 10, "cursor"}, {"-5", 10, "cursor"}} {
			_, err := e.l.History(e.ctx, "alice", c.cursor, c.limit)
			assert.Equal(t, c.field, requireAs[*ledger.ValidationError](t, err, ledger.ErrInvalid).Field)
		}
	})
}
