package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
)

// Round trips to the stores, counted so that a load driver can divide them by the work done
// (the flash-sale report prints SQL transactions, SQL statements and Redis round trips per
// checkout): commercekit_sql_round_trips_total{kind="begin|commit|rollback|statement"} and
// commercekit_redis_round_trips_total{kind="command|pipeline"}. A pipeline or a MULTI block
// is one round trip however many commands it carries.

// sqlRoundTrips is a bun query hook counting every statement bun sends.
type sqlRoundTrips struct {
	begin, commit, rollback, statement prometheus.Counter
}

func newSQLRoundTrips(m *metrics) *sqlRoundTrips {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "commercekit_sql_round_trips_total",
		Help: "Statements sent to the database, by kind: begin, commit, rollback or statement.",
	}, []string{"kind"})
	m.reg.MustRegister(c)
	return &sqlRoundTrips{begin: c.WithLabelValues("begin"), commit: c.WithLabelValues("commit"),
		rollback: c.WithLabelValues("rollback"), statement: c.WithLabelValues("statement")}
}

// BeforeQuery implements bun.QueryHook.
func (h *sqlRoundTrips) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

// AfterQuery implements bun.QueryHook.
func (h *sqlRoundTrips) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	switch {
	case e.Query == "BEGIN":
		h.begin.Inc()
	case e.Query == "COMMIT":
		h.commit.Inc()
	case e.Query == "ROLLBACK":
		h.rollback.Inc()
	default:
		h.statement.Inc()
	}
}

// redisRoundTrips is a go-redis hook counting commands and pipelines.
type redisRoundTrips struct {
	command, pipeline prometheus.Counter
}

func newRedisRoundTrips(m *metrics) *redisRoundTrips {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "commercekit_redis_round_trips_total",
		Help: "Round trips to Redis, by kind: a single command or a pipeline (or MULTI block) of several.",
	}, []string{"kind"})
	m.reg.MustRegister(c)
	return &redisRoundTrips{command: c.WithLabelValues("command"), pipeline: c.WithLabelValues("pipeline")}
}

// DialHook implements redis.Hook.
func (h *redisRoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *redisRoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.command.Inc()
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *redisRoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipeline.Inc()
		return next(ctx, cmds)
	}
}

var (
	_ redis.Hook    = (*redisRoundTrips)(nil)
	_ bun.QueryHook = (*sqlRoundTrips)(nil)
)
