package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/refserver/server"
)

// driver talks to one refserver over HTTP.
type driver struct {
	c        config
	hc       *http.Client
	admin    string
	product  string
	template string
	buyers   []*buyer
	// retried counts the answers with Retry-After (see busy) that call waited out and sent again.
	retried atomic.Int64
}

// maxRetries is how often call sends a request again after a busy answer (see busy), as a
// well-behaved client does: with the same idempotency key, after the advised pause (at
// most maxRetryPause). 30 pauses of up to 2 s ride out a dependency restarting, and the
// rebuild of the stock it lost, without leaving an order half-paid for the audit.
const (
	maxRetries    = 30
	maxRetryPause = 2 * time.Second
)

// busy reports whether an answer asks to be sent again later: it carries Retry-After and
// is a 503 (a dependency, or the data a request needs, busy or down) or a 409 (the same
// key's first request still running: request_in_progress).
func busy(status int, retryAfter string) (time.Duration, bool) {
	secs, err := strconv.Atoi(retryAfter)
	if err != nil || (status != http.StatusServiceUnavailable && status != http.StatusConflict) {
		return 0, false
	}
	return min(time.Duration(secs)*time.Second, maxRetryPause), true
}

// buyer is one racer and what happened to them.
type buyer struct {
	id     string
	token  string
	coupon string

	placeStatus, payStatus int
	placeTook, payTook     time.Duration
	order                  server.OrderJSON
	// refusal is the problem code of a refused place or pay ("out_of_stock"); failure is a
	// transport error.
	refusal string
	failure string
}

// refusal is a problem answer to a request whose status the caller checks itself.
type refusal struct{ server.Problem }

func (r *refusal) Error() string { return fmt.Sprintf("%d %s: %s", r.Status, r.Code, r.Detail) }

func newDriver(c config) (*driver, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = c.clients*2, c.clients*2
	d := &driver{c: c, hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute},
		product: "flash-" + c.runID, template: "flash-" + c.runID + "-coupon"}
	secret := []byte(c.secret)
	var err error
	if d.admin, err = server.IssueToken(secret, "flashsale-admin", true, 24*time.Hour, time.Now()); err != nil {
		return nil, err
	}
	for i := range c.buyers {
		b := &buyer{id: fmt.Sprintf("buyer-%s-%05d", c.runID, i)}
		if b.token, err = server.IssueToken(secret, b.id, false, 24*time.Hour, time.Now()); err != nil {
			return nil, err
		}
		d.buyers = append(d.buyers, b)
	}
	return d, nil
}

// sale runs the three phases and the checks.
func (d *driver) sale(ctx context.Context) (*report, error) {
	rep := &report{}
	start := time.Now()
	if err := d.setup(ctx); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if err := d.each(ctx, d.prepare); err != nil {
		return nil, fmt.Errorf("preparing the buyers: %w", err)
	}
	rep.prepared = time.Since(start)

	before, err := d.roundTrips(ctx)
	if err != nil {
		return nil, err
	}
	stopProfiles, err := startProfiles(d.c.cpuProfile, d.c.blockProfile)
	if err != nil {
		return nil, err
	}
	start, retried := time.Now(), d.retried.Load()
	err = d.each(ctx, d.race)
	rep.race, rep.retried = time.Since(start), d.retried.Load()-retried
	if perr := stopProfiles(); err == nil {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	if rep.roundTrips[1], err = d.roundTrips(ctx); err != nil {
		return nil, err
	}
	rep.roundTrips[0] = before
	rep.buyers = d.buyers
	if err := d.settle(ctx); err != nil {
		return nil, err
	}
	if err := d.verify(ctx, rep); err != nil {
		return nil, fmt.Errorf("verifying: %w", err)
	}
	return rep, nil
}

func (d *driver) setup(ctx context.Context) error {
	if _, err := d.call(ctx, d.admin, "POST", "/v1/products", "", server.NewProductJSON{ID: d.product,
		Name: "Flash sale " + d.c.runID, Price: d.c.price, Stock: d.c.units}, http.StatusCreated, nil); err != nil {
		return err
	}
	if d.c.discount == 0 {
		return nil
	}
	_, err := d.call(ctx, d.admin, "POST", "/v1/coupon-templates", "", server.CouponTemplateJSON{ID: d.template,
		Name: "Flash sale coupon", Kind: "fixed", Amount: d.c.discount, TotalQuantity: int64(d.c.buyers), PerUserLimit: 1},
		http.StatusCreated, nil)
	return err
}

// prepare gives a buyer a coupon and points.
func (d *driver) prepare(ctx context.Context, b *buyer) error {
	if d.c.discount > 0 {
		var c server.CouponJSON
		if _, err := d.call(ctx, b.token, "POST", "/v1/coupon-templates/"+d.template+"/issue", "coupon", nil, http.StatusCreated, &c); err != nil {
			return err
		}
		b.coupon = c.ID
	}
	if d.c.points > 0 {
		var t server.TopUpJSON
		if _, err := d.call(ctx, b.token, "POST", "/v1/points/top-ups", "topup",
			server.TopUpRequestJSON{Amount: d.c.points, Method: "CARD", Token: "tok_" + b.id}, http.StatusCreated, &t); err != nil {
			return err
		}
		if t.Status != "COMPLETED" {
			return fmt.Errorf("%s: top-up %s", b.id, t.Status)
		}
	}
	return nil
}

// race places the buyer's order and, when it is placed, pays it. Refusals are results,
// not errors: they are counted.
func (d *driver) race(ctx context.Context, b *buyer) error {
	t0 := time.Now()
	st, err := d.call(ctx, b.token, "POST", "/v1/orders", "order", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: d.product, Qty: 1}}, CouponID: b.coupon, Points: d.c.points}, 0, &b.order)
	b.placeTook, b.placeStatus = time.Since(t0), st
	if b.note(err) || st != http.StatusCreated {
		return nil
	}
	t0 = time.Now()
	st, err = d.call(ctx, b.token, "POST", "/v1/orders/"+b.order.ID+"/pay", "pay",
		server.PayJSON{Method: "CARD", Token: "tok_" + b.id}, 0, &b.order)
	b.payTook, b.payStatus = time.Since(t0), st
	b.note(err)
	return nil
}

