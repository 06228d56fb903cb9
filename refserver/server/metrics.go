package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/commercekit/commercekit/observe"
)

// metrics holds the server's Prometheus registry (its own, never the global one) and the
// collectors the HTTP layer and the libraries' observer hooks feed.
type metrics struct {
	reg *prometheus.Registry
	// code labels a result: "ok" or the problem code of the error (a fixed set).
	code func(error) string

	httpDuration *prometheus.HistogramVec

	ops        *prometheus.CounterVec   // component, op, result
	opDuration *prometheus.HistogramVec // component, op
	expired    *prometheus.CounterVec   // component, kind

	paymentTransitions *prometheus.CounterVec // to, cause
	contradictions     *prometheus.CounterVec // cause
	refunds            *prometheus.CounterVec // state
	breakerState       prometheus.Gauge
	breakerChanges     *prometheus.CounterVec // from, to
	mysqlAnswering     prometheus.Gauge
	mysqlWrites        prometheus.Gauge

	relayLag      prometheus.Gauge
	outboxEvents  *prometheus.CounterVec // stage, topic
	consumerEvent *prometheus.CounterVec // consumer, topic, outcome
	cleaned       *prometheus.CounterVec // table

	idempotency *prometheus.CounterVec // event

	orders      *prometheus.CounterVec // outcome
	orderAmount *prometheus.CounterVec // outcome
}

func newMetrics(code func(error) string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), code: code}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		m.reg.MustRegister(g)
		return g
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.reg.MustRegister(h)
		return h
	}

	m.httpDuration = histogram("commercekit_http_request_duration_seconds",
		"HTTP request latency by route pattern, method and status.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "route", "method", "status")
	m.ops = counter("commercekit_operations_total",
		"Library operations by component (inventory, ledger, coupon), operation and result (ok or an error code).",
		"component", "op", "result")
	m.opDuration = histogram("commercekit_operation_duration_seconds",
		"Library operation latency by component and operation.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}, "component", "op")
	m.expired = counter("commercekit_expired_total",
		"Holds resolved by their deadline: stock reservations, point holds, point lots, coupon reservations.",
		"component", "kind")
	m.paymentTransitions = counter("commercekit_payment_transitions_total",
		"Payments entering a state (APPROVED, DECLINED, UNKNOWN, ...), by what caused it.", "to", "cause")
	m.contradictions = counter("commercekit_payment_contradictions_total",
		"The PG's own record contradicting a webhook (cause webhook: a forgery, the secret may have leaked) or a payment's record (the payment moved to REVIEW). Alert on any.",
		"cause")
	m.refunds = counter("commercekit_payment_refunds_total", "Refunds settled, by final state.", "state")
	m.breakerState = gauge("commercekit_payment_breaker_state",
		"State of the PG circuit breaker: 0 closed, 1 open, 2 half-open.")
	m.breakerChanges = counter("commercekit_payment_breaker_transitions_total",
		"Changes of the PG circuit breaker's state.", "from", "to")
	m.mysqlAnswering = gauge("commercekit_mysql_up",
		"1 while MySQL answers its watch's probes, 0 while it does not and its connections fail fast (internal/mysqlwatch).")
	m.mysqlAnswering.Set(1)
	m.mysqlWrites = gauge("commercekit_mysql_writable",
		"1 while MySQL takes the watch's write probe, 0 while it holds or refuses writes (a global read lock, read_only) and the server refuses its writes at once (internal/mysqlwatch).")
	m.mysqlWrites.Set(1)
	m.relayLag = gauge("commercekit_outbox_relay_lag_seconds",
		"Age of the oldest unsent outbox event after the last relay round (0: none waiting).")
	m.outboxEvents = counter("commercekit_outbox_events_total",
		"Outbox events published or refused by the publisher, by topic.", "stage", "topic")
	m.consumerEvent = counter("commercekit_outbox_consumer_events_total",
		"Events seen by in-process consumers: applied, duplicate, handler_failed, dead_lettered; "+
			"leased (a delivery leased them), suspected (earlier deliveries died under them).",
		"consumer", "topic", "outcome")
	m.cleaned = counter("commercekit_outbox_cleaned_total", "Rows deleted by the outbox cleaner, by table.", "table")
	m.idempotency = counter("commercekit_idempotency_events_total",
		"Idempotency-Key outcomes: claimed, replayed, in_progress, key_reused, completed, released, ...", "event")
	m.orders = counter("commercekit_orders_total",
		"Orders (and points top-ups) reaching an outcome: placed, paid, payment_failed, cancelled, expired, topped_up; "+
			"by payment method: CARD, BNPL, POINTS (points alone), none (not chosen yet).",
		"outcome", "method")
	m.orderAmount = counter("commercekit_order_amount_total",
		"Amounts due (won) of the orders reaching each outcome (top-up amounts for topped_up), by payment method.",
		"outcome", "method")
	return m
}

// handler serves the registry.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// request records one HTTP request. A method HTTP does not define is labelled "other": the
// client chooses it, and must not choose the registry's series.
func (m *metrics) request(route, method string, status int, elapsed time.Duration) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodConnect, http.MethodOptions, http.MethodTrace:
	default:
		method = "other"
	}
	m.httpDuration.WithLabelValues(route, method, strconv.Itoa(status)).Observe(elapsed.Seconds())
}

