package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/commercekit/commercekit/refserver/server"
)

// collectorRun runs the metrics collector alone (server.RunCollector) with the server's
// configuration (flags and COMMERCEKIT_ variables), until SIGINT or SIGTERM.
func collectorRun(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, log, err := load(args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	log = log.With("component", "collector")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return server.RunCollector(ctx, cfg, log)
}
