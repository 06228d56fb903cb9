package rediscoupon_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/coupontest"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func service(b *testing.B) *coupon.Service {
	db := testenv.MySQL(b)
	if err := coupon.CreateSchema(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	return testkit.Must(coupon.New(db, rediscoupon.New(testenv.Redis(b))))(b)
}

// BenchmarkIssue: the Lua take and the coupon's SQL write (MySQL), per issue.
func BenchmarkIssue(b *testing.B) { coupontest.BenchmarkIssue(b, service(b)) }

// BenchmarkIssueSoldOut: the losers of a rush, turned away by Redis alone.
func BenchmarkIssueSoldOut(b *testing.B) { coupontest.BenchmarkIssueSoldOut(b, service(b)) }

// BenchmarkRawEvalsha is the floor under BenchmarkIssueSoldOut in the same run: what
// raw-limits measures, EVALSHA of a one-line check-and-decrement, from the same number of
// clients.
func BenchmarkRawEvalsha(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b)
	script := redis.NewScript("local s=tonumber(redis.call('GET',KEYS[1])) local n=tonumber(ARGV[1]) " +
		"if s==nil or s<n then return -1 end return redis.call('DECRBY',KEYS[1],n)")
	if err := rdb.Set(ctx, "{raw}:stock", 1_000_000_000_000, 0).Err(); err != nil {
		b.Fatal(err)
	}
	coupontest.Parallel(b, func(int64) error {
		return script.Run(ctx, rdb, []string{"{raw}:stock"}, 1).Err()
	})
}

// BenchmarkRawInsert is the floor under the SQL write of BenchmarkIssue in the same run:
// one transaction of one INSERT into a table with the same unique keys, per issue.
func BenchmarkRawInsert(b *testing.B) {
	ctx := context.Background()
	db := testenv.MySQL(b)
	if _, err := db.ExecContext(ctx, "CREATE TABLE raw_coupons(seq BIGINT AUTO_INCREMENT PRIMARY KEY, "+
		"id VARCHAR(64) NOT NULL UNIQUE, user_id VARCHAR(64) NOT NULL, request_id VARCHAR(64) NOT NULL UNIQUE) ENGINE=InnoDB"); err != nil {
		b.Fatal(err)
	}
	coupontest.Parallel(b, func(i int64) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "INSERT INTO raw_coupons(id, user_id, request_id) VALUES (UUID(), ?, ?)", i, i); err != nil {
			return err
		}
		return tx.Commit()
	})
}
