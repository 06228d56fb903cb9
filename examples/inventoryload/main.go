// Command inventoryload drives an inventory backend with many goroutines running
// Reserve+Commit (or Reserve alone), then prints throughput and latency percentiles and
// checks the end state exactly: every unit accounted for, nothing negative.
//
//	go run ./examples/inventoryload -backend sqlite
//	go run ./examples/inventoryload -backend mysql -dsn 'root@unix(/run/mysqld/mysqld.sock)/loadtest'
//	go run ./examples/inventoryload -backend redis -addr 127.0.0.1:6379 -skus 1000
//
// It connects to loopback (or a Unix socket) only. On MySQL it creates the inventory tables
// in the DSN's database if needed; SKUs and reservation IDs carry a run ID, so runs never
// see each other's data. On Redis its keys carry the hash tag {inventoryload}.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/sqlitedb"
)

// config is what one load run does.
type config struct {
	backend  string
	dsn      string
	addr     string
	redisDB  int
	clients  int
	duration time.Duration
	skus     int
	stock    int64
	commit   bool
	buyers   bool
}

func main() {
	var c config
	flag.StringVar(&c.backend, "backend", "sqlite", "sqlite, mysql or redis")
	flag.StringVar(&c.dsn, "dsn", "root@unix(/run/mysqld/mysqld.sock)/inventoryload", "MySQL DSN (loopback or Unix socket; the database must exist)")
	flag.StringVar(&c.addr, "addr", "127.0.0.1:6379", "Redis address (loopback)")
	flag.IntVar(&c.redisDB, "redis-db", 0, "Redis logical database")
	flag.IntVar(&c.clients, "c", 50, "concurrent clients")
	flag.DurationVar(&c.duration, "d", 10*time.Second, "duration")
	flag.IntVar(&c.skus, "skus", 1, "SKUs the load spreads over (1 = one hot SKU)")
	flag.Int64Var(&c.stock, "stock", inventory.MaxOnHand, "on-hand units per SKU (small values make the sale sell out)")
	flag.BoolVar(&c.commit, "commit", true, "commit each reservation (false: Reserve alone)")
	flag.BoolVar(&c.buyers, "buyers", false, "give every reservation a buyer (the per-buyer limit path)")
	flag.Parse()

	inv, closeFn, err := open(context.Background(), c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "inventoryload:", err)
		os.Exit(2)
	}
	defer closeFn()
	r, err := run(context.Background(), inv, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "inventoryload:", err)
		os.Exit(1)
	}
	fmt.Print(r)
}

// open builds the inventory for c.backend.
func open(ctx context.Context, c config) (*inventory.Inventory, func(), error) {
	switch c.backend {
	case "sqlite":
		db, err := sqlitedb.Open("file:inventoryload?mode=memory&cache=shared")
		if err != nil {
			return nil, nil, err
		}
		return sqlInventory(ctx, db)
	case "mysql":
		cfg, err := mysql.ParseDSN(c.dsn)
		if err != nil {
			return nil, nil, err
		}
		if cfg.Net == "tcp" {
			if err := loopback(cfg.Addr); err != nil {
				return nil, nil, err
			}
		} else if cfg.Net != "unix" {
			return nil, nil, fmt.Errorf("DSN network %q: only tcp to loopback or unix", cfg.Net)
		}
		sqldb, err := sql.Open("mysql", c.dsn)
		if err != nil {
			return nil, nil, err
		}
		sqldb.SetMaxOpenConns(c.clients)
		sqldb.SetMaxIdleConns(c.clients)
		return sqlInventory(ctx, bun.NewDB(sqldb, mysqldialect.New()))
	case "redis":
		if err := loopback(c.addr); err != nil {
			return nil, nil, err
		}
		rdb := redis.NewClient(&redis.Options{Addr: c.addr, DB: c.redisDB, PoolSize: c.clients})
		if err := rdb.Ping(ctx).Err(); err != nil {
			rdb.Close()
			return nil, nil, err
		}
		be, err := redisinventory.New(rdb, redisinventory.WithTag("inventoryload"))
		var inv *inventory.Inventory
		if err == nil {
			inv, err = inventory.New(be)
		}
		if err != nil {
			rdb.Close()
			return nil, nil, err
		}
		return inv, func() { rdb.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown backend %q (sqlite, mysql, redis)", c.backend)
}

func sqlInventory(ctx context.Context, db *bun.DB) (*inventory.Inventory, func(), error) {
	if err := sqlinventory.CreateSchema(ctx, db); err != nil {
		db.Close()
		return nil, nil, err
	}
	inv, err := inventory.New(sqlinventory.New(db))
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return inv, func() { db.Close() }, nil
}

// loopback refuses any address but this machine's.
func loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s is not a loopback address", addr)
	}
	return nil
}

