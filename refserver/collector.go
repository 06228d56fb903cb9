package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/commercekit/commercekit/refserver/server"
)

// collectorRun runs the metrics collector alone (server.RunCollector) with the server's
// configuration (flags and COMMERCEKIT_ variables), until SIGINT or SIGTERM.
func collectorRun(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := server.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by Load
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})).With("component", "collector")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return server.RunCollector(ctx, cfg, log)
}
