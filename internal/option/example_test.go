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

// opt is what a package's Option type is.
type opt func(*settings)

func withInterval(d time.Duration) opt {
	return func(s *settings) { option.Positive(&s.Errors, &s.interval, "WithInterval", d) }
}

func withLogger(l *slog.Logger) opt {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

func Example() {
	s := settings{interval: time.Second} // the defaults
	err := option.Apply(&s, []opt{withInterval(5 * time.Second)})
	fmt.Println(s.interval, err)

	s = settings{interval: time.Second}
	err = option.Apply(&s, []opt{withInterval(0), withLogger(nil)}) // the first refusal
	fmt.Println(err)
	fmt.Println(errors.Is(err, errcode.ErrInvalidArgument), errcode.FieldOf(err))
	// Output:
	// 5s <nil>
	// invalid WithInterval: 0s is not positive
	// true WithInterval
}
