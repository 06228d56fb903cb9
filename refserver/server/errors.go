package server

import (
	"cmp"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// errMalformed marks input the server could not read: 400 malformed_request.
var errMalformed = errcode.New(errcode.InvalidArgument, "malformed_request", "malformed request")

// codeRule is how the server answers the errors of one errcode.Code.
type codeRule struct {
	status int
	// retryAfter, in seconds, is sent for statuses a retry may cure.
	retryAfter int
	// code, when set, is the problem's code for every error of the Code; otherwise the
	// error's own reason is ("out_of_stock", ...; see errcode.ReasonOf).
	code string
}

// codeRules is the one table from errors to HTTP, by errcode.Code. Every package's errors
// carry a code and a stable snake_case reason, which becomes the problem's code: 400
// malformed input, 401 bad credentials, 404 not found (also another user's order), 409 a
// state conflict or a request in progress, 422 a business rule refusing the request or an
// idempotency key reused with another request, 429 too many attempts, 503 a dependency
// down, contention or a timeout. A dependency failure
// (errcode.ErrUnavailable) wins over any business meaning the same error carries: it is
// not a business answer. Errors without a code (or Internal) are 500, unless they are a
// raw transport error no package wrapped (503 dependency_unavailable, by the same
// classifier the packages use, internal/depfail) or a MySQL deadlock or lock wait timeout
// (or a busy SQLite) that outlived sqlutil.InTx's retries (503 contention, like
// inventory.ErrContention: a retry may succeed, nothing is wrong).
var codeRules = map[errcode.Code]codeRule{
	errcode.InvalidArgument:       {status: http.StatusBadRequest},
	errcode.Unauthenticated:       {status: http.StatusUnauthorized},
	errcode.NotFound:              {status: http.StatusNotFound},
	errcode.Conflict:              {status: http.StatusConflict},
	errcode.AlreadyExists:         {status: http.StatusUnprocessableEntity},
	errcode.FailedPrecondition:    {status: http.StatusUnprocessableEntity},
	errcode.ResourceExhausted:     {status: http.StatusTooManyRequests, retryAfter: 60},
	errcode.DependencyUnavailable: {status: http.StatusServiceUnavailable, retryAfter: 1},
	errcode.DeadlineExceeded:      {status: http.StatusServiceUnavailable, retryAfter: 1, code: "timeout"},
	errcode.Canceled:              {status: http.StatusServiceUnavailable, retryAfter: 1, code: "canceled"},
}

// retryAfter is the Retry-After, in seconds, of the problems whose retry makes sense
// sooner or later than their status's default: a request still running elsewhere, a cart
// that changed under its checkout (nothing was placed), and a refund still with the PG. A
// PG that is down or has not answered is dependency_unavailable, with the hint its error
// carries (errcode.RetryAfter), else the status's default.
var retryAfter = map[string]int{
	"request_in_progress": 1,
	"cart_changed":        1,
	"refund_in_progress":  5,
}

// problemFor maps err to its problem through codeRules. 4xx problems carry the error's
// text as detail (domain messages say what was wrong); 5xx ones do not, so internals
// never leak; they are logged instead.
func (s *Server) problemFor(err error) Problem {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return newProblem(http.StatusRequestEntityTooLarge, "body_too_large", http.StatusText(http.StatusRequestEntityTooLarge),
			"the request body exceeds the limit of "+strconv.FormatInt(mbe.Limit, 10)+" bytes")
	}
	code, reason := errcode.Of(err)
	rule, ok := codeRules[code]
	switch {
	case ok:
	case depfail.Is(err): // a raw transport error that no package wrapped
		p := newProblem(http.StatusServiceUnavailable, "dependency_unavailable", http.StatusText(http.StatusServiceUnavailable),
			"a backend the request needs cannot be reached; retry later")
		p.RetryAfter = retrySeconds(err, 1)
		return p
	case sqlutil.IsRetryable(err): // a deadlock or lock wait timeout that outlived the retries
		p := newProblem(http.StatusServiceUnavailable, "contention", http.StatusText(http.StatusServiceUnavailable),
			"the data the request needs is busy; retry later")
		p.RetryAfter = 1
		return p
	default:
		return newProblem(http.StatusInternalServerError, "internal", "Internal Server Error",
			"the server failed to handle the request; it has been logged")
	}
	p := newProblem(rule.status, cmp.Or(rule.code, reason), http.StatusText(rule.status), "")
	p.RetryAfter = retrySeconds(err, cmp.Or(retryAfter[p.Code], rule.retryAfter))
	if rule.status < 500 {
		p.Detail = publicDetail(err)
		p.Field = wireField(errcode.FieldOf(err))
	} else {
		p.Detail = "a dependency failed or timed out; retry later"
	}
	return p
}

// publicDetail is the detail of a 4xx problem: the error's text, except that another
// user's coupon reads as a coupon that does not exist. coupon.ErrNotOwner is answered like
// coupon.ErrCouponNotFound (same code) so that nobody learns which coupon IDs exist; its
// own text would tell.
func publicDetail(err error) string {
	d := err.Error()
	if errors.Is(err, coupon.ErrNotOwner) {
		d = strings.ReplaceAll(d, coupon.ErrNotOwner.Error(), coupon.ErrCouponNotFound.Error())
	}
	return d
}

// retrySeconds is the Retry-After of err in whole seconds: the hint an
// *errcode.UnavailableError carries (rounded up), else def.
func retrySeconds(err error, def int) int {
	d := errcode.RetryAfter(err, 0)
	if d <= 0 {
		return def
	}
	return int((d + time.Second - 1) / time.Second)
}

// code is the metric label of an error: its problem code.
func (s *Server) code(err error) string { return s.problemFor(err).Code }

// wireField is the name a client knows the field of a validation problem by. The
// libraries name their request fields in Go ("Qty", "ProductID", "IdempotencyKey"); the
// API's bodies and query parameters are snake_case ("qty", "product_id") and the
// idempotency key is a header. A name already in the API's form is kept.
func wireField(name string) string {
	if name == "IdempotencyKey" {
		return IdempotencyKeyHeader
	}
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			// A word starts at an upper-case letter after a lower-case one, or before one
			// ("IDs" ends "ProductIDs": product_ids).
			prevLower := i > 0 && unicode.IsLower(rune(name[i-1]))
			nextLower := i+1 < len(name) && unicode.IsLower(rune(name[i+1])) && name[i+1] != 's'
			if i > 0 && (prevLower || nextLower) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
