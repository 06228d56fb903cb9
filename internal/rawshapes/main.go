// Command rawshapes measures what two ways of cutting round trips could gain on the raw
// transaction that issue 16's checkout target is a ratio of (../shared/tools/raw-limits: a
// conditional UPDATE of one of 1,000 stock rows and one INSERT, 50 connections). It runs,
// one after the other for the same duration, on a MySQL-protocol server on loopback:
//
//   - one: that transaction, one pair per transaction, each statement one round trip
//     (arguments inlined, as bun sends them);
//   - grouped: -group pairs in one transaction (rows locked in key order), as a group commit
//     of callers whose statements stay one per row would send them;
//   - pipelined: the whole transaction (START TRANSACTION, UPDATE, INSERT, COMMIT) in one
//     multi-statement round trip.
//
// It prints each rate in pairs per second and its ratio to one. It creates and drops its own
// tables in the database it is given. Usage:
//
//	go run ./internal/rawshapes -dsn 'root@unix(/run/mysqld/mysqld.sock)/rawlimits'
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

func main() {
	dsn := flag.String("dsn", "root@unix(/run/mysqld/mysqld.sock)/rawlimits", "MySQL DSN (loopback or socket only)")
	conns := flag.Int("c", 50, "concurrent connections")
	rows := flag.Int("rows", 1000, "stock rows the load spreads over")
	group := flag.Int("group", 8, "pairs per transaction in the grouped shape")
	dur := flag.Duration("d", 5*time.Second, "duration of each shape")
	flag.Parse()
	if err := run(*dsn, *conns, *rows, *group, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "rawshapes:", err)
		os.Exit(1)
	}
}

func run(dsn string, conns, rows, group int, dur time.Duration) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return err
	}
	if host, _, _ := net.SplitHostPort(cfg.Addr); cfg.Net == "tcp" && host != "127.0.0.1" && host != "::1" && host != "localhost" {
		return fmt.Errorf("%s is not on loopback", cfg.Addr)
	}
	cfg.InterpolateParams, cfg.MultiStatements = true, true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	ctx := context.Background()
	for _, q := range []string{
		"DROP TABLE IF EXISTS rawshapes_stock", "DROP TABLE IF EXISTS rawshapes_resv",
		"CREATE TABLE rawshapes_stock(sku BIGINT PRIMARY KEY, qty BIGINT NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE rawshapes_resv(id BIGINT AUTO_INCREMENT PRIMARY KEY, sku BIGINT, qty INT, created_at DATETIME(6) DEFAULT NOW(6)) ENGINE=InnoDB",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	defer db.ExecContext(ctx, "DROP TABLE IF EXISTS rawshapes_stock, rawshapes_resv")
	for sku := 1; sku <= rows; sku++ {
		if _, err := db.ExecContext(ctx, "INSERT INTO rawshapes_stock VALUES (?, 1000000000)", sku); err != nil {
			return err
		}
	}

	shapes := []struct {
		name  string
		pairs int
		do    func(ctx context.Context, skus []int) error
	}{
		{"one", 1, func(ctx context.Context, skus []int) error { return inTx(ctx, db, skus) }},
		{fmt.Sprintf("grouped (%d pairs per transaction)", group), group, func(ctx context.Context, skus []int) error { return inTx(ctx, db, skus) }},
		{"pipelined (one round trip per transaction)", 1, func(ctx context.Context, skus []int) error {
			_, err := db.ExecContext(ctx, fmt.Sprintf("START TRANSACTION; UPDATE rawshapes_stock SET qty = qty - 1 WHERE sku = %d AND qty >= 1; "+
				"INSERT INTO rawshapes_resv (sku, qty) VALUES (%d, 1); COMMIT", skus[0], skus[0]))
			return err
		}},
	}
	var base float64
	for _, sh := range shapes {
		rate, err := measure(ctx, conns, rows, sh.pairs, dur, sh.do)
		if err != nil {
			return fmt.Errorf("%s: %w", sh.name, err)
		}
		if base == 0 {
			base = rate
		}
		fmt.Printf("raw UPDATE + INSERT pairs, %d conns, %d rows, %s: %.0f pairs/s (%.2f × one)\n", conns, rows, sh.name, rate, rate/base)
	}
	return nil
}

// inTx runs one UPDATE + INSERT pair per SKU in one transaction, a statement per round trip.
func inTx(ctx context.Context, db *sql.DB, skus []int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after Commit, a no-op
	for _, sku := range skus {
		if _, err := tx.ExecContext(ctx, "UPDATE rawshapes_stock SET qty = qty - 1 WHERE sku = ? AND qty >= 1", sku); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO rawshapes_resv (sku, qty) VALUES (?, 1)", sku); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// measure runs do on conns connections for dur, each call with pairs SKUs drawn from rows
// in key order (so that grouped transactions do not deadlock), and returns pairs per second.
func measure(ctx context.Context, conns, rows, pairs int, dur time.Duration, do func(context.Context, []int) error) (float64, error) {
	var done atomic.Int64
	var first error
	var once sync.Once
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			skus := make([]int, pairs)
			for time.Now().Before(deadline) {
				for i := range skus {
					skus[i] = 1 + rand.IntN(rows)
				}
				slices.Sort(skus)
				if err := do(ctx, skus); err != nil {
					once.Do(func() { first = err })
					return
				}
				done.Add(int64(pairs))
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / dur.Seconds(), first
}
