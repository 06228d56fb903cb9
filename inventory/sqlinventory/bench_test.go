package sqlinventory

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
)

// BenchmarkReserveStrategy compares the two ways of taking a hot stock row on MySQL:
// the conditional UPDATE ... WHERE available >= ? that Reserve uses, and SELECT ... FOR
// UPDATE, check, UPDATE. Both insert the reservation row first.
func BenchmarkReserveStrategy(b *testing.B) {
	for _, s := range []struct {
		name      string
		lockFirst bool
	}{{"conditional", false}, {"selectForUpdate", true}} {
		b.Run(s.name, func(b *testing.B) {
			ctx := context.Background()
			db := testenv.MySQL(b)
			if err := CreateSchema(ctx, db); err != nil {
				b.Fatal(err)
			}
			be := New(db)
			be.lockFirst, be.group = s.lockFirst, nil
			inv := inventory.New(be)
			if _, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "hot", OnHand: inventory.MaxOnHand}); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			inventorytest.SetParallelism(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				line := []inventory.Line{{SKU: "hot", Qty: 1}}
				for pb.Next() {
					id := "b" + strconv.FormatInt(seq.Add(1), 36)
					if _, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line, TTL: time.Hour}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkRawTx is the floor under Reserve, measured from Go in the same run: the raw
// transaction of tools/raw-limits (conditional UPDATE of one hot row + INSERT, through
// database/sql with placeholders) on the same server and connection count.
func BenchmarkRawTx(b *testing.B) { rawTx(b) }

// BenchmarkHotSKU measures Reserve of one unit of one hot SKU from 50 goroutines, with
// the group commit and without it (every reservation its own transaction), next to the raw
// transaction in the same run, and reports each as ops/s and as a multiple of the raw
// rate (x-raw):
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/sqlinventory/
func BenchmarkHotSKU(b *testing.B) {
	var raw float64
	b.Run("raw", func(b *testing.B) { raw = rawTx(b) })
	for _, s := range []struct {
		name    string
		grouped bool
	}{{"grouped", true}, {"alone", false}} {
		b.Run(s.name, func(b *testing.B) {
			ctx := context.Background()
			db := testenv.MySQL(b)
			if err := CreateSchema(ctx, db); err != nil {
				b.Fatal(err)
			}
			be := New(db)
			if !s.grouped {
				be.group = nil
			}
			inv := inventory.New(be)
			if _, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "hot", OnHand: inventory.MaxOnHand}); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			inventorytest.SetParallelism(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				line := []inventory.Line{{SKU: "hot", Qty: 1}}
				for pb.Next() {
					id := "h" + strconv.FormatInt(seq.Add(1), 36)
					if _, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line, TTL: time.Hour}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			ops := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(ops, "ops/s")
			if raw > 0 {
				b.ReportMetric(ops/raw, "x-raw")
			}
			if be.group != nil {
				if batches, calls := be.group.Stats(); batches > 0 {
					b.ReportMetric(float64(calls)/float64(batches), "res/tx")
				}
			}
		})
	}
}

// rawTx runs the raw transaction from 50 goroutines and reports and returns its ops/s.
func rawTx(b *testing.B) float64 {
	ctx := context.Background()
	db := testenv.MySQL(b).DB
	for _, q := range []string{
		"CREATE TABLE raw_stock(sku BIGINT PRIMARY KEY, qty BIGINT NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE raw_resv(id BIGINT AUTO_INCREMENT PRIMARY KEY, sku BIGINT, qty INT, created_at DATETIME(6) DEFAULT NOW(6)) ENGINE=InnoDB",
		"INSERT INTO raw_stock VALUES(1, 1000000000000)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	inventorytest.SetParallelism(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tx, err := db.BeginTx(ctx, nil)
			if err == nil {
				_, err = tx.ExecContext(ctx, "UPDATE raw_stock SET qty=qty-1 WHERE sku=? AND qty>=1", 1)
			}
			if err == nil {
				_, err = tx.ExecContext(ctx, "INSERT INTO raw_resv(sku,qty) VALUES(?,1)", 1)
			}
			if err == nil {
				err = tx.Commit()
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	ops := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(ops, "ops/s")
	return ops
}
