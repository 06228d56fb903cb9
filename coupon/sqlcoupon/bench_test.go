package sqlcoupon_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/coupontest"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func service(b *testing.B, db *bun.DB) *coupon.Service {
	ctx := context.Background()
	if err := coupon.CreateSchema(ctx, db); err != nil {
		b.Fatal(err)
	}
	if err := sqlcoupon.CreateSchema(ctx, db); err != nil {
		b.Fatal(err)
	}
	return testkit.Must(coupon.New(db, sqlcoupon.New()))(b)
}

func BenchmarkIssueMySQL(b *testing.B) { coupontest.BenchmarkIssue(b, service(b, testenv.MySQL(b))) }

func BenchmarkIssueSoldOutMySQL(b *testing.B) {
	coupontest.BenchmarkIssueSoldOut(b, service(b, testenv.MySQL(b)))
}

func BenchmarkIssueSQLite(b *testing.B) { coupontest.BenchmarkIssue(b, service(b, testenv.SQLite(b))) }

// BenchmarkRawMySQL is the floor under BenchmarkIssueMySQL in the same run: what
// raw-limits measures, one transaction of a conditional UPDATE of one hot row plus an
// INSERT, from the same number of clients.
func BenchmarkRawMySQL(b *testing.B) {
	ctx := context.Background()
	db := testenv.MySQL(b)
	for _, q := range []string{
		"CREATE TABLE raw_stock(sku BIGINT PRIMARY KEY, qty BIGINT NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE raw_resv(id BIGINT AUTO_INCREMENT PRIMARY KEY, sku BIGINT, qty INT, created_at DATETIME(6) DEFAULT NOW(6)) ENGINE=InnoDB",
		"INSERT INTO raw_stock VALUES (1, 1000000000000)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	coupontest.Parallel(b, func(int64) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "UPDATE raw_stock SET qty = qty - 1 WHERE sku = 1 AND qty >= 1"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO raw_resv(sku, qty) VALUES (1, 1)"); err != nil {
			return err
		}
		return tx.Commit()
	})
}
