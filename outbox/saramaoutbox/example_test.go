package saramaoutbox_test

import (
	"context"
	"log/slog"

	"github.com/IBM/sarama"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// Both ends of the outbox on Kafka: the relay publishes the events the application wrote
// in its transactions, each batch one Kafka transaction; a consumer group applies them
// exactly once per consumer name, dead-lettering poison events. (It needs Kafka and a
// database, so it is compiled, not run.)
func Example() {
	ctx := context.Background()
	brokers := []string{"127.0.0.1:9092"}
	var db *bun.DB // MySQL/MariaDB or SQLite, with outbox.CreateSchema applied

	pub, err := saramaoutbox.NewPublisher(brokers, nil) // nil: ProducerConfig()
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	relay, err := outbox.NewRelay(db, pub)
	if err != nil {
		panic(err)
	}
	go relay.Run(ctx) //nolint:errcheck // returns when ctx ends

	apply := func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		for _, ev := range events {
			slog.Info("applying", "id", ev.ID, "type", ev.Type) // write its effects through tx
		}
		return nil
	}
	consumer, err := outbox.NewConsumer(db, "shipping", apply)
	if err != nil {
		panic(err)
	}
	group, err := sarama.NewConsumerGroup(brokers, consumer.Name(), saramaoutbox.ConsumerConfig())
	if err != nil {
		panic(err)
	}
	defer group.Close()
	handler, err := saramaoutbox.NewConsumerHandler(consumer)
	if err != nil {
		panic(err)
	}
	if err := handler.Run(ctx, group, "commerce-orders"); err != nil {
		slog.Error("consumer group stopped", "err", err)
	}
}
