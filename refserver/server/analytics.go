package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// DefaultMetricsTZ is the time zone of the collector's day boundaries by default.
const DefaultMetricsTZ = "Asia/Seoul"

// eventTopics is commerce's default topic mapping with the overrides of
// COMMERCEKIT_KAFKA_TOPICS ("type=topic,...").
func eventTopics(overrides []string) (commerce.Topics, error) {
	t := commerce.DefaultTopics()
	for _, o := range overrides {
		typ, topic, ok := strings.Cut(o, "=")
		if _, known := t[typ]; !ok || !known || topic == "" {
			return nil, fmt.Errorf("COMMERCEKIT_KAFKA_TOPICS: %q is not <event type>=<topic> with a type among %v", o, commerce.EventTypes)
		}
		t[typ] = topic
	}
	return t, nil
}

// metricsLocation reads COMMERCEKIT_METRICS_TZ (Asia/Seoul: the fixed zone collector.Seoul()).
func metricsLocation(name string) (*time.Location, error) {
	if name == DefaultMetricsTZ {
		return collector.Seoul(), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("COMMERCEKIT_METRICS_TZ: %w", err)
	}
	return loc, nil
}

// buildAnalytics creates the collector (always: the ranking routes read its tables) and,
// with COMMERCEKIT_DATAPLATFORM_URL, the data-platform notifier, with their tables. It
// returns the subscriptions of their consumers for the embedded dispatcher; with Kafka it
// adds consumer-group loops instead. The collector consumes in this process unless
// COMMERCEKIT_COLLECTOR is false (then `refserver collector` runs it).
func (st *stack) buildAnalytics(ctx context.Context, cfg Config, log *slog.Logger, m *metrics, topics commerce.Topics) ([]outbox.Subscription, error) {
	if err := collector.CreateSchema(ctx, st.db); err != nil {
		return nil, err
	}
	loc, err := metricsLocation(cfg.MetricsTZ)
	if err != nil {
		return nil, err
	}
	if st.collector, err = collector.New(st.db, collector.WithLocation(loc), collector.WithLogger(log.With("component", "collector"))); err != nil {
		return nil, err
	}
	consumerOpts := []outbox.Option{outbox.WithLogger(log.With("component", "outbox")), outbox.WithObserver(m)}
	var subs []outbox.Subscription
	add := func(c *outbox.Consumer, topics []string) {
		st.consumers = append(st.consumers, c)
		if len(cfg.KafkaBrokers) == 0 {
			for _, topic := range topics {
				subs = append(subs, outbox.Subscription{Topic: topic, Consumer: c})
			}
			return
		}
		st.loops = append(st.loops, func(ctx context.Context) error { return consumeKafka(ctx, cfg.KafkaBrokers, c, topics, log) })
	}
	if cfg.Collector || len(cfg.KafkaBrokers) == 0 {
		c, err := st.collector.NewConsumer(consumerOpts...)
		if err != nil {
			return nil, err
		}
		add(c, collector.Topics(topics))
		st.loops = append(st.loops, func(ctx context.Context) error { return st.collector.RunRollups(ctx, cfg.RollupInterval) })
	}
	if cfg.DataPlatformURL != "" {
		if err := dataplatform.CreateSchema(ctx, st.db); err != nil {
			return nil, err
		}
		n, err := dataplatform.New(st.db, cfg.DataPlatformURL, dataplatform.WithLogger(log.With("component", "dataplatform")))
		if err != nil {
			return nil, err
		}
		st.notifier = n
		c, err := n.NewConsumer(consumerOpts...)
		if err != nil {
			return nil, err
		}
		add(c, dataplatform.Topics(topics))
		st.loops = append(st.loops, n.Run)
	}
	return subs, nil
}

// consumeKafka runs c as the Kafka consumer group of its name on topics until ctx ends,
// (re)connecting with backoff.
func consumeKafka(ctx context.Context, brokers []string, c *outbox.Consumer, topics []string, log *slog.Logger) error {
	for attempt := 1; ; attempt++ {
		group, err := sarama.NewConsumerGroup(brokers, c.Name(), saramaoutbox.ConsumerConfig())
		if err == nil {
			var h *saramaoutbox.ConsumerHandler
			if h, err = saramaoutbox.NewConsumerHandler(c, saramaoutbox.WithLogger(log)); err != nil {
				group.Close()
				return err
			}
			err = h.Run(ctx, group, topics...)
			if cerr := group.Close(); err == nil {
				err = cerr
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		log.Warn("Kafka consumer group failed; reconnecting", "group", c.Name(), "err", err)
		if err := backoff.Sleep(ctx, backoff.Equal(attempt, time.Second, 30*time.Second)); err != nil {
			return err
		}
	}
}

// RunCollector is `refserver collector`: the collector alone, consuming commerce's events
// from Kafka as its consumer group and rolling up weeks and months, with GET /healthz on
// the configured address, until ctx ends.
func RunCollector(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(cfg.KafkaBrokers) == 0 {
		return errors.New("the collector process consumes Kafka: set COMMERCEKIT_KAFKA_BROKERS (without Kafka the server runs the collector itself)")
	}
	topics, err := eventTopics(cfg.KafkaTopics)
	if err != nil {
		return err
	}
	db, watch, err := openDB(cfg, log, nil, false)
	if err != nil {
		return fmt.Errorf("opening the database: %w", err)
	}
	defer db.Close()
	if err := outbox.CreateSchema(ctx, db); err != nil {
		return err
	}
	cfg.Collector, cfg.DataPlatformURL = true, ""
	st := &stack{db: db}
	if watch != nil {
		st.loops = append(st.loops, watch.Run)
	}
	if _, err := st.buildAnalytics(ctx, cfg, log, newMetrics(func(error) string { return "" }), topics); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Addr: cfg.Addr, Handler: mux, ReadHeaderTimeout: cfg.ReadHeaderTimeout}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	log.Info("collector running", "topics", collector.Topics(topics), "group", collector.ConsumerName, "addr", ln.Addr().String())
	errc := make(chan error, len(st.loops))
	for _, loop := range st.loops {
		go func() { errc <- loop(ctx) }()
	}
	for range st.loops {
		if err := ignoreCanceled(<-errc); err != nil {
			log.Error("collector loop stopped", "err", err)
		}
	}
	return nil
}
