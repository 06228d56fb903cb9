package inventory

import (
	"fmt"
	"strconv"
	"strings"
)

// EncodeLines returns the compact text form of normalized lines, "sku=qty,sku=qty", which
// backends store in one field. SKUs never contain ',' or '=', so the form is unambiguous,
// and normalized lines (sorted, summed) always encode the same way, so backends compare
// encodings to recognise a replayed reservation.
func EncodeLines(lines []Line) string {
	var b strings.Builder
	b.Grow(len(lines) * 16)
	for i, l := range lines {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.SKU)
		b.WriteByte('=')
		b.WriteString(strconv.FormatInt(l.Qty, 10))
	}
	return b.String()
}

// DecodeLines parses the form EncodeLines writes.
func DecodeLines(s string) ([]Line, error) {
	lines := make([]Line, 0, strings.Count(s, ",")+1)
	for part := range strings.SplitSeq(s, ",") {
		sku, qty, ok := strings.Cut(part, "=")
		n, err := strconv.ParseInt(qty, 10, 64)
		if !ok || sku == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("inventory: malformed stored lines %q", s)
		}
		lines = append(lines, Line{SKU: sku, Qty: n})
	}
	return lines, nil
}
