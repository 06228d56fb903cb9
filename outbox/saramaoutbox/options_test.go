package saramaoutbox_test

import (
	"testing"
	"time"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// TestNewConsumerHandlerRefusesBadOptions: every invalid option value is refused, naming
// the option (Redrive applies the same options the same way).
func TestNewConsumerHandlerRefusesBadOptions(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	c := testkit.Must(outbox.NewConsumer(db, "x", outboxtest.RecordingHandler("x")))(t)
	testkit.RefusesBadOptions(t, func(opts ...saramaoutbox.Option) (*saramaoutbox.ConsumerHandler, error) {
		return saramaoutbox.NewConsumerHandler(c, opts...)
	}, map[string]saramaoutbox.Option{
		"WithLogger: nil":       saramaoutbox.WithLogger(nil),
		"WithBackoff: -1ms..1s": saramaoutbox.WithBackoff(-time.Millisecond, time.Second),
		"WithBackoff: 2s..1s":   saramaoutbox.WithBackoff(2*time.Second, time.Second),
	})
}
