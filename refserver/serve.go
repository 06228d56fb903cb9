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

// serve runs the server until SIGINT or SIGTERM, then shuts it down gracefully. Logs are
// JSON on stdout; the configuration (secrets masked) is printed to stderr first.
func serve(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, log, err := load(args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	cfg.Print(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg, server.WithLogger(log))
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// load reads the server's configuration (flags and COMMERCEKIT_ variables, usage on stderr)
// and makes its JSON logger on stdout at the configured level.
func load(args []string, getenv func(string) string, stdout, stderr io.Writer) (server.Config, *slog.Logger, error) {
	cfg, err := server.Load(args, getenv, stderr)
	if err != nil {
		return cfg, nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by Load
	return cfg, slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})), nil
}
