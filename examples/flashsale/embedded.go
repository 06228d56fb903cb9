package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/commercekit/commercekit/refserver/server"
)

// startEmbedded starts refserver's embedded default in process on a loopback port and
// returns its URL and a function that shuts it down (and removes its temporary database).
func startEmbedded(ctx context.Context, c config) (url string, stop func(), err error) {
	cfg := server.Defaults()
	cfg.JWTSecret = c.secret
	cfg.SeedDemo = false
	cfg.PGSimLatency = c.pgLatency
	cleanup := func() {}
	cfg.DBDSN = c.db
	if cfg.DBDSN == "" {
		dir, err := os.MkdirTemp("", "flashsale-")
		if err != nil {
			return "", nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		cfg.DBDSN = filepath.Join(dir, "refserver.db")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("FLASHSALE_LOG") != "" {
		log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := server.New(ctx, cfg, server.WithLogger(log))
	if err != nil {
		cleanup()
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		cleanup()
		return "", nil, err
	}
	serveCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(serveCtx, ln)
	}()
	return "http://" + ln.Addr().String(), func() {
		cancel()
		<-done
		cleanup()
	}, nil
}
