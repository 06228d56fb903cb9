package server

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
)

func (s *Server) listProducts(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := pageParams(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.svc.ListProducts(r.Context(), commerce.ProductQuery{Limit: limit, Cursor: cursor})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := ProductPageJSON{Products: make([]ProductJSON, len(page.Products)), NextCursor: page.Next}
	for i, p := range page.Products {
		out.Products[i] = productJSON(p)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createProduct(w http.ResponseWriter, r *http.Request) {
	var in NewProductJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := checkPathID(in.ID); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.svc.CreateProduct(r.Context(), commerce.NewProduct{ID: in.ID, Name: in.Name, Price: in.Price,
		Stock: in.Stock, BuyerLimit: in.BuyerLimit})
	if ce := (*commerce.ConflictError)(nil); errors.As(err, &ce) && ce.Kind == "product" {
		// The route takes no Idempotency-Key: the product ID is what was reused.
		writeProblem(w, r, newProblem(http.StatusUnprocessableEntity, "product_exists", http.StatusText(http.StatusUnprocessableEntity),
			"product "+strconv.Quote(in.ID)+" exists with other terms"))
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/products/"+url.PathEscape(p.ID))
	writeJSON(w, http.StatusCreated, productJSON(p))
}

func (s *Server) getProduct(w http.ResponseWriter, r *http.Request) {
	p, err := s.svc.GetProduct(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, productJSON(p))
}

func (s *Server) updatePrice(w http.ResponseWriter, r *http.Request) {
	var in PriceJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.svc.UpdatePrice(r.Context(), r.PathValue("id"), in.Price)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, productJSON(p))
}

func (s *Server) setStock(w http.ResponseWriter, r *http.Request) {
	var in SetStockJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	st, err := s.svc.SetStock(r.Context(), id, in.OnHand, in.BuyerLimit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stockJSON(id, st))
}

func (s *Server) adjustStock(w http.ResponseWriter, r *http.Request) {
	var in AdjustStockJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	st, err := s.svc.AdjustStock(r.Context(), id, commerce.StockAdjustment{ID: in.ID, Delta: in.Delta, Reason: in.Reason})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stockJSON(id, st))
}

// checkPathID refuses, as the "id" of a body creating a resource, an ID its own routes could
// not name in their path: "." and ".." (dot segments, which clients and proxies remove) or
// anything beyond printable ASCII without spaces.
func checkPathID(id string) error {
	switch {
	case id == "." || id == "..":
		return errcode.Invalid("id", "cannot be . or .., which no URL path can name")
	case !printableASCII(id):
		return errcode.Invalid("id", "must be printable ASCII without spaces")
	}
	return nil
}
