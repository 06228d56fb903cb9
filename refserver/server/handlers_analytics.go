package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/commercekit/commercekit/commerce/collector"
)

// MetricsJSON are a product's sales counters over a period (see collector.Metrics).
type MetricsJSON struct {
	Orders          int64 `json:"orders"`
	Units           int64 `json:"units"`
	Revenue         int64 `json:"revenue"`
	Cancellations   int64 `json:"cancellations"`
	UnitsRefunded   int64 `json:"units_refunded"`
	RevenueRefunded int64 `json:"revenue_refunded"`
	NetUnits        int64 `json:"net_units"`
	NetRevenue      int64 `json:"net_revenue"`
}

func metricsJSON(m collector.Metrics) MetricsJSON {
	return MetricsJSON{Orders: m.Orders, Units: m.Units, Revenue: m.Revenue, Cancellations: m.Cancellations,
		UnitsRefunded: m.UnitsRefunded, RevenueRefunded: m.RevenueRefunded, NetUnits: m.NetUnits, NetRevenue: m.NetRevenue}
}

// RankedJSON is one product of a ranking.
type RankedJSON struct {
	Rank      int    `json:"rank"`
	ProductID string `json:"product_id"`
	MetricsJSON
}

// RankingJSON is a period's best sellers by net units sold, ties by product ID.
type RankingJSON struct {
	Period   string       `json:"period"`
	Start    string       `json:"start"`
	TimeZone string       `json:"time_zone"`
	Items    []RankedJSON `json:"items"`
}

// PeriodMetricsJSON is a product's metrics over one period.
type PeriodMetricsJSON struct {
	Start string `json:"start"`
	MetricsJSON
}

// ProductMetricsJSON is a product's metrics over a range of periods.
type ProductMetricsJSON struct {
	ProductID string              `json:"product_id"`
	Period    string              `json:"period"`
	TimeZone  string              `json:"time_zone"`
	Items     []PeriodMetricsJSON `json:"items"`
}

// analyticsDate reads a YYYY-MM-DD query parameter whose value is v; absent, today in the
// metrics' zone.
func (s *Server) analyticsDate(v string) (time.Time, error) {
	if v == "" {
		v = s.now().In(s.st.collector.Location()).Format(time.DateOnly)
	}
	return collector.ParseDate(v)
}

func analyticsPeriod(v string) (collector.Period, error) {
	if v == "" {
		return collector.Daily, nil
	}
	return collector.ParsePeriod(v)
}

// rankings serves GET /v1/rankings?period=daily|weekly|monthly&date=YYYY-MM-DD&limit=N.
func (s *Server) rankings(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, err := analyticsPeriod(q.Get("period"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	date, err := s.analyticsDate(q.Get("date"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit := 10
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil {
			s.writeError(w, r, &queryError{param: "limit", reason: "is not an integer"})
			return
		}
	}
	top, err := s.st.collector.Ranking(r.Context(), p, date, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := RankingJSON{Period: string(p), Start: collector.PeriodStart(p, date), TimeZone: s.st.collector.Location().String(),
		Items: make([]RankedJSON, len(top))}
	for i, t := range top {
		out.Items[i] = RankedJSON{Rank: t.Rank, ProductID: t.ProductID, MetricsJSON: metricsJSON(t.Metrics)}
	}
	writeJSON(w, http.StatusOK, out)
}

// productMetrics serves GET /v1/products/{id}/metrics?period=...&from=...&to=...; 404 for a
// product the catalogue does not hold.
func (s *Server) productMetrics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, err := analyticsPeriod(q.Get("period"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	to, err := s.analyticsDate(q.Get("to"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	from := to
	if v := q.Get("from"); v != "" {
		if from, err = collector.ParseDate(v); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	id := r.PathValue("id")
	rows, err := s.st.collector.ProductMetrics(r.Context(), id, p, from, to)
	if err == nil && len(rows) == 0 {
		// No sales in the range, or no such product: only then is the catalogue read, to
		// answer an unknown product 404 product_not_found, as its stock is.
		err = s.svc.CheckProduct(r.Context(), id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := ProductMetricsJSON{ProductID: id, Period: string(p), TimeZone: s.st.collector.Location().String(),
		Items: make([]PeriodMetricsJSON, len(rows))}
	for i, m := range rows {
		out.Items[i] = PeriodMetricsJSON{Start: m.Start, MetricsJSON: metricsJSON(m.Metrics)}
	}
	writeJSON(w, http.StatusOK, out)
}

// queryError is a malformed query parameter.
type queryError struct{ param, reason string }

func (e *queryError) Error() string { return "query parameter " + e.param + " " + e.reason }
func (e *queryError) Unwrap() error { return collector.ErrInvalidArgument }
