package option_test

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/option"
)

// settings is what a constructor's options fill.
type settings struct {
	option.Errors
	interval time.Duration
	log      *slog.Logger
}

func Example() {
	s := settings{interval: time.Second} // the defaults
	option.Positive(&s.Errors, &s.interval, "WithInterval", 5*time.Second)
	fmt.Println(s.interval, s.Err())

	option.Positive(&s.Errors, &s.interval, "WithInterval", 0)
	option.NotNil(&s.Errors, &s.log, "WithLogger", nil)
	err := s.Err() // the first refusal; the constructor returns it
	fmt.Println(err)
	fmt.Println(errors.Is(err, errcode.ErrInvalidArgument), errcode.FieldOf(err))
	// Output:
	// 5s <nil>
	// invalid WithInterval: 0s is not positive
	// true WithInterval
}
