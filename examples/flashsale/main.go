// Command flashsale is commercekit's end-to-end benchmark: N buyers race over HTTP for M
// units of one product, each with a coupon and points, then it prints throughput and
// latency percentiles and checks the invariants of the sale, exiting 1 when one fails.
//
//	go run ./examples/flashsale                               # an embedded refserver, in process
//	go run ./examples/flashsale -buyers 5000 -units 300 -c 200
//	go run ./examples/flashsale -url http://localhost:8080 -jwt-secret "$COMMERCEKIT_JWT_SECRET"
//	go run ./examples/flashsale -mysql-dsn 'root@unix(/run/mysqld/mysqld.sock)/flashsale' -redis-addr 127.0.0.1:6379
//
// Without -url it starts refserver's embedded default in process (SQLite in a temporary
// file, the in-process PG simulator) on a loopback port and talks to it over HTTP like any
// client; with -mysql-dsn and -redis-addr it starts the full mode in process instead (that
// MySQL and Redis, an in-process Kafka-protocol broker, the PG simulator over HTTP). With -url it drives a running refserver; it mints its own tokens, so it needs the
// server's JWT secret (the embedded development secret by default).
//
// The sale, in three phases:
//
//  1. setup (admin): a product with M units and a coupon template (2,000 won off);
//  2. preparation, untimed: every buyer gets a coupon (first come) and buys points (a top-up);
//  3. the race, timed: every buyer at once places an order of one unit with the coupon
//     and the points, and pays the rest by card.
//
// Then it checks, through the API: no oversell (sold <= M, nothing left reserved, on hand
// conserved); sold = paid orders, and each buyer has at most one; coupons conserved (a paid
// order used its coupon, every other buyer still holds theirs, usable); points conserved
// (each buyer's balance is what they bought, minus what a paid order spent, plus its
// reward); and commerce's audit (every order has its order-created event, reservations,
// coupons, points and payments agree with the orders), through GET /v1/admin/audit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/commercekit/commercekit/refserver/server"
)

// config is one run.
type config struct {
	url       string
	secret    string
	db        string
	buyers    int
	units     int64
	clients   int
	price     int64
	points    int64
	discount  int64
	pgLatency time.Duration
	runID     string
	mysqlDSN  string
	redisAddr string
	redisDB   int
	// cpuProfile and blockProfile name files for CPU and block profiles of this process
	// during the race (the server's too when it runs in process).
	cpuProfile, blockProfile string
}

func main() {
	c := config{runID: time.Now().UTC().Format("150405")}
	flag.StringVar(&c.url, "url", "", "base URL of a running refserver (default: start an embedded one in process)")
	flag.StringVar(&c.secret, "jwt-secret", os.Getenv("COMMERCEKIT_JWT_SECRET"), "the server's JWT secret ($COMMERCEKIT_JWT_SECRET; default: the embedded development secret)")
	flag.StringVar(&c.db, "db", "", "embedded only: SQLite file (default: a temporary file)")
	flag.IntVar(&c.buyers, "buyers", 2000, "buyers (N)")
	flag.Int64Var(&c.units, "units", 100, "units on sale (M)")
	flag.IntVar(&c.clients, "c", 100, "concurrent HTTP clients")
	flag.Int64Var(&c.price, "price", 30_000, "unit price, won")
	flag.Int64Var(&c.points, "points", 1_000, "points each buyer buys and spends on the order (0: none)")
	flag.Int64Var(&c.discount, "coupon", 2_000, "coupon discount, won (0: no coupons)")
	flag.DurationVar(&c.pgLatency, "pg-latency", 0, "embedded only: latency of the PG simulator")
	flag.StringVar(&c.mysqlDSN, "mysql-dsn", "", "full mode in process: this MySQL (loopback or unix socket), with -redis-addr; Kafka (kfake) and the PG simulator run in process")
	flag.StringVar(&c.redisAddr, "redis-addr", "", "full mode in process: this Redis (loopback)")
	flag.IntVar(&c.redisDB, "redis-db", 0, "full mode in process: the Redis logical database")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the race to this file (in process: server and driver; a remote server has /debug/pprof/ with COMMERCEKIT_PPROF)")
	flag.StringVar(&c.blockProfile, "blockprofile", "", "write a block profile of the race to this file")
	flag.StringVar(&c.runID, "run", c.runID, "run ID, in product, coupon and buyer IDs (runs against one server stay apart)")
	flag.Parse()
	if c.secret == "" {
		c.secret = server.DevJWTSecret
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, c, os.Stdout)
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "flashsale:", err)
		os.Exit(2)
	case !ok:
		fmt.Fprintln(os.Stderr, "flashsale: INVARIANT VIOLATED")
		os.Exit(1)
	}
}

// run runs the sale (starting an embedded server when c.url is empty) and prints the
// report. ok is false when an invariant failed; err is for a sale that could not run.
func run(ctx context.Context, c config, out io.Writer) (ok bool, err error) {
	if c.buyers < 1 || c.units < 1 || c.clients < 1 || c.price < 1 || c.points < 0 || c.discount < 0 {
		return false, errors.New("buyers, units, c and price must be positive; points and coupon not negative")
	}
	if c.points+c.discount >= c.price {
		return false, errors.New("points + coupon must leave something to pay by card")
	}
	if c.url == "" {
		if c.mysqlDSN != "" && c.secret == server.DevJWTSecret { // the full mode refuses the published secret
			c.secret = "flashsale-full-mode-jwt-secret-" + c.runID + "-0123456789"
		}
		url, stop, err := startLocal(ctx, c)
		if err != nil {
			return false, err
		}
		defer stop()
		c.url = url
	}
	d, err := newDriver(c)
	if err != nil {
		return false, err
	}
	rep, err := d.sale(ctx)
	if err != nil {
		return false, err
	}
	rep.print(out, c)
	return rep.ok(), nil
}
