package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/go-sql-driver/mysql"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// startLocal starts a refserver in process on a loopback port and returns its URL and a
// function that shuts it down and removes what it created. Without c.mysqlDSN it is the
// embedded default (SQLite in a temporary file, the in-process PG simulator). With
// c.mysqlDSN and c.redisAddr it is the full mode: that MySQL and Redis, an in-process
// Kafka-protocol broker (kfake) and the PG simulator served over HTTP on loopback.
func startLocal(ctx context.Context, c config) (url string, stop func(), err error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup() // not stop: a failing return has set it to nil
		}
	}()
	cfg := server.Defaults()
	cfg.JWTSecret = c.secret
	cfg.SeedDemo = false
	cfg.PGSimLatency = c.pgLatency
	if c.mysqlDSN != "" {
		if c.redisAddr == "" {
			return "", nil, fmt.Errorf("-mysql-dsn needs -redis-addr (the full mode)")
		}
		if err := loopbackOnly(c.mysqlDSN, c.redisAddr); err != nil {
			return "", nil, err
		}
		cfg.DBDriver, cfg.DBDSN, cfg.RedisAddr, cfg.RedisDB = server.DriverMySQL, c.mysqlDSN, c.redisAddr, c.redisDB
		cfg.WebhookSecret = "flashsale-full-mode-webhook-secret-" + c.runID + "-0123456789"
		broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
		if err != nil {
			return "", nil, fmt.Errorf("starting the in-process Kafka broker: %w", err)
		}
		cleanups = append(cleanups, broker.Close)
		cfg.KafkaBrokers = broker.ListenAddrs()
		sim, err := pgsim.New(pgsim.WithLatency(c.pgLatency, c.pgLatency), pgsim.WithWebhookSecret([]byte(cfg.WebhookSecret)))
		if err != nil {
			return "", nil, err
		}
		simURL, stopSim, err := serve(pgsim.NewHandler(sim))
		if err != nil {
			sim.Close()
			return "", nil, err
		}
		cleanups = append(cleanups, func() { stopSim(); sim.Close() })
		cfg.PGSimURL = simURL
	} else {
		cfg.DBDSN = c.db
		if cfg.DBDSN == "" {
			dir, err := os.MkdirTemp("", "flashsale-")
			if err != nil {
				return "", nil, err
			}
			cleanups = append(cleanups, func() { os.RemoveAll(dir) })
			cfg.DBDSN = filepath.Join(dir, "refserver.db")
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("FLASHSALE_LOG") != "" {
		log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := server.New(ctx, cfg, server.WithLogger(log))
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	serveCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(serveCtx, ln) // closes srv when it returns
	}()
	cleanups = append(cleanups, func() { cancel(); <-done })
	return "http://" + ln.Addr().String(), cleanup, nil
}

// serve serves h (the PG simulator) on a loopback port until stop.
func serve(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	return "http://" + ln.Addr().String(), func() {
		_ = hs.Close()
		<-done
	}, nil
}

// loopbackOnly refuses a MySQL or Redis address that is not on this machine: the load
// driver sends traffic to loopback only.
func loopbackOnly(mysqlDSN, redisAddr string) error {
	mc, err := mysql.ParseDSN(mysqlDSN)
	if err != nil {
		return fmt.Errorf("-mysql-dsn: %w", err)
	}
	addrs := []string{redisAddr}
	if mc.Net == "tcp" {
		addrs = append(addrs, mc.Addr)
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return fmt.Errorf("%q is not a loopback address: the flash sale runs against this machine only", a)
		}
	}
	return nil
}
