package dataplatform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/outbox"
)

// ConsumerName is the notifier's name as an outbox consumer (and Kafka consumer group).
const ConsumerName = "commerce-dataplatform"

// HeaderIdempotencyKey carries the event ID on every POST: a platform that sees the same
// key twice (a retry after a lost response) must keep one copy.
const HeaderIdempotencyKey = "Idempotency-Key"

// ErrInvalidConfig is wrapped by the errors of a bad configuration. It matches
// errcode.ErrInvalidArgument too, with the code Internal: a misconfigured program, not a
// client's mistake.
var ErrInvalidConfig = errcode.New(errcode.Internal, "invalid_config", "dataplatform: invalid configuration",
	errcode.ErrInvalidArgument)

// Delivery states.
const (
	StatePending = "pending"
	StateSent    = "sent"
	StateDead    = "dead"
)

// Notifier sends each paid order to the data platform. Handle, its outbox handler, queues
// the order (the payment-completed event) in the deliveries table, in the consumer's
// transaction; Run sends the queue over HTTP. See the package documentation.
type Notifier struct {
	db      *bun.DB
	url     string
	client  *http.Client
	exec    failsafe.Executor[*http.Response]
	breaker circuitbreaker.CircuitBreaker[*http.Response]
	c       config
}

type config struct {
	option.Errors
	timeout                time.Duration
	tries                  int
	retryMin, retryMax     time.Duration
	breakerFailures        uint
	breakerWindow          uint
	breakerDelay           time.Duration
	maxAttempts            int
	attemptMin, attemptMax time.Duration
	lease                  time.Duration
	interval               time.Duration
	client                 *http.Client
	now                    func() time.Time
	log                    *slog.Logger
	onState                func(from, to string)
}

// Option configures a Notifier. An option given an invalid value (see each option) makes
// New fail with an *errcode.InvalidError naming the option (ErrInvalidConfig).
type Option func(*config)

// WithTimeout bounds one HTTP call; default 2s. It must be positive.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.timeout, "WithTimeout", d) }
}

// WithRetries sets how many calls one attempt makes (default 3; at least 1) and the
// exponential backoff between them (default 100ms to 1s; 0 < min <= max).
func WithRetries(tries int, minPause, maxPause time.Duration) Option {
	return func(c *config) {
		if tries < 1 || !validBackoff(minPause, maxPause) {
			c.Reject("WithRetries", fmt.Sprintf("%d tries, %v..%v: need tries >= 1 and 0 < min <= max", tries, minPause, maxPause))
			return
		}
		c.tries, c.retryMin, c.retryMax = tries, minPause, maxPause
	}
}

// WithBreaker sets the circuit breaker: it opens when failures of the last window calls
// reach failures (default 5 of 10, seed 003's 50%), and lets one call through again after
// delay (default 10s): its success closes the breaker, its failure opens it again. It
// needs 1 <= failures <= window and a positive delay.
func WithBreaker(failures, window uint, delay time.Duration) Option {
	return func(c *config) {
		if failures < 1 || window < failures || delay <= 0 {
			c.Reject("WithBreaker", fmt.Sprintf("%d of %d, %v: need 1 <= failures <= window and a positive delay", failures, window, delay))
			return
		}
		c.breakerFailures, c.breakerWindow, c.breakerDelay = failures, window, delay
	}
}

// WithMaxAttempts sets how many attempts a delivery gets before it is dead-lettered
// (default 10; at least 1) and the backoff between attempts (default 1s to 5m; 0 < min <=
// max). Attempts refused by the open breaker, and those whose failure opens it (a failed
// half-open probe included), are not counted: an outage delays deliveries, it does not
// kill them.
func WithMaxAttempts(n int, minPause, maxPause time.Duration) Option {
	return func(c *config) {
		if n < 1 || !validBackoff(minPause, maxPause) {
			c.Reject("WithMaxAttempts", fmt.Sprintf("%d, %v..%v: need n >= 1 and 0 < min <= max", n, minPause, maxPause))
			return
		}
		c.maxAttempts, c.attemptMin, c.attemptMax = n, minPause, maxPause
	}
}

// validBackoff reports whether min..max are valid bounds of a backoff.
func validBackoff(minPause, maxPause time.Duration) bool { return minPause > 0 && maxPause >= minPause }

// WithInterval sets how often Run looks for deliveries due; default 200ms. It must be
// positive.
func WithInterval(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.interval, "WithInterval", d) }
}

// WithHTTPClient sets the HTTP client; default a client without a timeout of its own
// (WithTimeout bounds each call). It must not be nil.
func WithHTTPClient(h *http.Client) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.client, "WithHTTPClient", h) }
}

// WithClock sets where the Notifier reads the time; default time.Now. It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.now, "WithClock", now) }
}

