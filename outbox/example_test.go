package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/sqlitedb"
)

// Example shows the embedded mode on SQLite: a payment and its payment-completed event
// commit together, the relay hands the event to an in-process consumer, and the consumer
// applies it exactly once even when it is delivered twice.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:outbox-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := outbox.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	_, err = db.ExecContext(ctx, `CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER NOT NULL);
		CREATE TABLE revenue (day TEXT PRIMARY KEY, total INTEGER NOT NULL)`)
	if err != nil {
		panic(err)
	}

	// The consumer side: a revenue projection fed by payment-completed events.
	type paymentCompleted struct {
		PaymentID string `json:"paymentId"`
		Amount    int64  `json:"amount"`
	}
	projector, err := outbox.NewConsumer(db, "revenue-projector", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		for _, ev := range events {
			var p paymentCompleted
			if err := json.Unmarshal(ev.Payload, &p); err != nil {
				return outbox.Permanent(err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO revenue (day, total) VALUES ('2026-03-01', ?)
				ON CONFLICT (day) DO UPDATE SET total = total + excluded.total`, p.Amount)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	dispatcher, err := outbox.NewDispatcher(outbox.Subscription{Topic: "payment-completed", Consumer: projector})
	if err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(db, dispatcher)
	if err != nil {
		panic(err)
	}

	// The business transaction: the payment and its event commit together.
	var added []outbox.Event
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO payments (id, amount) VALUES ('pay-1', 35000)`); err != nil {
			return err
		}
		payload, _ := json.Marshal(paymentCompleted{PaymentID: "pay-1", Amount: 35000})
		added, err = outbox.Add(ctx, tx, outbox.Event{
			Topic: "payment-completed", Key: "order-1", Type: "payment.completed", Payload: payload,
		})
		return err
	})
	if err != nil {
		panic(err)
	}

	n, err := relay.RelayOnce(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("relayed:", n, "seq:", added[0].Seq)

	// A duplicate delivery (say, a relay that crashed before marking) changes nothing.
	if err := dispatcher.Publish(ctx, added); err != nil {
		panic(err)
	}
	var total int64
	if err := db.NewRaw(`SELECT total FROM revenue WHERE day = '2026-03-01'`).Scan(ctx, &total); err != nil {
		panic(err)
	}
	fmt.Println("revenue:", total)
	// Output:
	// relayed: 1 seq: 1
	// revenue: 35000
}
