package pgsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/commercekit/commercekit/payment"
)

// The HTTP API, as NewHandler serves it and Client calls it:
//
//	POST /v1/payments/{paymentID}/approve   approveBody  -> 200 resultBody | 402 errorBody
//	POST /v1/cancels/{cancelID}             cancelBody   -> 200 resultBody | 402 errorBody
//	GET  /v1/payments/{paymentID}                        -> 200 statusBody | 404 errorBody
//
// POSTs carry the ID of their path in the Idempotency-Key header too. Faults answer 503
// (FaultUnavailable) or 500 (FaultError), or reset the connection after processing
// (FaultLostResponse), or hang (FaultTimeout, FaultSlow); a bad request is a 400.

type approveBody struct {
	OrderID  string `json:"order_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Method   string `json:"method"`
	Token    string `json:"token"`
}

type cancelBody struct {
	PaymentID string `json:"payment_id"`
	Amount    int64  `json:"amount"`
	Reason    string `json:"reason"`
}

type resultBody struct {
	Reference string `json:"reference"`
}

type statusBody struct {
	PaymentID      string       `json:"payment_id"`
	State          string       `json:"state"`
	Amount         int64        `json:"amount"`
	Currency       string       `json:"currency"`
	Reference      string       `json:"reference,omitempty"`
	DeclineCode    string       `json:"decline_code,omitempty"`
	DeclineMessage string       `json:"decline_message,omitempty"`
	Canceled       int64        `json:"canceled"`
	Cancels        []cancelJSON `json:"cancels"` // [] when none: the simulator lists its refunds
}

// cancelJSON is a refund the simulator made, in statusBody.
type cancelJSON struct {
	CancelID  string `json:"cancel_id"`
	Amount    int64  `json:"amount"`
	Reference string `json:"reference"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// codeNotFound is the code of the simulator's 404: it has no such payment.
const codeNotFound = "NOT_FOUND"

// IdempotencyKeyHeader carries a POST's idempotency key.
const IdempotencyKeyHeader = "Idempotency-Key"

// NewHandler serves sim over HTTP. Serve it on loopback only (httptest.NewServer does).
func NewHandler(sim *Simulator) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/payments/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var b approveBody
		if !decode(w, r, id, &b) {
			return
		}
		a, err := sim.Approve(r.Context(), payment.ApproveRequest{
			PaymentID: id, OrderID: b.OrderID, Amount: b.Amount, Currency: b.Currency,
			Method: payment.Method(b.Method), Token: b.Token,
		})
		reply(w, err, resultBody{Reference: a.Reference})
	})
	mux.HandleFunc("POST /v1/cancels/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var b cancelBody
		if !decode(w, r, id, &b) {
			return
		}
		c, err := sim.Cancel(r.Context(), payment.CancelRequest{CancelID: id, PaymentID: b.PaymentID, Amount: b.Amount, Reason: b.Reason})
		reply(w, err, resultBody{Reference: c.Reference})
	})
	mux.HandleFunc("GET /v1/payments/{id}", func(w http.ResponseWriter, r *http.Request) {
		gp, err := sim.Status(r.Context(), r.PathValue("id"))
		body := statusBody{
			PaymentID: gp.PaymentID, State: string(gp.State), Amount: gp.Amount, Currency: gp.Currency,
			Reference: gp.Reference, DeclineCode: gp.DeclineCode, DeclineMessage: gp.DeclineMessage, Canceled: gp.Canceled,
			Cancels: []cancelJSON{},
		}
		for _, c := range gp.Cancels {
			body.Cancels = append(body.Cancels, cancelJSON{CancelID: c.CancelID, Amount: c.Amount, Reference: c.Reference})
		}
		reply(w, err, body)
	})
	return mux
}

// decode reads a POST's JSON body into v, answering 400 and returning false if it cannot, or
// if the Idempotency-Key header is set to something other than the path's ID.
func decode(w http.ResponseWriter, r *http.Request, id string, v any) bool {
	if k := r.Header.Get(IdempotencyKeyHeader); k != "" && k != id {
		writeJSON(w, http.StatusBadRequest, errorBody{Code: CodeInvalidRequest, Message: "Idempotency-Key differs from the path"})
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Code: CodeInvalidRequest, Message: err.Error()})
		return false
	}
	return true
}

// reply answers with ok, or with what err says.
func reply(w http.ResponseWriter, err error, ok any) {
	var d *payment.DeclineError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, ok)
	case errors.As(err, &d):
		writeJSON(w, http.StatusPaymentRequired, errorBody{Code: d.Code, Message: d.Message})
	case errors.Is(err, payment.ErrNotAtGateway):
		writeJSON(w, http.StatusNotFound, errorBody{Code: codeNotFound, Message: err.Error()})
	case errors.Is(err, errUnavailable):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Code: "UNAVAILABLE", Message: err.Error()})
	case errors.Is(err, errLost):
		// Processed, but the caller never hears of it: drop the connection.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, herr := hj.Hijack(); herr == nil {
				resetConn(conn)
				return
			}
		}
		// No hijacking (HTTP/2): an empty 200 is as useless to the client.
		w.WriteHeader(http.StatusOK)
	default: // errInternal, errClosed, or the caller gone
		writeJSON(w, http.StatusInternalServerError, errorBody{Code: "INTERNAL", Message: err.Error()})
	}
}

// resetConn closes conn abruptly (RST where the platform allows), as a crashing PG would.
func resetConn(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// requireLoopback refuses URLs that do not point at the local machine.
func requireLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("pgsim: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("pgsim: %q is not an http(s) URL", raw)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("pgsim: %q is not a loopback address; the simulator talks to local servers only", raw)
	}
	return nil
}
