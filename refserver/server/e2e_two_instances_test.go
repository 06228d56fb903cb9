package server_test

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestTwoInstancesSale: production runs several refservers against one MySQL and one
// Redis. Two full-mode instances share a MySQL, a Redis, a Kafka and a PG simulator (whose
// webhooks go to them in turn), each with its own background loops (relay, consumers,
// healer, coupon claims). A flash sale runs across both: buyers take coupons of a limited
// template and buy points on one, place on one and pay on the other, all at once. The end
// state is exact: no oversell, sold = paid orders, the units conserved, exactly the
// template's coupons issued and each used by the order that took it, every buyer's points
// what they bought, spent and earned, one charge per payment, the audit clean on both,
// every event published once by one relay or the other and applied once by the collector.
func TestTwoInstancesSale(t *testing.T) {
	twoInstanceSale(t, "no fault", nil)
}

// TestTwoInstancesSaleRedisRestartsEmpty: the same sale, with the shared Redis emptied and
// restarted mid-sale, so both instances' healers race to rebuild it from the SQL journal.
// Every answer during the loss is honest (its success, or 503 with Retry-After; never
// 500), and once Redis is back the end state is the same exact one.
func TestTwoInstancesSaleRedisRestartsEmpty(t *testing.T) {
	twoInstanceSale(t, "Redis restarted empty", func(rdb *testenv.Own) {
		rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
		defer rc.Close()
		require.NoError(t, rc.FlushAll(t.Context()).Err()) // whatever a snapshot would keep
		rdb.Stop(t, 0)
		time.Sleep(2 * time.Second)
		rdb.Start(t)
	})
}

// twoInstances is two full-mode servers on one MySQL, one Redis, one Kafka and one PG
// simulator, as a deployment of several behind a load balancer.
type twoInstances struct {
	apps [2]*app
	cfg  server.Config // of both
	sim  *pgsim.Simulator
	rdb  *testenv.Own
	dsn  string
}

// edit, if not nil, is applied to each instance's copy of the configuration.
func newTwoInstances(t *testing.T, edit ...func(i int, cfg *server.Config)) *twoInstances {
	t.Helper()
	rdb := testenv.OwnRedis(t)
	_, dsn := testenv.OwnMySQL(t)
	cfg, sim, setHook := fullConfig(t, dsn, rdb.Addr, 0)
	ti := &twoInstances{cfg: cfg, sim: sim, rdb: rdb, dsn: dsn}
	var targets [2]*url.URL
	for i := range ti.apps {
		ti.apps[i] = start(t, backend{name: fmt.Sprintf("instance-%d", i), config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
			own := cfg
			for _, e := range edit {
				e(i, &own)
			}
			return own, sim, func(u string) { targets[i] = testkit.Must(url.Parse(u))(t) }
		}}, nil, fastHash)
	}
	// The PG's webhooks go to the instances in turn, through a balancer of the test's own.
	var turn atomic.Uint64
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(targets[turn.Add(1)%2])
	}})
	t.Cleanup(lb.Close)
	setHook(lb.URL)
	return ti
}

// buyerOutcome is what one buyer of the two-instance sale got.
type buyerOutcome struct {
	failed  string // an answer no step allows
	coupon  string // the coupon issued, if any
	topUp   bool   // the points were bought
	placed  bool
	order   server.OrderJSON // the order as its pay answered it (or as placed)
	paid    bool
	soldOut bool // place answered 422 out_of_stock
}

