package coupontest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
)

func testTemplates(t *testing.T, h Harness) {
	ctx := context.Background()
	fixed := coupon.Terms{Kind: coupon.FixedAmount, Amount: 3000}
	percent := coupon.Terms{Kind: coupon.PercentOff, Percent: 10, MaxDiscount: 5000}

	t.Run("Invalid", func(t *testing.T) {
		f := open(t, h)
		invalid := []struct {
			field string
			tpl   coupon.Template
		}{
			{"ID", coupon.Template{Terms: fixed}},
			{"ID", coupon.Template{ID: strings.Repeat("x", 65), Terms: fixed}},
			{"Name", coupon.Template{ID: "t", Name: strings.Repeat("n", 201), Terms: fixed}},
			{"ID", coupon.Template{ID: "t\x00", Terms: fixed}},
			{"ID", coupon.Template{ID: "t ", Terms: fixed}},                           // MySQL would take it for "t"
			{"Name", coupon.Template{ID: "t", Name: "a\x01b\x1bc\x7f", Terms: fixed}}, // copied into every coupon
			{"Name", coupon.Template{ID: "t", Name: "a\x00b", Terms: fixed}},
			{"Kind", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: "bogo", Amount: 1}}},
			{"Amount", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.FixedAmount}}},
			{"Amount", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: -5}}},
			{"Percent", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 5, Percent: 10}}},
			{"Percent", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 5, MaxDiscount: 10}}},
			{"Percent", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.PercentOff}}},
			{"Percent", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.PercentOff, Percent: 101}}},
			{"Amount", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.PercentOff, Percent: 10, Amount: 5}}},
			{"MaxDiscount", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.PercentOff, Percent: 10, MaxDiscount: -1}}},
			{"MinOrderAmount", coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 5, MinOrderAmount: -1}}},
			{"TotalQuantity", coupon.Template{ID: "t", Terms: fixed, TotalQuantity: -1}},
			{"TotalQuantity", coupon.Template{ID: "t", Terms: fixed, TotalQuantity: coupon.MaxTotalQuantity + 1}},
			{"PerUserLimit", coupon.Template{ID: "t", Terms: fixed, PerUserLimit: -1}},
			{"PerUserLimit", coupon.Template{ID: "t", Terms: fixed, PerUserLimit: coupon.MaxPerUserLimit + 1}},
			{"ValidDays", coupon.Template{ID: "t", Terms: fixed, ValidDays: -1}},
			{"IssueEnd", coupon.Template{ID: "t", Terms: fixed, IssueStart: start, IssueEnd: start}},
			{"UseBy", coupon.Template{ID: "t", Terms: fixed, IssueStart: start, UseBy: start.Add(-time.Hour)}},
			{"UseBy", coupon.Template{ID: "t", Terms: fixed, UsableFrom: start.Add(48 * time.Hour), UseBy: start.Add(24 * time.Hour)}},
			// Years 10000 and -1 in UTC: a 500 on MySQL; on SQLite stored, and unreadable for good.
			{"UseBy", coupon.Template{ID: "t", Terms: fixed, UseBy: time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -10*3600))}},
			{"IssueStart", coupon.Template{ID: "t", Terms: fixed, IssueStart: time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600))}},
		}
		for _, tc := range invalid {
			_, err := f.Service.CreateTemplate(ctx, tc.tpl)
			require.ErrorIs(t, err, coupon.ErrInvalidTemplate, "%+v", tc.tpl)
			var ve *coupon.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tc.field, ve.Field, "%v", err)
			assert.Equal(t, "invalid_coupon_template", errcode.ReasonOf(err))
		}
		_, err := f.Service.Template(ctx, "t")
		assert.ErrorIs(t, err, coupon.ErrTemplateNotFound, "an invalid template stores nothing")
	})

	t.Run("CreateAndRead", func(t *testing.T) {
		f := open(t, h)
		seoul := time.FixedZone("KST", 9*3600)
		in := coupon.Template{
			ID: "welcome", Name: "Welcome 10%", Terms: percent,
			IssueStart: start.In(seoul), IssueEnd: start.Add(72 * time.Hour).Add(123 * time.Nanosecond),
			UseBy: start.Add(30 * 24 * time.Hour), ValidDays: 7, TotalQuantity: 500,
		}
		got, err := f.Service.CreateTemplate(ctx, in)
		require.NoError(t, err)
		assert.Equal(t, 1, got.PerUserLimit, "the per-user limit defaults to 1")
		assert.Equal(t, start, got.CreatedAt)
		assert.Equal(t, time.UTC, got.IssueStart.Location())
		assert.True(t, got.IssueStart.Equal(start))
		assert.Equal(t, start.Add(72*time.Hour), got.IssueEnd, "times keep microseconds")

		read, err := f.Service.Template(ctx, "welcome")
		require.NoError(t, err)
		assert.Equal(t, got, read)

		again, err := f.Service.CreateTemplate(ctx, in)
		require.NoError(t, err, "creating the same template again is idempotent")
		assert.Equal(t, got, again)

		in.TotalQuantity = 501
		_, err = f.Service.CreateTemplate(ctx, in)
		assert.ErrorIs(t, err, coupon.ErrTemplateExists)

		_, err = f.Service.Template(ctx, "nope")
		assert.ErrorIs(t, err, coupon.ErrTemplateNotFound)
		_, err = f.Service.Template(ctx, "")
		assert.ErrorIs(t, err, coupon.ErrInvalidArgument)

		require.NoError(t, coupon.CreateSchema(ctx, f.DB), "CreateSchema is idempotent")
		read, err = f.Service.Template(ctx, "welcome")
		require.NoError(t, err)
		assert.Equal(t, got, read)
	})
}
