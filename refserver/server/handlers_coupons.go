package server

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
)

func (s *Server) createCouponTemplate(w http.ResponseWriter, r *http.Request) {
	var in CouponTemplateJSON
	err := decode(r, &in)
	if err == nil {
		err = checkPathID(in.ID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.svc.CreateCouponTemplate(r.Context(), in.template())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, templateJSON(t))
}

// issueCoupon issues a coupon of the template to the caller, first come first served.
// The Idempotency-Key header is required and makes the issue idempotent: the same key
// returns the same coupon; it is scoped to the caller (the request ID the coupon package
// sees is a hash of user and key, 64 hex digits).
func (s *Server) issueCoupon(w http.ResponseWriter, r *http.Request) {
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if containsNUL(id) {
		s.writeError(w, r, errcode.Invalid("id", "must not contain a NUL character"))
		return
	}
	user := principal(r.Context()).UserID
	sum := sha256.Sum256([]byte(user + "\x00" + key))
	c, err := s.svc.IssueCoupon(r.Context(), id, user, hex.EncodeToString(sum[:]))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, couponJSON(c))
}

func (s *Server) listCoupons(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := pageParams(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.svc.Coupons(r.Context(), principal(r.Context()).UserID, coupon.WalletQuery{
		State: coupon.State(r.URL.Query().Get("state")), Limit: limit, Cursor: cursor})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := CouponPageJSON{Coupons: make([]CouponJSON, len(page.Coupons)), NextCursor: page.Next}
	for i, c := range page.Coupons {
		out.Coupons[i] = couponJSON(c)
	}
	writeJSON(w, http.StatusOK, out)
}
