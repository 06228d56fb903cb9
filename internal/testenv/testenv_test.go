package testenv_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type row struct {
	bun.BaseModel `bun:"table:fixture_rows"`
	K             string `bun:"k,pk"`
	V             string `bun:"v"`
}

// TestFixtures proves each fixture is a real server with a real round trip, and that two
// tests writing the same table or key never see each other's data.
func TestFixtures(t *testing.T) {
	for _, backend := range []struct {
		name string
		open func(testing.TB) *bun.DB
	}{{"MySQL", testenv.MySQL}, {"SQLite", testenv.SQLite}} {
		t.Run(backend.name, func(t *testing.T) {
			for _, value := range []string{"first", "second"} {
				t.Run(value, func(t *testing.T) {
					t.Parallel()
					db := backend.open(t)
					ctx := context.Background()
					var version string
					require.NoError(t, db.QueryRowContext(ctx, versionQuery(db)).Scan(&version))
					t.Logf("%s round trip: server version %s", backend.name, version)

					_, err := db.NewCreateTable().Model((*row)(nil)).Exec(ctx)
					require.NoError(t, err, "a fresh database has no table of that name yet")
					_, err = db.NewInsert().Model(&row{K: "shared-key", V: value}).Exec(ctx)
					require.NoError(t, err)
					time.Sleep(50 * time.Millisecond) // let the sibling test write too

					var rows []row
					require.NoError(t, db.NewSelect().Model(&rows).Scan(ctx))
					assert.Equal(t, []row{{K: "shared-key", V: value}}, rows)
				})
			}
		})
	}

	t.Run("Redis", func(t *testing.T) {
		for _, value := range []string{"first", "second"} {
			t.Run(value, func(t *testing.T) {
				t.Parallel()
				rdb := testenv.Redis(t)
				ctx := context.Background()
				require.NoError(t, rdb.Ping(ctx).Err())
				n, err := rdb.DBSize(ctx).Result()
				require.NoError(t, err)
				require.Zero(t, n, "a test's Redis database starts empty")

				require.NoError(t, rdb.Set(ctx, "shared-key", value, 0).Err())
				added, err := rdb.SAdd(ctx, "shared-set", value).Result()
				require.NoError(t, err)
				time.Sleep(50 * time.Millisecond)

				got, err := rdb.Get(ctx, "shared-key").Result()
				require.NoError(t, err)
				assert.Equal(t, value, got)
				assert.EqualValues(t, 1, added)
				members, err := rdb.SMembers(ctx, "shared-set").Result()
				require.NoError(t, err)
				assert.Equal(t, []string{value}, members)
				// Scripts run in the test's database too.
				v, err := rdb.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"shared-key"}).Text()
				require.NoError(t, err)
				assert.Equal(t, value, v)
				t.Logf("Redis round trip: SET/GET/EVAL of %q", value)
			})
		}
	})
}

func versionQuery(db *bun.DB) string {
	if db.Dialect().Name().String() == "sqlite" {
		return "SELECT sqlite_version()"
	}
	return "SELECT VERSION()"
}

// TestKafkaRoundTrip produces messages with sarama's idempotent producer and reads them
// back with a sarama consumer, across a broker stop and restart.
func TestKafkaRoundTrip(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "roundtrip")

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Max = 10
	cfg.Producer.Retry.Backoff = 50 * time.Millisecond

	produce := func(values ...string) {
		t.Helper()
		p, err := sarama.NewSyncProducer(k.Brokers, cfg)
		require.NoError(t, err)
		defer p.Close()
		for _, v := range values {
			_, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("key"), Value: sarama.StringEncoder(v)})
			require.NoError(t, err)
		}
	}
	produce("m0", "m1")
	if k.Kind == "kfake" {
		k.Stop(t)
		k.Start(t)
	}
	produce("m2")

	consumer, err := sarama.NewConsumer(k.Brokers, cfg)
	require.NoError(t, err)
	defer consumer.Close()
	client, err := sarama.NewClient(k.Brokers, cfg)
	require.NoError(t, err)
	defer client.Close()
	partition, err := client.Partitions(topic)
	require.NoError(t, err)

	var got []string
	for _, p := range partition {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		hw := pc.HighWaterMarkOffset()
		for hw > 0 && len(got) < 3 {
			select {
			case m := <-pc.Messages():
				got = append(got, string(m.Value))
				if m.Offset+1 >= hw {
					hw = 0
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no message from partition %d", p)
			}
		}
		require.NoError(t, pc.Close())
	}
	assert.Equal(t, []string{"m0", "m1", "m2"}, got, "one key, one partition, in order")
	t.Logf("Kafka round trip (%s): produced and consumed %v with sarama", k.Kind, got)
	fmt.Println() // keep -v output readable
}

// TestRedisLink: a Redis command cut before it reaches the server never runs, one cut after
// ran (its answer is lost); either way the client meets a dropped connection, the link
// cuts once per Arm, and the client works again on a new connection.
func TestRedisLink(t *testing.T) {
	ctx := context.Background()
	rdb, linked, link := testenv.LinkedRedis(t)
	require.NoError(t, linked.Set(ctx, "k", "0", 0).Err())
	isSet := func(q string) bool { return strings.HasPrefix(strings.ToLower(q), "set k ") }
	for _, after := range []bool{false, true} {
		value := fmt.Sprint(after)
		link.Arm(isSet, after)
		err := linked.Set(ctx, "k", value, 0).Err()
		cut, seen := link.Disarm()
		require.Error(t, err, "after=%t", after)
		assert.Equal(t, []string{"set k " + value}, cut)
		require.NotEmpty(t, seen)
		assert.Equal(t, "set k "+value, seen[len(seen)-1], "the cut command is the last sent (after a new connection's handshake)")
		got, err := rdb.Get(ctx, "k").Result()
		require.NoError(t, err)
		want := map[bool]string{false: "0", true: "true"}[after]
		assert.Equal(t, want, got, "after=%t: the command ran only when cut after", after)
	}
	require.NoError(t, linked.Set(ctx, "k", "again", 0).Err())
	got, err := rdb.Get(ctx, "k").Result()
	require.NoError(t, err)
	assert.Equal(t, "again", got)
}
