package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/testcontainers/testcontainers-go/modules/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is a Kafka-protocol broker for one test: an in-process kfake cluster of the test's
// own (the default), or the package's real Kafka container when COMMERCEKIT_KAFKA_IMAGE
// names a confluentinc/confluent-local image.
type Kafka struct {
	// Brokers are the bootstrap addresses to hand to sarama.
	Brokers []string
	// Kind says which broker this is: "kfake" or the image of the real broker.
	Kind string

	fake    *kfake.Cluster
	fakeMu  sync.Mutex
	fakeDir string
	port    int
}

// NewKafka returns a broker for the test and logs which kind it is. Topics are created on
// first use. On a shared real broker, name topics with Topic to keep tests apart.
func NewKafka(tb testing.TB) *Kafka {
	tb.Helper()
	setupEnv()
	if img := os.Getenv("COMMERCEKIT_KAFKA_IMAGE"); img != "" {
		k := &Kafka{Brokers: realKafkaFor(tb, img), Kind: img}
		tb.Logf("testenv: Kafka is a real broker (%s) at %v", img, k.Brokers)
		return k
	}
	k := &Kafka{Kind: "kfake", fakeDir: tb.TempDir()}
	k.startFake(tb)
	k.Brokers = k.fake.ListenAddrs()
	_, portStr, _ := net.SplitHostPort(k.Brokers[0])
	k.port, _ = strconv.Atoi(portStr)
	tb.Cleanup(func() { k.Stop(tb) })
	tb.Logf("testenv: Kafka is the in-process kfake broker at %v", k.Brokers)
	return k
}

// Topic returns a topic name unique to this test, derived from name.
func (k *Kafka) Topic(tb testing.TB, name string) string {
	return uniqueName(tb, name)
}

// Stop takes the broker down: clients get connection errors until Start. Data written so
// far is kept. Only the in-process broker can be stopped.
func (k *Kafka) Stop(tb testing.TB) {
	tb.Helper()
	k.requireFake(tb, "Stop")
	k.fakeMu.Lock()
	defer k.fakeMu.Unlock()
	if k.fake != nil {
		k.fake.Close()
		k.fake = nil
	}
}

// Start brings a stopped broker back on the same address with the data it had.
func (k *Kafka) Start(tb testing.TB) {
	tb.Helper()
	k.requireFake(tb, "Start")
	k.startFake(tb)
}

func (k *Kafka) requireFake(tb testing.TB, op string) {
	tb.Helper()
	if k.Kind != "kfake" {
		tb.Fatalf("testenv: Kafka.%s needs the in-process broker; unset COMMERCEKIT_KAFKA_IMAGE", op)
	}
}

func (k *Kafka) startFake(tb testing.TB) {
	tb.Helper()
	k.fakeMu.Lock()
	defer k.fakeMu.Unlock()
	if k.fake != nil {
		return
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(4),
		kfake.DataDir(k.fakeDir),
		kfake.SyncWrites(),
	}
	if k.port != 0 {
		opts = append(opts, kfake.Ports(k.port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		tb.Fatalf("testenv: starting the in-process Kafka broker: %v", err)
	}
	k.fake = c
}

var (
	realKafkaOnce    sync.Once
	realKafkaBrokers []string
	realKafkaErr     error
)

func realKafkaFor(tb testing.TB, img string) []string {
	tb.Helper()
	realKafkaOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		c, err := kafka.Run(ctx, img, kafka.WithClusterID("commercekit-test"))
		if c != nil {
			terminateAtShutdown("Kafka", c)
		}
		if err != nil {
			realKafkaErr = fmt.Errorf("%s", missing("Kafka ("+img+")", err))
			return
		}
		realKafkaBrokers, realKafkaErr = c.Brokers(ctx)
		if realKafkaErr == nil {
			fmt.Fprintf(os.Stderr, "testenv: Kafka (%s) at %v, a Testcontainers container\n", img, realKafkaBrokers)
		}
	})
	if realKafkaErr != nil {
		tb.Fatal(realKafkaErr)
	}
	for _, b := range realKafkaBrokers {
		host, _, _ := net.SplitHostPort(b)
		requireLoopback(tb, "the Kafka container", host)
	}
	return realKafkaBrokers
}
