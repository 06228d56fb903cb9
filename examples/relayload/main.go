// Command relayload measures the outbox relay MySQL → Kafka the way the Watermill peer
// (../shared/tools/peers/watermill-outbox) measures its forwarder, so that the two figures
// compare: n events over 100 keys ("0".."99") with the same payload are written to the
// outbox first (500 per transaction, not timed), then a Relay with its default settings
// drains them into the topic "orders" (3 partitions) of an in-process kfake broker, and the
// time until the last event is published and marked sent (polled every 20 ms, as the peer
// polls the topic) is the drain rate. Afterwards it
// reads the topic back (read_committed) and checks that every event arrived exactly once
// and, per key, in sequence order.
//
//	go run ./examples/relayload -n 20000 -dsn 'root@unix(/run/mysqld/mysqld.sock)/relayload?parseTime=true'
//
// scripts/relaybench.sh runs it and the Watermill peer in one sitting and prints the ratio.
// It connects to loopback (or a Unix socket) only; it drops and recreates the outbox tables
// of the DSN's database, which must exist.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-sql-driver/mysql"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

const (
	topic = "orders"
	keys  = 100
)

// payload is the Watermill peer's payload.
var payload = []byte(`{"type":"order-created","order_id":"01HZX","amount":12000,"lines":[{"sku":"A","qty":1}]}`)

func main() {
	n := flag.Int("n", 20000, "events")
	dsn := flag.String("dsn", "root@unix(/run/mysqld/mysqld.sock)/relayload?parseTime=true", "MySQL DSN (loopback or Unix socket; the database must exist)")
	batch := flag.Int("batch", 0, "relay batch size (0: the relay's default)")
	flag.Parse()
	rate, err := run(context.Background(), *dsn, *n, *batch)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayload:", err)
		os.Exit(1)
	}
	size := "default"
	if *batch > 0 {
		size = strconv.Itoa(*batch)
	}
	fmt.Printf("commercekit relay MySQL->Kafka: %d events = %.0f events/s (batch %s)\n", *n, rate, size)
}

// run fills the outbox with n events, drains it with a relay and returns events/s.
func run(ctx context.Context, dsn string, n, batch int) (float64, error) {
	db, err := open(dsn)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := fill(ctx, db, n); err != nil {
		return 0, err
	}
	cluster, err := kfake.NewCluster(kfake.SeedTopics(3, topic))
	if err != nil {
		return 0, err
	}
	defer cluster.Close()
	pub, err := saramaoutbox.NewPublisher(cluster.ListenAddrs(), nil)
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	var opts []outbox.Option
	if batch > 0 {
		opts = append(opts, outbox.WithBatchSize(batch))
	}
	relay, err := outbox.NewRelay(db, pub, opts...)
	if err != nil {
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	defer func() { stop(); <-stopped }()
	start := time.Now()
	go func() { _ = relay.Run(runCtx); close(stopped) }()
	for deadline := start.Add(10 * time.Minute); ; time.Sleep(20 * time.Millisecond) { // as the peer polls Kafka
		unsent, err := db.NewSelect().Table(outbox.TableEvents).Where("sent_at IS NULL").Count(ctx)
		if err != nil {
			return 0, err
		}
		if unsent == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d events still unsent after 10 minutes", unsent, n)
		}
	}
	elapsed := time.Since(start)
	if err := check(cluster.ListenAddrs(), n); err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// open connects to dsn, refusing anything but loopback and Unix sockets.
func open(dsn string) (*bun.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ParseTime = true
	if cfg.Net == "tcp" {
		host, _, _ := net.SplitHostPort(cfg.Addr)
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("%s is not loopback; relayload connects only to loopback or a Unix socket", host)
		}
	}
	sqldb, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	return bun.NewDB(sqldb, mysqldialect.New()), nil
}

// fill recreates the outbox tables and adds n events over 100 keys, 500 per transaction.
func fill(ctx context.Context, db *bun.DB, n int) error {
	for _, t := range []string{outbox.TableEvents, outbox.TableStreams} {
		if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return err
		}
	}
	if err := outbox.CreateSchema(ctx, db); err != nil {
		return err
	}
	for i := 0; i < n; i += 500 {
		events := make([]outbox.Event, 0, 500)
		for j := i; j < i+500 && j < n; j++ {
			events = append(events, outbox.Event{Topic: topic, Key: strconv.Itoa(j % keys), Type: "order.created", Payload: payload})
		}
		if _, err := outbox.Add(ctx, db, events...); err != nil {
			return err
		}
	}
	return nil
}

// check reads the topic back with read_committed and verifies that it holds the n events
// exactly once each and, per key, in sequence order 1, 2, 3, ...
func check(brokers []string, n int) error {
	consumer, err := sarama.NewConsumer(brokers, saramaoutbox.ConsumerConfig())
	if err != nil {
		return err
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(topic)
	if err != nil {
		return err
	}
	msgs := make(chan *sarama.ConsumerMessage)
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return err
		}
		defer pc.AsyncClose()
		go func() {
			for m := range pc.Messages() {
				msgs <- m
			}
		}()
	}
	next := make(map[string]int64, keys)
	timeout := time.After(time.Minute)
	for seen := 0; ; seen++ {
		var m *sarama.ConsumerMessage
		select {
		case m = <-msgs:
		case <-timeout:
			if seen == n {
				return nil
			}
			return fmt.Errorf("the topic holds %d events, want %d", seen, n)
		}
		if seen == n {
			return fmt.Errorf("the topic holds more than the %d events", n)
		}
		ev := saramaoutbox.EventFromMessage(m)
		if want := next[ev.Key] + 1; ev.Seq != want {
			return fmt.Errorf("key %s: seq %d arrived where %d was due", ev.Key, ev.Seq, want)
		}
		next[ev.Key] = ev.Seq
		if seen == n-1 {
			timeout = time.After(500 * time.Millisecond) // then nothing more may come
		}
	}
}
