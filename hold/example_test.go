package hold_test

import (
	"errors"
	"fmt"

	"github.com/commercekit/commercekit/hold"
)

// A leaf declares its own errors with Mark, so that a caller may ask the leaf's question
// (errors.Is(err, errReservationExpired)) or the contract's (is the hold gone?).
func ExampleMark() {
	errReservationExpired := hold.Mark("shop: reservation expired", hold.ErrVoided)
	err := fmt.Errorf("commit r-1: %w", errReservationExpired)

	fmt.Println(err)
	fmt.Println("gone:", errors.Is(err, hold.ErrGone), "voided:", errors.Is(err, hold.ErrVoided),
		"posted:", errors.Is(err, hold.ErrPosted))
	// Output:
	// commit r-1: shop: reservation expired
	// gone: true voided: true posted: false
}