// note records a refusal or a failure and reports whether there was one.
func (b *buyer) note(err error) bool {
	var r *refusal
	switch {
	case err == nil:
		return false
	case errors.As(err, &r):
		b.refusal = r.Code
	default:
		b.failure = err.Error()
	}
	return true
}

// settle waits for orders whose payment the PG had not answered (202) to settle.
func (d *driver) settle(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for _, b := range d.buyers {
		for b.order.Status == "PAYING" {
			if time.Now().After(deadline) {
				return fmt.Errorf("order %s still PAYING", b.order.ID)
			}
			if err := backoff.Sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
			if _, err := d.call(ctx, b.token, "GET", "/v1/orders/"+b.order.ID, "", nil, http.StatusOK, &b.order); err != nil {
				return err
			}
		}
	}
	return nil
}

// each runs fn for every buyer on c.clients goroutines and returns the first error.
func (d *driver) each(ctx context.Context, fn func(context.Context, *buyer) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *buyer)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range d.c.clients {
		wg.Go(func() {
			for b := range work {
				if err := fn(ctx, b); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
	for _, b := range d.buyers {
		select {
		case work <- b:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// call sends one request and decodes a JSON answer into out. With want != 0, any other
// status is an error; with want == 0 the caller looks at the returned status.
func (d *driver) call(ctx context.Context, tok, method, path, key string, body any, want int, out any) (int, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return 0, err
		}
	}
	status, raw, err := d.send(ctx, tok, method, path, key, payload)
	if err != nil {
		return status, err
	}
	if want != 0 && status != want {
		return status, fmt.Errorf("%s %s: %d %s: %s", method, path, status, http.StatusText(status), raw)
	}
	if status >= 400 {
		r := &refusal{}
		if err := json.Unmarshal(raw, &r.Problem); err != nil || r.Code == "" {
			return status, fmt.Errorf("%s %s: %d %s: %s", method, path, status, http.StatusText(status), raw)
		}
		return status, r
	}
	if out != nil && status < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return status, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return status, nil
}

// send sends one request, again after a busy answer (see busy and maxRetries), and returns
// the last answer's status and body.
func (d *driver) send(ctx context.Context, tok, method, path, key string, payload []byte) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(d.c.url, "/")+path, bytes.NewReader(payload))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if key != "" {
			req.Header.Set(server.IdempotencyKeyHeader, key)
		}
		resp, err := d.hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return resp.StatusCode, nil, err
		}
		pause, again := busy(resp.StatusCode, resp.Header.Get("Retry-After"))
		if !again || attempt == maxRetries {
			return resp.StatusCode, raw, nil
		}
		d.retried.Add(1)
		if err := backoff.Sleep(ctx, pause); err != nil {
			return 0, nil, err
		}
	}
}
