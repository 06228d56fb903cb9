package server

import "net/http"

// AuthLevel is what a route asks of the caller.
type AuthLevel int

// The auth levels.
const (
	// AuthNone: public (catalogue reads, operations, the PG's webhook, which carries its own
	// signature).
	AuthNone AuthLevel = iota
	// AuthUser: any valid bearer token; the user is its subject.
	AuthUser
	// AuthAdmin: a bearer token with role "admin".
	AuthAdmin
	// AuthMetrics: an admin token, or the scrape token (Config.MetricsToken), which opens
	// nothing else.
	AuthMetrics
)

// Route is one entry of the route table: the mux, the middleware and the OpenAPI test all
// read it.
type Route struct {
	Method string
	Path   string
	Auth   AuthLevel
	// Write routes are rate-limited per user (the route that Revokes: per token).
	Write bool
	// Idempotent routes require an Idempotency-Key and replay its stored response.
	Idempotent bool
	// Revokes marks the route that revokes the caller's token (logout): a validly signed,
	// unexpired token already revoked is answered 204 No Content there, at once and without
	// writing anything (nor taking a write token), not 401 token_revoked, so that a logout
	// sent again after its answer was lost answers as the first did.
	Revokes bool
	// OwnDeadline routes bound their own I/O, so the request timeout (Config.RequestTimeout)
	// is not set on their context, sparing a timer per request on the hottest read (the
	// stock read: a cache hit does no I/O, a backend read has the request timeout's bound).
	OwnDeadline bool
	Handler     http.HandlerFunc
}

