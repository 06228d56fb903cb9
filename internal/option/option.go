// Package option holds what the functional options of the commercekit packages share: an
// option given an out-of-range value keeps the safe default instead of storing it.
package option

// Positive sets *dst to v when v is positive and leaves the default in *dst otherwise
// (zero or negative counts, sizes and intervals mean "not set").
func Positive[T ~int | ~int64](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}