// operation records one library operation.
func (m *metrics) operation(component, op string, elapsed time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = m.code(err)
	}
	m.ops.WithLabelValues(component, op, result).Inc()
	m.opDuration.WithLabelValues(component, op).Observe(elapsed.Seconds())
}

// Observe is the one adapter of every library's observer hook (observe.Observer) to the
// registry: m is passed to each package's WithObserver.
func (m *metrics) Observe(e observe.Event) {
	l := e.Labels
	switch e.Component {
	case "inventory", "ledger", "coupon":
		if e.Name == "expired" {
			m.expired.WithLabelValues(e.Component, l["kind"]).Add(float64(e.N))
			return
		}
		m.operation(e.Component, e.Name, e.Elapsed, e.Err)
	case "payment":
		switch e.Name {
		case "transition":
			m.paymentTransitions.WithLabelValues(l["to"], l["cause"]).Inc()
		case "contradiction":
			m.contradictions.WithLabelValues(l["cause"]).Inc()
		case "refund_settled":
			m.refunds.WithLabelValues(l["state"]).Inc()
		}
	case "breaker":
		m.breakerState.Set(float64(e.N))
		m.breakerChanges.WithLabelValues(l["from"], l["to"]).Inc()
	case "outbox":
		switch e.Name {
		case "relay_lag":
			m.relayLag.Set(e.Elapsed.Seconds())
		case "published", "publish_failed":
			m.outboxEvents.WithLabelValues(e.Name, l["topic"]).Add(float64(e.N))
		case "relay_dead_lettered":
			m.outboxEvents.WithLabelValues("dead_lettered", l["topic"]).Add(float64(e.N))
		case "applied", "duplicate", "handler_failed", "dead_lettered", "leased", "suspected":
			m.consumerEvent.WithLabelValues(l["consumer"], l["topic"], e.Name).Add(float64(e.N))
		case "cleaned":
			m.cleaned.WithLabelValues(l["table"]).Add(float64(e.N))
		}
	case "commerce":
		m.orders.WithLabelValues(e.Name, l["method"]).Inc()
		m.orderAmount.WithLabelValues(e.Name, l["method"]).Add(float64(e.N))
	case "idempotency":
		m.idempotency.WithLabelValues(e.Name).Inc()
	}
}

// mysqlUp records MySQL's state as its watch found it. m may be nil (no metrics).
func (m *metrics) mysqlUp(up bool) {
	if m == nil {
		return
	}
	m.mysqlAnswering.Set(map[bool]float64{false: 0, true: 1}[up])
}

// mysqlWritable records whether MySQL takes writes, as its watch's write probe found. m
// may be nil (no metrics).
func (m *metrics) mysqlWritable(ok bool) {
	if m == nil {
		return
	}
	m.mysqlWrites.Set(map[bool]float64{false: 0, true: 1}[ok])
}