// Pattern is the route's net/http pattern, e.g. "GET /v1/products/{id}".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// routes is the route table.
func (s *Server) routes() []Route {
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []Route{
		// Operations.
		{Method: get, Path: "/healthz", Handler: s.handleHealthz},
		{Method: get, Path: "/readyz", Handler: s.handleReadyz},
		{Method: get, Path: "/metrics", Auth: AuthMetrics, Handler: s.metrics.handler().ServeHTTP},
		{Method: get, Path: "/openapi.json", Handler: s.handleOpenAPI},

		// Catalogue and stock.
		{Method: get, Path: "/v1/products", Handler: s.listProducts},
		{Method: post, Path: "/v1/products", Auth: AuthAdmin, Write: true, Handler: s.createProduct},
		{Method: get, Path: "/v1/products/{id}", Handler: s.getProduct},
		{Method: put, Path: "/v1/products/{id}/price", Auth: AuthAdmin, Write: true, Handler: s.updatePrice},
		{Method: get, Path: "/v1/products/{id}/stock", OwnDeadline: true, Handler: s.getStock},
		{Method: put, Path: "/v1/products/{id}/stock", Auth: AuthAdmin, Write: true, Handler: s.setStock},
		{Method: post, Path: "/v1/products/{id}/stock/adjustments", Auth: AuthAdmin, Write: true, Handler: s.adjustStock},

		// Orders and payments.
		{Method: post, Path: "/v1/orders", Auth: AuthUser, Write: true, Idempotent: true, Handler: s.placeOrder},
		{Method: get, Path: "/v1/orders", Auth: AuthUser, Handler: s.listOrders},
		{Method: get, Path: "/v1/orders/{id}", Auth: AuthUser, Handler: s.getOrder},
		{Method: get, Path: "/v1/orders/{id}/payment", Auth: AuthUser, Handler: s.getOrderPayment},
		{Method: post, Path: "/v1/orders/{id}/pay", Auth: AuthUser, Write: true, Idempotent: true, Handler: s.payOrder},
		{Method: post, Path: "/v1/orders/{id}/cancel", Auth: AuthUser, Write: true, Handler: s.cancelOrder},
		{Method: post, Path: "/v1/payments/webhook", Handler: s.paymentWebhook},

		// Points.
		{Method: get, Path: "/v1/points", Auth: AuthUser, Handler: s.getPoints},
		{Method: get, Path: "/v1/points/history", Auth: AuthUser, Handler: s.pointHistory},
		{Method: post, Path: "/v1/points/top-ups", Auth: AuthUser, Write: true, Idempotent: true, Handler: s.topUp},
		{Method: get, Path: "/v1/points/top-ups/{id}", Auth: AuthUser, Handler: s.getTopUp},
		{Method: get, Path: "/v1/points/top-ups/{id}/payment", Auth: AuthUser, Handler: s.getTopUpPayment},

		// Coupons.
		{Method: post, Path: "/v1/coupon-templates", Auth: AuthAdmin, Write: true, Handler: s.createCouponTemplate},
		{Method: post, Path: "/v1/coupon-templates/{id}/issue", Auth: AuthUser, Write: true, Handler: s.issueCoupon},
		{Method: get, Path: "/v1/coupons", Auth: AuthUser, Handler: s.listCoupons},

		// Members and sessions (sign-up, login and refresh are limited per client address).
		{Method: post, Path: "/v1/members", Handler: s.signUp},
		{Method: post, Path: "/v1/sessions", Handler: s.login},
		{Method: post, Path: "/v1/sessions/refresh", Handler: s.refreshSession},
		{Method: del, Path: "/v1/sessions", Auth: AuthUser, Write: true, Revokes: true, Handler: s.logout},
		{Method: post, Path: "/v1/sessions/revoke", Handler: s.revokeSession},

		// Cart (ordered with POST /v1/orders {"from_cart": true}).
		{Method: get, Path: "/v1/cart", Auth: AuthUser, Handler: s.getCart},
		{Method: post, Path: "/v1/cart/items", Auth: AuthUser, Write: true, Idempotent: true, Handler: s.addToCart},
		{Method: put, Path: "/v1/cart/items/{product_id}", Auth: AuthUser, Write: true, Handler: s.setCartQty},
		{Method: del, Path: "/v1/cart/items/{product_id}", Auth: AuthUser, Write: true, Handler: s.removeFromCart},

		// Sales metrics and rankings (commerce/collector).
		{Method: get, Path: "/v1/rankings", Handler: s.rankings},
		{Method: get, Path: "/v1/products/{id}/metrics", Handler: s.productMetrics},

		// Administration.
		{Method: get, Path: "/v1/admin/audit", Auth: AuthAdmin, Handler: s.audit},
		{Method: get, Path: "/v1/admin/outbox/dead-letters", Auth: AuthAdmin, Handler: s.relayDeadLetters},
		{Method: post, Path: "/v1/admin/outbox/dead-letters/{id}/redrive", Auth: AuthAdmin, Write: true, Handler: s.resolveDeadLetter(false)},
		{Method: post, Path: "/v1/admin/outbox/dead-letters/{id}/skip", Auth: AuthAdmin, Write: true, Handler: s.resolveDeadLetter(true)},
		{Method: get, Path: "/v1/admin/consumers", Auth: AuthAdmin, Handler: s.consumerList},
		{Method: get, Path: "/v1/admin/dataplatform/deliveries", Auth: AuthAdmin, Handler: s.platformDeliveries},
		{Method: post, Path: "/v1/admin/dataplatform/redrive", Auth: AuthAdmin, Write: true, Handler: s.redrivePlatform},
		{Method: get, Path: "/v1/admin/consumers/{name}/dead-letters", Auth: AuthAdmin, Handler: s.consumerDeadLetters},
		{Method: post, Path: "/v1/admin/consumers/{name}/dead-letters/redrive", Auth: AuthAdmin, Write: true, Handler: s.redriveConsumer},
		{Method: post, Path: "/v1/admin/consumers/{name}/dead-letters/{id}/skip", Auth: AuthAdmin, Write: true, Handler: s.skipConsumerLetter},
		{Method: post, Path: "/v1/admin/payments/{id}/resolve-review", Auth: AuthAdmin, Write: true, Handler: s.resolvePaymentReview},
	}
}