// twoInstanceSale runs the sale on two instances, calls fault (nil: none) on the test's
// goroutine as the buyers are let go, and checks the end state.
func twoInstanceSale(t *testing.T, what string, fault func(rdb *testenv.Own)) {
	const (
		buyers  = 48
		units   = 20
		coupons = 10 // of the limited template; 18 buyers ask for one, 12 once let go
		price   = 10_000
		topUp   = 3000 // bought by 24 buyers
		spend   = 2000 // the points each of them puts on the order
	)
	began := time.Now()
	ti := newTwoInstances(t)
	a, b := ti.apps[0], ti.apps[1]
	admin := setup(t, a, "flash", price, units)
	expect(t, b.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{ID: "tpl-limited", Kind: "fixed",
		Amount: 1000, TotalQuantity: coupons, PerUserLimit: 1}), http.StatusCreated)
	toks := make([]string, buyers)
	for i := range buyers {
		toks[i] = signUpAndLogin(t, ti.apps[i%2], fmt.Sprintf("buyer-%02d", i)).AccessToken
	}
	wantsCoupon := func(i int) bool { return i%4 == 0 || i%8 == 1 }
	wantsPoints := func(i int) bool { return i%4 < 2 }

	// Each buyer runs its steps up to the one it parks before (step i%4), waits there until
	// every buyer has parked and the test lets them go (with the fault starting), then runs
	// the rest: so the fault meets each step of the flow, and places of earlier buyers are
	// paid after it.
	c := &flowClient{}
	outcomes := make([]buyerOutcome, buyers)
	var parked sync.WaitGroup
	parked.Add(buyers)
	gate := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.Parallel(buyers, buyers, func(i int) {
			o := &outcomes[i]
			tok := toks[i]
			fail := func(step string, r resp) { o.failed = fmt.Sprintf("%s: %d %s", step, r.Status, r.Body) }
			steps := []func() bool{
				func() bool { // a coupon of the limited template: 201, or 422 once they are gone
					if !wantsCoupon(i) {
						return true
					}
					r := c.on(ti.apps[(i/2)%2], "issue", "POST", "/v1/coupon-templates/tpl-limited/issue", tok, "iss", nil)
					var cp server.CouponJSON
					p, _ := decodeProblem(r.Body)
					switch {
					case r.Status == http.StatusCreated && jsonUnmarshal(r.Body, &cp) == nil:
						o.coupon = cp.ID
					case r.Status == http.StatusUnprocessableEntity && p.Code == "coupon_sold_out":
					default:
						fail("issue", r)
						return false
					}
					return true
				},
				func() bool { // points
					if !wantsPoints(i) {
						return true
					}
					r := c.on(ti.apps[(i/3)%2], "top-up", "POST", "/v1/points/top-ups", tok, "tu",
						server.TopUpRequestJSON{Amount: topUp, Method: "CARD", Token: "tok_ok"})
					var tu server.TopUpJSON
					if r.Status != http.StatusCreated || jsonUnmarshal(r.Body, &tu) != nil || tu.Status != "COMPLETED" {
						fail("top-up", r)
						return false
					}
					o.topUp = true
					return true
				},
				func() bool { // place on one instance
					in := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "flash", Qty: 1}}, CouponID: o.coupon}
					if o.topUp {
						in.Points = spend
					}
					r := c.on(ti.apps[i%2], "place", "POST", "/v1/orders", tok, "order", in)
					if p, ok := decodeProblem(r.Body); ok && r.Status == http.StatusUnprocessableEntity && p.Code == "out_of_stock" {
						o.soldOut = true
						return false
					}
					if r.Status != http.StatusCreated || jsonUnmarshal(r.Body, &o.order) != nil {
						fail("place", r)
						return false
					}
					o.placed = true
					return true
				},
				func() bool { // pay on the other
					r := c.on(ti.apps[(i+1)%2], "pay", "POST", "/v1/orders/"+o.order.ID+"/pay", tok, "pay",
						server.PayJSON{Method: "CARD", Token: "tok_ok"})
					if r.Status != http.StatusOK || jsonUnmarshal(r.Body, &o.order) != nil || o.order.Status != "PAID" {
						fail("pay", r)
						return false
					}
					o.paid = true
					return true
				},
			}
			park, parkedHere := i%len(steps), false
			for s, step := range steps {
				if s == park {
					parked.Done()
					parkedHere = true
					<-gate
				}
				if !step() {
					break
				}
			}
			if !parkedHere { // stopped before its parking step
				parked.Done()
			}
		})
	}()
	parked.Wait()
	saleStart := time.Now()
	close(gate)
	if fault != nil {
		fault(ti.rdb)
	}
	<-done
	sale := time.Since(saleStart)

	// Every answer was honest: no 5xx but 503, every 503 with Retry-After, no first
	// attempt refused as "in progress", no transport failure.
	statuses := checkHonestAttempts(t, c.log)
	t.Logf("%s: answers %v", what, statuses)

	// Every buyer got a final answer at each step, and the orders are what they asked for.
	var issued, toppedUp, paid, soldOut int
	var revenue int64
	for i, o := range outcomes {
		require.Empty(t, o.failed, "buyer %d", i)
		if o.coupon != "" {
			issued++
		}
		if o.topUp {
			toppedUp++
		}
		switch {
		case o.paid:
			paid++
			var discount, points int64
			if o.coupon != "" {
				discount = 1000
			}
			if o.topUp {
				points = spend
			}
			due := price - discount - points
			assert.Equal(t, []any{o.coupon, int64(price), discount, points, due, due / 100},
				[]any{o.order.CouponID, o.order.Subtotal, o.order.Discount, o.order.Points, o.order.AmountDue, o.order.Reward}, "buyer %d", i)
			revenue += price - discount
		case o.soldOut:
			soldOut++
		default:
			t.Errorf("buyer %d: neither paid nor told out of stock: %+v", i, o)
		}
	}
	t.Logf("%s: %d buyers paid, %d told out of stock, %d coupons issued, %d top-ups; the sale took %v",
		what, paid, soldOut, issued, toppedUp, sale.Round(time.Millisecond))
	assert.Equal(t, units, paid, "no oversell, no unit left")
	assert.Equal(t, buyers-units, soldOut)
	assert.Equal(t, coupons, issued, "exactly the template's coupons")

	// Each instance reads the same exact state.
	for n, x := range ti.apps {
		st := as[server.StockJSON](t, expect(t, e2eUntilFinal(t, x, "GET", "/v1/products/flash/stock", "", "", nil), http.StatusOK))
		assert.Equal(t, int64(units), st.Available+st.Reserved+st.Sold, "instance %d: units conserved", n)
		assert.Equal(t, []int64{0, 0, units}, []int64{st.Available, st.Reserved, st.Sold}, "instance %d: sold = paid orders", n)
	}
	for i, o := range outcomes {
		x := ti.apps[(i+1)%2]
		w := as[server.CouponPageJSON](t, expect(t, x.call("GET", "/v1/coupons", toks[i], "", nil), http.StatusOK)).Coupons
		if o.coupon == "" {
			assert.Empty(t, w, "buyer %d: no coupon", i)
		} else if assert.Len(t, w, 1, "buyer %d: one coupon", i) {
			want := []string{o.coupon, "available", ""}
			if o.paid {
				want = []string{o.coupon, "used", o.order.ID}
			}
			assert.Equal(t, want, []string{w[0].ID, w[0].State, w[0].OrderID}, "buyer %d", i)
		}
		var total int64
		if o.topUp {
			total = topUp
		}
		if o.paid {
			total += o.order.Reward - o.order.Points
		}
		bal := as[server.BalanceJSON](t, expect(t, x.call("GET", "/v1/points", toks[i], "", nil), http.StatusOK))
		assert.Equal(t, server.BalanceJSON{Available: total, Total: total}, bal, "buyer %d: points bought, spent and earned once", i)
		orders := as[server.OrderPageJSON](t, expect(t, x.call("GET", "/v1/orders", toks[i], "", nil), http.StatusOK)).Orders
		if o.paid && assert.Len(t, orders, 1, "buyer %d", i) {
			assert.Equal(t, [2]string{o.order.ID, "PAID"}, [2]string{orders[0].ID, orders[0].Status}, "buyer %d", i)
		} else if !o.paid {
			assert.Empty(t, orders, "buyer %d", i)
		}
	}
	stats := ti.sim.Stats()
	assert.Equal(t, paid+toppedUp, stats.Charges, "each payment charged once")
	assert.Equal(t, 0, stats.Cancels, "nothing refunded")
	for _, x := range ti.apps {
		(&attackEnv{app: x, admin: admin}).requireAuditClean(t)
	}

	// The outbox: every event published, by one relay or the other, once; each applied
	// once by the collector, whichever instance's consumer got it.
	db, err := sql.Open("mysql", ti.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		var unsent int
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM outbox_events WHERE sent_at IS NULL OR dead_at IS NOT NULL").Scan(&unsent))
		if unsent == 0 {
			break
		}
		require.False(t, time.Now().After(deadline), "%d events still unsent", unsent)
	}
	byType, byTopic := map[string]int64{}, map[string]int64{}
	rows, err := db.QueryContext(t.Context(), "SELECT event_type, topic, COUNT(*) FROM outbox_events GROUP BY event_type, topic")
	require.NoError(t, err)
	for rows.Next() {
		var typ, topic string
		var n int64
		require.NoError(t, rows.Scan(&typ, &topic, &n))
		byType[typ] += n
		byTopic[topic] += n
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	assert.Equal(t, map[string]int64{commerce.EventOrderCreated: units, commerce.EventPaymentCompleted: units,
		commerce.EventCouponIssued: coupons, commerce.EventPointsCharged: int64(toppedUp)}, byType)
	topics := ti.topics(t)
	for topic, n := range byTopic {
		assert.Equal(t, n, counterSum(t, ti.apps[:], "commercekit_outbox_events_total", map[string]string{"stage": "published", "topic": topic}),
			"%s: each event published once", topic)
	}
	var collected int64
	for _, topic := range collector.Topics(topics) {
		collected += byTopic[topic]
	}
	applied := func() int64 {
		return counterSum(t, ti.apps[:], "commercekit_outbox_consumer_events_total", map[string]string{"consumer": collector.ConsumerName, "outcome": "applied"})
	}
	for deadline := time.Now().Add(time.Minute); applied() < collected && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
	}
	assert.Equal(t, collected, applied(), "each event of the collector's topics applied once")
	assert.Zero(t, counterSum(t, ti.apps[:], "commercekit_outbox_consumer_events_total", map[string]string{"outcome": "dead_lettered"}))
	// Kafka holds each event once, whichever relay published it.
	want := map[string]int{}
	ids, err := db.QueryContext(t.Context(), "SELECT id FROM outbox_events")
	require.NoError(t, err)
	for ids.Next() {
		var id string
		require.NoError(t, ids.Scan(&id))
		want[id] = 1
	}
	require.NoError(t, ids.Err())
	require.NoError(t, ids.Close())
	assert.Equal(t, want, kafkaCopies(t, db, ti.cfg.KafkaBrokers, slices.Sorted(maps.Keys(byTopic))), "each event on Kafka once")
	for n, x := range ti.apps {
		var m server.MetricsJSON
		for _, it := range as[server.ProductMetricsJSON](t, expect(t, x.call("GET", "/v1/products/flash/metrics?period=daily", "", "", nil), http.StatusOK)).Items {
			m.Orders, m.Units, m.Revenue, m.NetUnits, m.NetRevenue = m.Orders+it.Orders, m.Units+it.Units, m.Revenue+it.Revenue, m.NetUnits+it.NetUnits, m.NetRevenue+it.NetRevenue
			m.Cancellations, m.UnitsRefunded, m.RevenueRefunded = m.Cancellations+it.Cancellations, m.UnitsRefunded+it.UnitsRefunded, m.RevenueRefunded+it.RevenueRefunded
		}
		assert.Equal(t, server.MetricsJSON{Orders: units, Units: units, Revenue: revenue, NetUnits: units, NetRevenue: revenue}, m,
			"instance %d: the collector counted each sale once", n)
	}
	t.Logf("%s: the test took %v", what, time.Since(began).Round(time.Millisecond))
}

