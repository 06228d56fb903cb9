package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
)

// dataplatformSettings are the flags of `refserver dataplatform`, each with the environment
// variable that sets its default (the compose test checks that the service sets them all).
var dataplatformSettings = []struct{ flag, env, def, usage string }{
	{"addr", "COMMERCEKIT_DATAPLATFORM_ADDR", "127.0.0.1:8095", "loopback listen address"},
	{"down", "COMMERCEKIT_DATAPLATFORM_DOWN", "false", "start down (connections dropped)"},
	{"latency", "COMMERCEKIT_DATAPLATFORM_LATENCY", "0s", "latency of every answer (after the order is recorded)"},
	{"error-rate", "COMMERCEKIT_DATAPLATFORM_ERROR_RATE", "0", "fraction of POSTs answered 500"},
}

// dataplatformServe serves the mock data platform (package platformsim) until SIGINT or
// SIGTERM, on a loopback address only; its faults can be changed at run time with PUT
// /admin/faults.
func dataplatformServe(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("refserver dataplatform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	v := make(map[string]*string, len(dataplatformSettings))
	for _, st := range dataplatformSettings {
		def := st.def
		if e := getenv(st.env); e != "" {
			def = e
		}
		v[st.flag] = fs.String(st.flag, def, st.usage+" ($"+st.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr := *v["addr"]
	down, err := strconv.ParseBool(*v["down"])
	if err != nil {
		return fmt.Errorf("dataplatform: down %q: not a boolean", *v["down"])
	}
	lat, err := time.ParseDuration(*v["latency"])
	if err != nil || lat < 0 {
		return fmt.Errorf("dataplatform: latency %q: not a non-negative duration", *v["latency"])
	}
	rate, err := strconv.ParseFloat(*v["error-rate"], 64)
	if err != nil || rate < 0 || rate > 1 {
		return fmt.Errorf("dataplatform: error rate %q: not within 0..1", *v["error-rate"])
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return fmt.Errorf("dataplatform: %q is not a loopback address; the mock platform serves local clients only", addr)
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil)).With("component", "dataplatform")
	platform := platformsim.New()
	platform.SetFaults(platformsim.Faults{Down: down, Latency: platformsim.Duration(lat), ErrorRate: rate})

	mux := http.NewServeMux()
	mux.Handle("/", platform)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	f, _ := json.Marshal(platform.Faults())
	log.Info("mock data platform listening", "addr", addr, "faults", string(f))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("mock data platform stopped", "received", len(platform.Received()))
	return nil
}
