package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// localSetting is a flag of a local-only subcommand (pgsim, dataplatform) with the
// environment variable that sets its default.
type localSetting struct{ flag, env, def, usage string }

// parseLocalFlags parses args as the flags of settings, each defaulting to its environment
// variable, and returns their values by flag name.
func parseLocalFlags(name string, settings []localSetting, args []string, getenv func(string) string, stderr io.Writer) (map[string]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	v := make(map[string]*string, len(settings))
	for _, st := range settings {
		def := st.def
		if e := getenv(st.env); e != "" {
			def = e
		}
		v[st.flag] = fs.String(st.flag, def, st.usage+" ($"+st.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(v))
	for name, p := range v {
		out[name] = *p
	}
	return out, nil
}

// isLoopback reports whether addr (host:port) names localhost or a loopback IP.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return err == nil && (host == "localhost" || (ip != nil && ip.IsLoopback()))
}

// serveLocal serves h, with GET /healthz, on addr until SIGINT or SIGTERM, then shuts down
// within 10 s.
func serveLocal(addr string, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
