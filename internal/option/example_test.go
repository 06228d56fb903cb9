package option_test

import (
	"fmt"
	"time"

	"github.com/commercekit/commercekit/internal/option"
)

func ExamplePositive() {
	interval := time.Second // the default
	option.Positive(&interval, 0)
	fmt.Println(interval)
	option.Positive(&interval, 5*time.Second)
	fmt.Println(interval)
	// Output:
	// 1s
	// 5s
}
