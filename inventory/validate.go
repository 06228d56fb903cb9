package inventory

import (
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// checkID validates an ID (reservation, adjustment, buyer): 1 to MaxIDLen printable ASCII
// bytes (0x21-0x7E). ASCII keeps IDs byte-for-byte comparable in every backend (MySQL
// columns use a binary ASCII collation).
func checkID(field, id string) error {
	if id == "" {
		return &ValidationError{Field: field, Reason: "must not be empty"}
	}
	if len(id) > MaxIDLen {
		return &ValidationError{Field: field, Reason: "longer than 64 bytes"}
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return &ValidationError{Field: field, Reason: "only printable ASCII without spaces is allowed"}
		}
	}
	return nil
}

// checkSKU validates a SKU: an ID that also has no ',' or '=' (the separators of the
// compact line encoding).
func CheckSKU(sku string) error {
	if err := checkID("sku", sku); err != nil {
		return err
	}
	if strings.ContainsAny(sku, ",=") {
		return &ValidationError{Field: "sku", Reason: "must not contain ',' or '='"}
	}
	return nil
}

// normalizeLines validates lines and returns them sorted by SKU with lines of one SKU summed.
func normalizeLines(lines []Line) ([]Line, error) {
	if len(lines) == 0 {
		return nil, &ValidationError{Field: "lines", Reason: "at least one line is required"}
	}
	if len(lines) > MaxLines {
		return nil, &ValidationError{Field: "lines", Reason: "more than 50 lines", Err: ErrTooManyLines}
	}
	for _, l := range lines {
		if err := CheckSKU(l.SKU); err != nil {
			return nil, err
		}
		if l.Qty <= 0 {
			return nil, &ValidationError{Field: "qty", Reason: "quantity of " + l.SKU + " must be positive", Err: ErrInvalidQuantity}
		}
		if l.Qty > MaxQtyPerSKU {
			return nil, qtyTooLarge(l.SKU)
		}
	}
	out := slices.Clone(lines)
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b Line) int { return strings.Compare(a.SKU, b.SKU) })
		merged := out[:1]
		for _, l := range out[1:] {
			last := &merged[len(merged)-1]
			if l.SKU != last.SKU {
				merged = append(merged, l)
				continue
			}
			if last.Qty += l.Qty; last.Qty > MaxQtyPerSKU {
				return nil, qtyTooLarge(l.SKU)
			}
		}
		out = merged
	}
	return out, nil
}

func qtyTooLarge(sku string) error {
	return &ValidationError{Field: "qty", Reason: "more than 999 units of " + sku, Err: ErrQuantityTooLarge}
}

// newReservation validates req and builds the reservation a backend stores.
func newReservation(req ReserveRequest, now time.Time, defaultTTL time.Duration) (Reservation, error) {
	if err := checkID("id", req.ID); err != nil {
		return Reservation{}, err
	}
	if req.BuyerID != "" {
		if err := checkID("buyer", req.BuyerID); err != nil {
			return Reservation{}, err
		}
	}
	lines, err := normalizeLines(req.Lines)
	if err != nil {
		return Reservation{}, err
	}
	ttl := req.TTL
	switch {
	case ttl < 0:
		return Reservation{}, &ValidationError{Field: "ttl", Reason: "must not be negative"}
	case ttl == 0:
		ttl = defaultTTL
	}
	expires := now.Add(ttl).Truncate(time.Millisecond)
	if !expires.After(now) {
		expires = now.Add(time.Millisecond)
	}
	return Reservation{
		ID:        req.ID,
		Lines:     lines,
		BuyerID:   req.BuyerID,
		State:     StateReserved,
		CreatedAt: now,
		ExpiresAt: expires,
	}, nil
}

func checkStockSetting(s StockSetting) error {
	if err := CheckSKU(s.SKU); err != nil {
		return err
	}
	if s.OnHand < 0 || s.OnHand > MaxOnHand {
		return &ValidationError{Field: "on_hand", Reason: "must be between 0 and 10^12", Err: ErrInvalidQuantity}
	}
	if s.BuyerLimit < 0 || s.BuyerLimit > MaxOnHand {
		return &ValidationError{Field: "buyer_limit", Reason: "must be between 0 (no limit) and 10^12", Err: ErrInvalidQuantity}
	}
	return nil
}

func checkAdjustment(a Adjustment) error {
	if err := checkID("id", a.ID); err != nil {
		return err
	}
	if err := CheckSKU(a.SKU); err != nil {
		return err
	}
	if a.Delta == 0 || a.Delta > MaxOnHand || a.Delta < -MaxOnHand {
		return &ValidationError{Field: "delta", Reason: "must be non-zero and within ±10^12", Err: ErrInvalidQuantity}
	}
	if strings.TrimSpace(a.Reason) == "" || len(a.Reason) > MaxReasonLen || !utf8.ValidString(a.Reason) || strings.ContainsRune(a.Reason, 0) {
		// Stored otherwise than given (invalid bytes as U+FFFD, a NUL dropped on MySQL), a
		// retry of the adjustment would be taken for another under its ID.
		return &ValidationError{Field: "reason", Reason: "must be 1 to 255 bytes of UTF-8 without a NUL"}
	}
	return nil
}

// normalizeSKUs validates skus and returns them without duplicates.
func normalizeSKUs(skus []string) ([]string, error) {
	if len(skus) > MaxStocksPerCall {
		return nil, &ValidationError{Field: "skus", Reason: "more than 1000 SKUs in one call"}
	}
	out := make([]string, 0, len(skus))
	seen := make(map[string]struct{}, len(skus))
	for _, s := range skus {
		if err := CheckSKU(s); err != nil {
			return nil, err
		}
		if _, dup := seen[s]; !dup {
			seen[s] = struct{}{}
			out = append(out, s)
		}
	}
	return out, nil
}