// WithLogger sets the logger; default discards. It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.log, "WithLogger", l) }
}

// WithBreakerObserver sets a function told every change of the breaker's state ("closed",
// "open", "half-open"). It must not be nil.
func WithBreakerObserver(f func(from, to string)) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.onState, "WithBreakerObserver", f) }
}

// New returns a Notifier that POSTs paid orders to target (an http or https URL) and keeps
// its queue in db (CreateSchema first).
func New(db *bun.DB, target string, opts ...Option) (*Notifier, error) {
	c := config{
		Errors:  option.Errors{Sentinel: ErrInvalidConfig},
		timeout: 2 * time.Second, tries: 3, retryMin: 100 * time.Millisecond, retryMax: time.Second,
		breakerFailures: 5, breakerWindow: 10, breakerDelay: 10 * time.Second,
		maxAttempts: 10, attemptMin: time.Second, attemptMax: 5 * time.Minute, lease: time.Minute,
		interval: 200 * time.Millisecond, client: &http.Client{}, now: time.Now,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), onState: func(string, string) {},
	}
	optErr := option.Apply(&c, opts)
	u, err := url.Parse(target)
	switch {
	case db == nil:
		return nil, fmt.Errorf("%w: no database", ErrInvalidConfig)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, fmt.Errorf("%w: %q is not an http(s) URL", ErrInvalidConfig, target)
	case optErr != nil:
		return nil, optErr
	}
	// A claim must outlast the longest attempt (every call timing out, the longest pause
	// between them), or a second sender takes over a delivery still being sent.
	c.lease = max(c.lease, 2*(time.Duration(c.tries)*c.timeout+time.Duration(c.tries-1)*c.retryMax))
	n := &Notifier{db: db, url: target, client: c.client, c: c}
	n.breaker = circuitbreaker.NewBuilder[*http.Response]().
		HandleIf(func(_ *http.Response, err error) bool { return err != nil && !isPermanent(err) }).
		WithFailureThresholdRatio(c.breakerFailures, c.breakerWindow).
		WithSuccessThreshold(1). // half-open: one probe, which closes or reopens the breaker
		WithDelay(c.breakerDelay).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			from, to := stateName(e.OldState), stateName(e.NewState)
			c.log.Warn("dataplatform: circuit breaker changed state", "from", from, "to", to)
			c.onState(from, to)
		}).
		Build()
	retry := retrypolicy.NewBuilder[*http.Response]().
		HandleIf(func(_ *http.Response, err error) bool { return err != nil && !isPermanent(err) }).
		AbortOnErrors(circuitbreaker.ErrOpen).
		WithMaxAttempts(c.tries).
		WithBackoff(c.retryMin, c.retryMax).
		ReturnLastFailure().
		Build()
	n.exec = failsafe.With[*http.Response](retry, n.breaker, timeout.New[*http.Response](c.timeout))
	return n, nil
}

func stateName(s circuitbreaker.State) string {
	switch s {
	case circuitbreaker.OpenState:
		return "open"
	case circuitbreaker.HalfOpenState:
		return "half-open"
	}
	return "closed"
}

// BreakerOpen reports whether the breaker is open (calls are refused without being tried).
func (n *Notifier) BreakerOpen() bool { return n.breaker.IsOpen() }

// NewConsumer returns the outbox consumer that queues paid orders for n (named
// ConsumerName); opts are the outbox's consumer options.
func (n *Notifier) NewConsumer(opts ...outbox.Option) (*outbox.Consumer, error) {
	return outbox.NewConsumer(n.db, ConsumerName, n.Handle, opts...)
}

// Topics returns the topics of t the notifier must consume: that of payment-completed.
func Topics(t commerce.Topics) []string {
	topic, _ := t.Of(commerce.EventPaymentCompleted)
	return []string{topic}
}

type deliveryRow struct {
	bun.BaseModel `bun:"table:commerce_dataplatform_deliveries"`

	EventID   string     `bun:"event_id,pk"`
	OrderID   string     `bun:"order_id"`
	Payload   []byte     `bun:"payload"`
	State     string     `bun:"state"`
	Attempts  int        `bun:"attempts"`
	NextAt    time.Time  `bun:"next_at"`
	LastError string     `bun:"last_error"`
	CreatedAt time.Time  `bun:"created_at"`
	SentAt    *time.Time `bun:"sent_at"`
}

