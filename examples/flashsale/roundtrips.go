package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// roundTrips are the server's counters of calls to its stores (refserver's
// commercekit_sql_round_trips_total and commercekit_redis_round_trips_total), keyed
// "sql begin", "sql statement", "redis command", ...
type roundTrips map[string]float64

// roundTrips reads the counters from the server's /metrics (as the admin); a server without them (an older
// refserver) gives an empty set.
func (d *driver) roundTrips(ctx context.Context) (roundTrips, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.c.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.admin) // /metrics is not public
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	prefixes := [...]struct{ store, prefix string }{
		{"sql", `commercekit_sql_round_trips_total{kind="`}, {"redis", `commercekit_redis_round_trips_total{kind="`}}
	rt := roundTrips{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, p := range prefixes {
			rest, ok := strings.CutPrefix(line, p.prefix)
			if !ok {
				continue
			}
			kind, value, ok := strings.Cut(rest, "\"} ")
			if v, err := strconv.ParseFloat(value, 64); ok && err == nil {
				rt[p.store+" "+kind] = v
			}
		}
	}
	return rt, sc.Err()
}

// perCheckout formats what the server sent its stores between before and after, per paid
// checkout: SQL transactions and statements, Redis round trips.
func perCheckout(before, after roundTrips, checkouts int) string {
	if len(after) == 0 || checkouts == 0 {
		return "not reported by the server"
	}
	d := func(k string) float64 { return (after[k] - before[k]) / float64(checkouts) }
	return fmt.Sprintf("%.1f SQL transactions, %.1f SQL statements (with BEGIN/COMMIT), %.1f Redis round trips",
		d("sql begin"), d("sql begin")+d("sql commit")+d("sql rollback")+d("sql statement"), d("redis command")+d("redis pipeline"))
}
