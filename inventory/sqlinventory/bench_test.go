package sqlinventory

import (
	"context"
	"testing"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
)

// BenchmarkRawTx is the floor under Reserve, measured from Go in the same run: the raw
// transaction of tools/raw-limits (conditional UPDATE of one hot row + INSERT, through
// database/sql with placeholders) on the same server and connection count.
func BenchmarkRawTx(b *testing.B) { rawTx(b) }

// BenchmarkHotSKU measures Reserve of one unit of one hot SKU from 50 goroutines next
// to the raw transaction in the same run, and reports each as ops/s and as a multiple of
// the raw rate (x-raw): with the group commit (and its reservations per transaction,
// res/tx), and alone (every reservation its own transaction) in the two ways of taking
// the hot row: the conditional UPDATE ... WHERE available >= ? that Reserve uses, and
// SELECT ... FOR UPDATE, check, UPDATE.
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/sqlinventory/
func BenchmarkHotSKU(b *testing.B) {
	var raw float64
	b.Run("raw", func(b *testing.B) { raw = rawTx(b) })
	for _, s := range []struct {
		name             string
		grouped, lockFst bool
	}{{"grouped", true, false}, {"alone", false, false}, {"aloneSelectForUpdate", false, true}} {
		b.Run(s.name, func(b *testing.B) {
			db := testenv.MySQL(b)
			if err := CreateSchema(context.Background(), db); err != nil {
				b.Fatal(err)
			}
			be := New(db)
			be.lockFirst = s.lockFst
			if !s.grouped {
				be.group = nil
			}
			inventorytest.ReserveHot(b, testkit.Must(inventory.New(be))(b), raw)
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