// topics returns the instances' mapping of event types to topics.
func (ti *twoInstances) topics(t *testing.T) commerce.Topics {
	t.Helper()
	out := commerce.DefaultTopics()
	for _, o := range ti.cfg.KafkaTopics {
		typ, topic, ok := strings.Cut(o, "=")
		require.True(t, ok, o)
		out[typ] = topic
	}
	return out
}

// markerHeader marks the messages kafkaCopies writes.
const markerHeader = "commercekit-test-marker"

// kafkaCopies returns how many copies of each event the topics hold on Kafka, as a
// read_committed consumer sees them: it reads each partition up to a marker it writes at
// its end. A marker is a copy of an event of the topic that was published already (with
// markerHeader), so that the consumers of the topic skip it as a duplicate.
func kafkaCopies(t *testing.T, db *sql.DB, brokers, topics []string) map[string]int {
	t.Helper()
	ccfg := saramaoutbox.ConsumerConfig() // with short waits: idle partitions would hold each fetch 500 ms
	ccfg.Consumer.MaxWaitTime, ccfg.Consumer.Retry.Backoff = 50*time.Millisecond, 50*time.Millisecond
	client, err := sarama.NewClient(brokers, ccfg)
	require.NoError(t, err)
	defer client.Close()
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(brokers, cfg)
	require.NoError(t, err)
	defer producer.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	require.NoError(t, err)
	defer consumer.Close()

	type partition struct {
		topic string
		p     int32
		end   int64 // the marker's offset
		pc    sarama.PartitionConsumer
	}
	var parts []partition // consumed all at once, read one by one
	for _, topic := range topics {
		ev := outbox.Event{Topic: topic}
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT id, aggregate_key, seq, event_type, payload, created_at FROM outbox_events WHERE topic = ? ORDER BY pos LIMIT 1",
			topic).Scan(&ev.ID, &ev.Key, &ev.Seq, &ev.Type, &ev.Payload, &ev.CreatedAt))
		require.NoError(t, client.RefreshMetadata(topic))
		partitions, err := client.Partitions(topic)
		require.NoError(t, err)
		for _, p := range partitions {
			m := saramaoutbox.Message(ev)
			m.Partition = p
			m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(markerHeader), Value: []byte("1")})
			_, end, err := producer.SendMessage(m)
			require.NoError(t, err)
			pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
			require.NoError(t, err)
			parts = append(parts, partition{topic: topic, p: p, end: end, pc: pc})
		}
	}
	copies := map[string]int{}
	for _, part := range parts {
		for done := false; !done; {
			select {
			case msg := <-part.pc.Messages():
				if done = msg.Offset >= part.end; !done {
					copies[saramaoutbox.EventFromMessage(msg).ID]++
				}
			case err := <-part.pc.Errors():
				t.Fatalf("reading %s/%d: %v", part.topic, part.p, err)
			case <-time.After(time.Minute):
				t.Fatalf("reading %s/%d: no marker at offset %d", part.topic, part.p, part.end)
			}
		}
		require.NoError(t, part.pc.Close())
	}
	return copies
}

// counterSum returns the sum, over the servers' /metrics, of the samples of the counter
// name whose labels include want.
func counterSum(t *testing.T, apps []*app, name string, want map[string]string) int64 {
	t.Helper()
	sample := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `\{(.*)\} (\S+)$`)
	label := regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)
	var sum float64
	for _, a := range apps {
		r := expect(t, a.call("GET", "/metrics", token(t, "ops", true), "", nil), http.StatusOK)
		sc := bufio.NewScanner(bytes.NewReader(r.Body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			m := sample.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			labels := map[string]string{}
			for _, l := range label.FindAllStringSubmatch(m[1], -1) {
				labels[l[1]] = l[2]
			}
			match := true
			for k, v := range want {
				match = match && labels[k] == v
			}
			if match {
				v, err := strconv.ParseFloat(m[2], 64)
				require.NoError(t, err)
				sum += v
			}
		}
		require.NoError(t, sc.Err())
	}
	return int64(sum)
}
