package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/commercekit/commercekit/refserver/server"
)

// report is what a sale did and what the checks found.
type report struct {
	prepared, race time.Duration
	buyers         []*buyer
	stock          server.StockJSON
	audit          server.AuditJSON
	checks         []check
	// roundTrips are the server's store round trips before and after the race.
	roundTrips [2]roundTrips
	// retried counts the race's requests sent again after a busy answer (503 or 409 with Retry-After).
	retried int64
}

// check is one invariant and its verdict.
type check struct {
	name   string
	ok     bool
	detail string
}

func (r *report) ok() bool {
	return !slices.ContainsFunc(r.checks, func(c check) bool { return !c.ok })
}

func (r *report) add(name string, ok bool, format string, args ...any) {
	r.checks = append(r.checks, check{name, ok, fmt.Sprintf(format, args...)})
}

// afterSale is what the API says about one buyer once the sale is over.
type afterSale struct {
	paidOrders  int
	otherOrders int
	balance     server.BalanceJSON
	couponState string
}

// verify reads the end state through the API and checks the invariants.
func (d *driver) verify(ctx context.Context, r *report) error {
	if _, err := d.call(ctx, d.admin, "GET", "/v1/products/"+d.product+"/stock", "", nil, http.StatusOK, &r.stock); err != nil {
		return err
	}
	var mu sync.Mutex
	after := make(map[*buyer]afterSale, len(d.buyers))
	err := d.each(ctx, func(ctx context.Context, b *buyer) error {
		var a afterSale
		var orders server.OrderPageJSON
		if _, err := d.call(ctx, b.token, "GET", "/v1/orders?limit=100", "", nil, http.StatusOK, &orders); err != nil {
			return err
		}
		for _, o := range orders.Orders {
			if o.Status == "PAID" {
				a.paidOrders++
			} else {
				a.otherOrders++
			}
		}
		if _, err := d.call(ctx, b.token, "GET", "/v1/points", "", nil, http.StatusOK, &a.balance); err != nil {
			return err
		}
		if b.coupon != "" {
			var wallet server.CouponPageJSON
			if _, err := d.call(ctx, b.token, "GET", "/v1/coupons?limit=100", "", nil, http.StatusOK, &wallet); err != nil {
				return err
			}
			for _, c := range wallet.Coupons {
				if c.ID == b.coupon {
					a.couponState = c.State
				}
			}
		}
		mu.Lock()
		after[b] = a
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := d.call(ctx, d.admin, "GET", "/v1/admin/audit", "", nil, http.StatusOK, &r.audit); err != nil {
		return err
	}

	var placed, paid, soldOut, listedPaid, twice, failures int
	var couponsUsed, couponsAvailable, couponsWrong, pointsWrong int
	others := map[string]int{} // what the buyers who did not pay got instead
	for _, b := range d.buyers {
		a := after[b]
		switch {
		case b.failure != "":
			others["error: "+b.failure]++
		case b.refusal != "" && b.refusal != "out_of_stock":
			others[b.refusal]++
		case b.placeStatus == http.StatusCreated && b.order.Status != "PAID":
			others["order "+b.order.Status+" "+b.order.FailureCode]++
		}
		switch {
		case b.failure != "":
			failures++
		case b.placeStatus == http.StatusCreated:
			placed++
		case b.refusal == "out_of_stock":
			soldOut++
		}
		won := b.order.Status == "PAID"
		if won {
			paid++
		}
		listedPaid += a.paidOrders
		if a.paidOrders > 1 || a.otherOrders > 0 {
			twice++
		}
		switch {
		case b.coupon == "":
		case won && a.couponState == "used":
			couponsUsed++
		case !won && a.couponState == "available":
			couponsAvailable++
		default:
			couponsWrong++
		}
		want := d.c.points
		if won {
			want += b.order.Reward - b.order.Points
		}
		if a.balance.Available != want || a.balance.Held != 0 {
			pointsWrong++
		}
	}
	units := d.c.units
	r.add("every buyer answered", failures == 0 && placed+soldOut == len(d.buyers) && paid == placed,
		"%d placed and %d paid, %d refused as sold out, %d failed or refused otherwise%s", placed, paid, soldOut,
		len(d.buyers)-placed-soldOut, otherAnswers(others))
	r.add("no oversell", r.stock.Sold <= units && r.stock.Reserved == 0 && r.stock.Available+r.stock.Sold == units,
		"sold %d of %d, reserved %d, available %d", r.stock.Sold, units, r.stock.Reserved, r.stock.Available)
	r.add("sold = paid orders", r.stock.Sold == int64(paid) && listedPaid == paid && twice == 0,
		"sold %d, paid answers %d, paid orders listed %d, buyers with more than one order %d", r.stock.Sold, paid, listedPaid, twice)
	if d.c.discount > 0 {
		r.add("coupons conserved", couponsWrong == 0 && couponsUsed == paid && couponsAvailable == len(d.buyers)-paid,
			"%d used by paid orders, %d still available to the others, %d wrong", couponsUsed, couponsAvailable, couponsWrong)
	}
	if d.c.points > 0 {
		r.add("points conserved", pointsWrong == 0,
			"each buyer holds what they bought, minus what a paid order spent, plus its reward: %d wrong", pointsWrong)
	}
	r.add("audit (events, reservations, coupons, points, payments)", r.audit.OK,
		"%d orders audited, discrepancies: %v", r.audit.Orders, r.audit.Discrepancies)
	return nil
}

// print writes the report.
func (r *report) print(w io.Writer, c config) {
	var place, pay, checkout []time.Duration
	var paid, placeReqs, payReqs int
	for _, b := range r.buyers {
		if b.placeStatus != 0 {
			placeReqs++
			place = append(place, b.placeTook)
		}
		if b.payStatus != 0 {
			payReqs++
			pay = append(pay, b.payTook)
			checkout = append(checkout, b.placeTook+b.payTook)
		}
		if b.order.Status == "PAID" {
			paid++
		}
	}
	secs := r.race.Seconds()
	fmt.Fprintf(w, "flash sale: %d buyers, %d units, %d clients against %s (run %s)\n", len(r.buyers), c.units, c.clients, c.url, c.runID)
	fmt.Fprintf(w, "preparation (coupons and points for every buyer): %s\n", r.prepared.Round(time.Millisecond))
	fmt.Fprintf(w, "race: %s\n", r.race.Round(time.Millisecond))
	fmt.Fprintf(w, "  requests     %d (%d orders, %d payments): %.0f requests/s; %d sent again after Retry-After (503, 409 in progress)\n",
		placeReqs+payReqs, placeReqs, payReqs, float64(placeReqs+payReqs)/secs, r.retried)
	fmt.Fprintf(w, "  sold         %d units in %d paid orders: %.0f checkouts/s; %d buyers turned away\n", r.stock.Sold, paid, float64(paid)/secs, placeReqs-payReqs)
	fmt.Fprintf(w, "  per checkout %s\n", perCheckout(r.roundTrips[0], r.roundTrips[1], paid))
	fmt.Fprintf(w, "  latency      %8s %8s %8s %8s\n", "p50", "p95", "p99", "max")
	for _, l := range []struct {
		name string
		d    []time.Duration
	}{{"place order", place}, {"pay", pay}, {"place+pay", checkout}} {
		fmt.Fprintf(w, "  %-12s %8s %8s %8s %8s\n", l.name, pct(l.d, 50), pct(l.d, 95), pct(l.d, 99), pct(l.d, 100))
	}
	fmt.Fprintln(w, "invariants:")
	for _, ch := range r.checks {
		verdict := "ok  "
		if !ch.ok {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s: %s\n", verdict, ch.name, ch.detail)
	}
}

// pct returns the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = max(1, min(i, len(s)))
	return s[i-1].Round(10 * time.Microsecond).String()
}

// otherAnswers lists what buyers got instead of a paid order or "sold out", by kind.
func otherAnswers(others map[string]int) string {
	if len(others) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(others)) {
		parts = append(parts, fmt.Sprintf("%d × %s", others[k], k))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}
