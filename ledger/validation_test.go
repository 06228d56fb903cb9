package ledger_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/ledger"
)

// TestInvalidInput: every malformed request fails with a *ValidationError naming the field
// and changes nothing.
func TestInvalidInput(t *testing.T) {
	long := strings.Repeat("x", ledger.MaxIDLen+1)
	cases := []struct {
		name, field string
		do          func(e *env) error
	}{
		{"empty ID", "ID", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{User: "u", Amount: 1}) }},
		{"long ID", "ID", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: long, User: "u", Amount: 1}) }},
		{"control character", "ID", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "a\nb", User: "u", Amount: 1}) }},
		{"NUL", "User", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "a\x00", Amount: 1}) }},
		{"bad UTF-8", "User", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "\xff", Amount: 1}) }},
		{"zero amount", "Amount", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u"}) }},
		{"negative amount", "Amount", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u", Amount: -1}) }},
		{"huge amount", "Amount", func(e *env) error {
			return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u", Amount: ledger.MaxAmount + 1})
		}},
		{"long reference", "Reference", func(e *env) error {
			return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u", Amount: 1, Reference: strings.Repeat("가", ledger.MaxReferenceLen+1)})
		}},
		{"earn without user", "User", func(e *env) error {
			_, err := e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e", Amount: 1})
			return err
		}},
		{"spend zero", "Amount", func(e *env) error { _, err := e.spend("s", "u", 0); return err }},
		{"refund without spend", "SpendID", func(e *env) error {
			_, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r", Amount: 1})
			return err
		}},
		{"adjust zero", "Delta", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Reason: "r"})
			return err
		}},
		{"adjust min int64", "Delta", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Delta: math.MinInt64, Reason: "r"})
			return err
		}},
		{"adjust without reason", "Reason", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Delta: 1})
			return err
		}},
		{"adjust long reason", "Reason", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Delta: 1, Reason: strings.Repeat("r", ledger.MaxReasonLen+1)})
			return err
		}},
		{"hold zero timeout", "timeout", func(e *env) error { _, err := e.l.Hold(e.ctx, "h", "u", 1, 0); return err }},
		{"hold sub-microsecond timeout", "timeout", func(e *env) error { _, err := e.l.Hold(e.ctx, "h", "u", 1, time.Nanosecond); return err }},
		{"hold long timeout", "timeout", func(e *env) error {
			_, err := e.l.Hold(e.ctx, "h", "u", 1, ledger.MaxHoldTimeout+time.Second)
			return err
		}},
		{"hold zero", "amount", func(e *env) error { _, err := e.l.Hold(e.ctx, "h", "u", 0, time.Minute); return err }},
		{"capture zero", "amount", func(e *env) error { return capture(e, "h", 0) }},
		{"capture without ID", "holdID", func(e *env) error { return capture(e, "", 1) }},
		{"void long ID", "holdID", func(e *env) error { return void(e, long) }},
		{"balance without user", "user", func(e *env) error { _, err := e.l.Balance(e.ctx, ""); return err }},
		{"expiring without user", "user", func(e *env) error { _, err := e.l.Expiring(e.ctx, ""); return err }},
		{"lookup without ID", "holdID", func(e *env) error { _, err := e.l.LookupHold(e.ctx, ""); return err }},
	}
	each(t, func(t *testing.T, e *env) {
		for _, c := range cases {
			err := c.do(e)
			ve := requireAs[*ledger.ValidationError](t, err, ledger.ErrInvalid)
			assert.Equal(t, c.field, ve.Field, c.name)
		}
		r := e.verify()
		assert.Zero(t, r.Users, "nothing was created")
		assert.Zero(t, r.Transfers)
	})
}

func chargeErr(e *env, r ledger.ChargeRequest) error {
	_, err := e.l.Charge(e.ctx, r)
	return err
}

// TestLongestValues: values at every limit are stored and read back whole.
func TestLongestValues(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		id, user := strings.Repeat("i", ledger.MaxIDLen), strings.Repeat("u", ledger.MaxIDLen)
		ref, reason := strings.Repeat("참", ledger.MaxReferenceLen), strings.Repeat("고", ledger.MaxReasonLen)
		_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: id, User: user, Delta: ledger.MaxAmount, Reason: reason, Reference: ref})
		require.NoError(t, err)
		h := e.history(user)
		require.Len(t, h, 1)
		assert.Equal(t, id, h[0].ID)
		assert.Equal(t, ref, h[0].Reference)
		assert.Equal(t, reason, h[0].Reason)
		assert.EqualValues(t, ledger.MaxAmount, h[0].Balance.Available)
		e.verify()
	})
}
