package coupontest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
)

func testWallet(t *testing.T, h Harness) {
	ctx := context.Background()
	f := open(t, h)
	day := 24 * time.Hour
	short := f.template(t, coupon.Template{ID: "short", PerUserLimit: 10, ValidDays: 1})
	long := f.template(t, coupon.Template{ID: "long", PerUserLimit: 10})

	// alice: 4 short-lived and 3 lasting coupons, issued in this order; bob: 2.
	var issued []coupon.Coupon
	for i := range 7 {
		tpl := short.ID
		if i >= 4 {
			tpl = long.ID
		}
		issued = append(issued, f.issue(t, tpl, "alice", fmt.Sprint("alice-", i)))
		f.clock.Advance(time.Second)
	}
	f.issue(t, short.ID, "bob", "bob-0")
	f.issue(t, long.ID, "bob", "bob-1")

	page := func(q coupon.WalletQuery) coupon.WalletPage {
		t.Helper()
		p, err := f.Service.Wallet(ctx, "alice", q)
		require.NoError(t, err)
		return p
	}
	ids := func(cs []coupon.Coupon) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.ID
		}
		return out
	}

	t.Run("Pages", func(t *testing.T) {
		var got []coupon.Coupon
		var sizes []int
		q := coupon.WalletQuery{Limit: 3}
		for {
			p := page(q)
			got = append(got, p.Coupons...)
			sizes = append(sizes, len(p.Coupons))
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		assert.Equal(t, []int{3, 3, 1}, sizes)
		want := make([]string, len(issued))
		for i, c := range issued {
			want[len(issued)-1-i] = c.ID
		}
		assert.Equal(t, want, ids(got), "newest first, each coupon once, only alice's")
		assert.Equal(t, issued[6], got[0])

		all := page(coupon.WalletQuery{})
		assert.Len(t, all.Coupons, 7, "the default page holds them all")
		assert.Empty(t, all.Next)
	})

	t.Run("States", func(t *testing.T) {
		_, err := f.Service.Reserve(ctx, issued[4].ID, "alice", "order-r", 10_000)
		require.NoError(t, err)
		_, err = f.Service.Reserve(ctx, issued[5].ID, "alice", "order-u", 10_000)
		require.NoError(t, err)
		_, err = f.Service.Confirm(ctx, "order-u")
		require.NoError(t, err)
		_, err = f.Service.Reserve(ctx, issued[0].ID, "alice", "order-x", 10_000)
		require.NoError(t, err)
		f.clock.Advance(day) // the short-lived coupons expire; the reserved one stays reserved

		count := map[coupon.State]int{}
		for _, c := range page(coupon.WalletQuery{Limit: coupon.MaxPageSize}).Coupons {
			count[c.State]++
		}
		assert.Equal(t, map[coupon.State]int{coupon.StateAvailable: 1, coupon.StateReserved: 2, coupon.StateUsed: 1, coupon.StateExpired: 3}, count)
		for state, n := range count {
			p := page(coupon.WalletQuery{State: state, Limit: 1})
			got := len(p.Coupons)
			for p.Next != "" {
				p = page(coupon.WalletQuery{State: state, Limit: 1, Cursor: p.Next})
				got += len(p.Coupons)
			}
			assert.Equal(t, n, got, "filter %s", state)
		}
		expired := page(coupon.WalletQuery{State: coupon.StateExpired})
		assert.Equal(t, []string{issued[3].ID, issued[2].ID, issued[1].ID}, ids(expired.Coupons))
	})

	t.Run("IssuedWhilePaging", func(t *testing.T) {
		first := page(coupon.WalletQuery{Limit: 3})
		late := f.issue(t, long.ID, "alice", "alice-late")
		second := page(coupon.WalletQuery{Limit: 3, Cursor: first.Next})
		assert.Equal(t, []string{issued[3].ID, issued[2].ID, issued[1].ID}, ids(second.Coupons),
			"a coupon issued after the first page does not shift the next")
		assert.Equal(t, late.ID, page(coupon.WalletQuery{Limit: 1}).Coupons[0].ID)
	})

	t.Run("Invalid", func(t *testing.T) {
		for _, q := range []coupon.WalletQuery{{Limit: -1}, {Limit: coupon.MaxPageSize + 1}, {State: "lost"}, {Cursor: "bogus"}, {Cursor: "dzE6LTE"}} {
			_, err := f.Service.Wallet(ctx, "alice", q)
			assert.ErrorIs(t, err, coupon.ErrInvalidArgument, "%+v", q)
		}
		_, err := f.Service.Wallet(ctx, "", coupon.WalletQuery{})
		assert.ErrorIs(t, err, coupon.ErrInvalidArgument)
		empty, err := f.Service.Wallet(ctx, "nobody", coupon.WalletQuery{})
		require.NoError(t, err)
		assert.Empty(t, empty.Coupons)
		assert.Empty(t, empty.Next)
	})
}