// Handle is the notifier's outbox.HandlerFunc: it queues each payment-completed event of
// the batch (its payload as written by commerce) for delivery, through tx. Other events
// are ignored. A payment-completed event commerce could not have written — under another
// ID than commerce.EventID gives the order's event, or whose payload is not a JSON object
// naming that order (orderId) — is a permanent error: the consumer dead-letters it, and
// it never reaches the platform as another paid order under another Idempotency-Key. A
// Kafka topic takes any producer's messages.
func (n *Notifier) Handle(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
	now := n.now()
	var rows []deliveryRow
	for _, ev := range events {
		if ev.Type != commerce.EventPaymentCompleted {
			continue
		}
		if err := commerceWrote(ev); err != nil {
			return outbox.Permanent(fmt.Errorf("dataplatform: event %s (key %q): %w", ev.ID, ev.Key, err))
		}
		rows = append(rows, deliveryRow{EventID: ev.ID, OrderID: ev.Key, Payload: ev.Payload, State: StatePending,
			NextAt: now, CreatedAt: now})
	}
	if len(rows) == 0 {
		return nil
	}
	q := tx.NewInsert().Model(&rows)
	if sqlutil.IsSQLite(n.db) {
		q = q.On("CONFLICT (event_id) DO NOTHING")
	} else {
		q = q.Ignore()
	}
	if _, err := q.Exec(ctx); err != nil {
		return fmt.Errorf("dataplatform: queueing deliveries: %w", err)
	}
	return nil
}

// commerceWrote returns why ev, a payment-completed event, is not one commerce wrote, or
// nil: commerce writes an order's payment-completed event once, under the ID
// commerce.EventID(order, type), keyed by the order, with the order (its orderId) as
// payload.
func commerceWrote(ev outbox.Event) error {
	if ev.Key == "" || ev.ID != commerce.EventID(ev.Key, ev.Type) {
		return fmt.Errorf("not the %s event of order %q that commerce writes", ev.Type, ev.Key)
	}
	var body struct {
		OrderID *string `json:"orderId"`
	}
	if err := json.Unmarshal(ev.Payload, &body); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if body.OrderID == nil || *body.OrderID != ev.Key {
		return fmt.Errorf("the payload is not the order %q", ev.Key)
	}
	return nil
}

func (n *Notifier) now() time.Time { return n.c.now().UTC().Truncate(time.Microsecond) }

// permanentError is a refusal by the platform that no retry will change (a 4xx other than
// 408 and 429).
type permanentError struct{ status int }