// report is the outcome of a run.
type report struct {
	backend                           string
	clients, skus                     int
	commit                            bool
	elapsed                           time.Duration
	done, soldOut                     int64
	p50, p95, p99, max                time.Duration
	onHand, available, reserved, sold int64
}

func (r report) String() string {
	op := "Reserve+Commit"
	if !r.commit {
		op = "Reserve"
	}
	return fmt.Sprintf(`backend %s, %d clients, %d SKU(s), %s
  %d ops in %s: %.0f ops/s (%d refused: sold out)
  latency p50 %s  p95 %s  p99 %s  max %s
  end state: on hand %d, available %d, reserved %d, sold %d: consistent
`, r.backend, r.clients, r.skus, op, r.done, r.elapsed.Round(time.Millisecond), float64(r.done)/r.elapsed.Seconds(), r.soldOut,
		r.p50, r.p95, r.p99, r.max, r.onHand, r.available, r.reserved, r.sold)
}

// run stocks c.skus fresh SKUs, drives them for c.duration and checks the end state.
func run(ctx context.Context, inv *inventory.Inventory, c config) (report, error) {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	skus := make([]string, c.skus)
	for i := range skus {
		skus[i] = "load-" + runID + "-" + strconv.Itoa(i)
		if _, err := inv.SetStock(ctx, inventory.StockSetting{SKU: skus[i], OnHand: c.stock}); err != nil {
			return report{}, err
		}
	}

	var seq, soldOut atomic.Int64
	var firstErr error
	var errOnce sync.Once
	latencies := make([][]time.Duration, c.clients)
	deadline := time.Now().Add(c.duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range c.clients {
		wg.Go(func() {
			line := []inventory.Line{{Qty: 1}}
			for time.Now().Before(deadline) {
				n := seq.Add(1)
				line[0].SKU = skus[n%int64(len(skus))]
				req := inventory.ReserveRequest{ID: runID + "-" + strconv.FormatInt(n, 36), Lines: line, TTL: time.Hour}
				if c.buyers {
					req.BuyerID = "buyer-" + strconv.FormatInt(n, 36)
				}
				t0 := time.Now()
				_, err := inv.Reserve(ctx, req)
				if err == nil && c.commit {
					err = inv.Commit(ctx, req.ID)
				}
				switch {
				case errors.Is(err, inventory.ErrInsufficientStock):
					soldOut.Add(1)
				case err != nil:
					errOnce.Do(func() { firstErr = err })
					return
				default:
					latencies[w] = append(latencies[w], time.Since(t0))
				}
			}
		})
	}
	wg.Wait()
	r := report{backend: c.backend, clients: c.clients, skus: c.skus, commit: c.commit, elapsed: time.Since(start), soldOut: soldOut.Load()}
	if firstErr != nil {
		return r, firstErr
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	r.done = int64(len(all))
	if len(all) > 0 {
		at := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
		r.p50, r.p95, r.p99, r.max = at(0.50), at(0.95), at(0.99), all[len(all)-1]
	}
	return r, check(ctx, inv, c, skus, &r)
}

// check verifies the end state: every SKU's counts are non-negative, on hand + sold equals
// what was stocked, and the units sold (or reserved) equal the successful operations.
func check(ctx context.Context, inv *inventory.Inventory, c config, skus []string, r *report) error {
	for start := 0; start < len(skus); start += inventory.MaxStocksPerCall {
		batch := skus[start:min(start+inventory.MaxStocksPerCall, len(skus))]
		m, err := inv.Stocks(ctx, batch)
		if err != nil {
			return err
		}
		for _, sku := range batch {
			st, ok := m[sku]
			if !ok {
				return fmt.Errorf("end state: %s is missing", sku)
			}
			if st.Available < 0 || st.Reserved < 0 || st.Sold < 0 {
				return fmt.Errorf("end state: %s has a negative count: %+v", sku, st)
			}
			if st.OnHand+st.Sold != c.stock {
				return fmt.Errorf("end state: %s: on hand %d + sold %d != stocked %d", sku, st.OnHand, st.Sold, c.stock)
			}
			r.onHand += st.OnHand
			r.available += st.Available
			r.reserved += st.Reserved
			r.sold += st.Sold
		}
	}
	held, free := r.sold, r.reserved
	if !c.commit {
		held, free = r.reserved, r.sold
	}
	if held != r.done || free != 0 {
		return fmt.Errorf("end state: %d ops succeeded but reserved %d, sold %d", r.done, r.reserved, r.sold)
	}
	return nil
}