func (e *permanentError) Error() string {
	return fmt.Sprintf("dataplatform: refused with status %d", e.status)
}

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// post sends one delivery through the policies: a timeout per call, retries with backoff,
// the breaker.
func (n *Notifier) post(ctx context.Context, d deliveryRow) error {
	_, err := n.exec.WithContext(ctx).GetWithExecution(func(e failsafe.Execution[*http.Response]) (*http.Response, error) {
		req, err := http.NewRequestWithContext(e.Context(), http.MethodPost, n.url, bytes.NewReader(d.Payload))
		if err != nil {
			return nil, &permanentError{}
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(HeaderIdempotencyKey, d.EventID)
		req.Header.Set("X-Event-Type", commerce.EventPaymentCompleted)
		resp, err := n.client.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.Request != nil && resp.Request.Method != http.MethodPost {
			// A 301, 302 or 303 the client followed with a GET, without the body: whatever
			// that answers, the order was not delivered. A failure like a 5xx: the platform
			// (or its URL) must be fixed, and the delivery waits for it.
			return nil, fmt.Errorf("dataplatform: the POST was redirected to %s %s (status %d): not delivered",
				resp.Request.Method, resp.Request.URL.Redacted(), resp.StatusCode)
		}
		switch s := resp.StatusCode; {
		case s >= 200 && s < 300:
			return resp, nil
		case s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests:
			return nil, &permanentError{status: s}
		default:
			return nil, fmt.Errorf("dataplatform: status %d", s)
		}
	})
	return err
}

// SendOnce sends the deliveries that are due (up to 100, oldest first) and returns how
// many were sent. It stops early when the breaker is open or a failure opens it: the rest
// wait, their attempts uncounted. A delivery whose attempt fails is retried later with backoff, and
// dead-lettered (state dead) after the last attempt or at once when the platform refuses
// it with a 4xx. Several processes may run it: each claims a delivery (a lease of a
// minute, or twice the longest an attempt can take if that is longer) before sending it.
func (n *Notifier) SendOnce(ctx context.Context) (int, error) {
	var due []deliveryRow
	err := n.db.NewSelect().Model(&due).Where("state = ? AND next_at <= ?", StatePending, n.now()).
		OrderExpr("next_at, event_id").Limit(100).Scan(ctx)
	if err != nil {
		return 0, fmt.Errorf("dataplatform: reading due deliveries: %w", err)
	}
	sent := 0
	for _, d := range due {
		lease := n.now().Add(n.c.lease)
		claimed, err := n.update(ctx, d, map[string]any{"next_at": lease})
		if err != nil {
			return sent, err
		}
		if !claimed {
			continue // another process took it
		}
		d.NextAt = lease
		perr := n.post(ctx, d)
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
		switch {
		case perr == nil:
			now := n.now()
			_, err = n.update(ctx, d, map[string]any{"state": StateSent, "attempts": d.Attempts + 1, "sent_at": now, "last_error": ""})
			sent++
		case errors.Is(perr, circuitbreaker.ErrOpen):
			// Not an attempt: due again at once, and the round ends (the rest would be refused too).
			_, err = n.update(ctx, d, map[string]any{"next_at": n.now()})
			return sent, err
		case n.breaker.IsOpen() && !isPermanent(perr):
			// This failure opened the breaker (or a half-open probe failed): the platform is
			// down, which is no fault of the delivery, so not an attempt either. It waits
			// behind the others, which the next probes try first, and the round ends.
			pause := backoff.Equal(d.Attempts+1, n.c.attemptMin, n.c.attemptMax)
			_, err = n.update(ctx, d, map[string]any{"next_at": n.now().Add(pause), "last_error": perr.Error()})
			return sent, err
		case d.Attempts+1 >= n.c.maxAttempts || isPermanent(perr):
			n.c.log.Error("dataplatform: delivery dead-lettered", "event", d.EventID, "order", d.OrderID, "attempts", d.Attempts+1, "err", perr)
			_, err = n.update(ctx, d, map[string]any{"state": StateDead, "attempts": d.Attempts + 1, "last_error": perr.Error()})
		default:
			pause := backoff.Equal(d.Attempts+1, n.c.attemptMin, n.c.attemptMax)
			_, err = n.update(ctx, d, map[string]any{"attempts": d.Attempts + 1, "next_at": n.now().Add(pause), "last_error": perr.Error()})
		}
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// update sets cols of d's row if the row is still as d says (state and next_at), and
// reports whether it was. It reads the row by its primary key: through the due index, which
// starts with state, InnoDB would also lock the gaps beside it there, where the consumer
// queues new deliveries.
func (n *Notifier) update(ctx context.Context, d deliveryRow, cols map[string]any) (bool, error) {
	q := sqlutil.UpdateByPK[deliveryRow](n.db).Where("event_id = ? AND state = ? AND next_at = ?", d.EventID, d.State, d.NextAt)
	for col, v := range cols {
		q = q.Set("? = ?", bun.Ident(col), v)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("dataplatform: updating delivery %s: %w", d.EventID, err)
	}
	rows, err := res.RowsAffected()
	return rows == 1, err
}

// Run sends due deliveries every interval until ctx ends (then it returns ctx's error);
// while the breaker is open it waits for the breaker's delay.
func (n *Notifier) Run(ctx context.Context) error {
	failures := 0
	for {
		pause := n.c.interval
		if _, err := n.SendOnce(ctx); err != nil && ctx.Err() == nil {
			failures++
			pause = backoff.Equal(failures, n.c.interval, 30*time.Second)
			n.c.log.Warn("dataplatform: sending failed", "err", err, "retry_in", pause)
		} else {
			failures = 0
		}
		if d := n.breaker.RemainingDelay(); d > pause {
			pause = d
		}
		if err := backoff.Sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// Delivery is a queued order as the notifier tracks it.
type Delivery struct {
	EventID, OrderID, State, LastError string
	Attempts                           int
	SentAt                             *time.Time
}

// Deliveries returns up to limit deliveries in state (StatePending, StateSent or
// StateDead; "" for all), oldest first.
func (n *Notifier) Deliveries(ctx context.Context, state string, limit int) ([]Delivery, error) {
	var rows []deliveryRow
	q := n.db.NewSelect().Model(&rows).OrderExpr("created_at, event_id").Limit(int64(limit))
	if state != "" {
		q = q.Where("state = ?", state)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("dataplatform: listing deliveries: %w", sqlutil.Unavailable(n.db, err))
	}
	out := make([]Delivery, len(rows))
	for i, r := range rows {
		out[i] = Delivery{EventID: r.EventID, OrderID: r.OrderID, State: r.State, LastError: r.LastError, Attempts: r.Attempts, SentAt: r.SentAt}
	}
	return out, nil
}

// Redrive puts the dead-lettered deliveries back in the queue with their attempts reset,
// once the cause is fixed, and returns how many.
func (n *Notifier) Redrive(ctx context.Context) (int, error) {
	res, err := n.db.NewUpdate().Model((*deliveryRow)(nil)).Where("state = ?", StateDead).
		Set("state = ?", StatePending).Set("attempts = 0").Set("next_at = ?", n.now()).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("dataplatform: redriving: %w", sqlutil.Unavailable(n.db, err))
	}
	rows, err := res.RowsAffected()
	return int(rows), err
}
