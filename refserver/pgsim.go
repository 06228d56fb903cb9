package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/commercekit/commercekit/payment/pgsim"
)

// pgsimSettings are the flags of `refserver pgsim`, each with the environment variable that
// sets its default (the compose test checks that the pgsim service sets them all).
var pgsimSettings = []localSetting{
	{"addr", "COMMERCEKIT_PGSIM_ADDR", "127.0.0.1:8090", "loopback listen address"},
	{"webhook-url", "COMMERCEKIT_PGSIM_WEBHOOK_URL", "", "loopback URL to POST signed webhooks to, e.g. http://127.0.0.1:8080/v1/payments/webhook (empty: none)"},
	{"webhook-secret", "COMMERCEKIT_WEBHOOK_SECRET", pgsim.DefaultWebhookSecret, "HMAC secret of webhooks"},
	{"latency", "COMMERCEKIT_PGSIM_LATENCY", "0s", "latency of every call"},
	{"decline-rate", "COMMERCEKIT_PGSIM_DECLINE_RATE", "0", "fraction of approvals declined"},
}

// pgsimServe serves the PG simulator over HTTP until SIGINT or SIGTERM. The simulator talks
// to local servers only: it listens on a loopback address and posts its signed webhooks to
// a loopback URL (in docker-compose it shares refserver's network namespace for that).
func pgsimServe(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	v, err := parseLocalFlags("refserver pgsim", pgsimSettings, args, getenv, stderr)
	if err != nil {
		return err
	}
	addr, hook, secret := v["addr"], v["webhook-url"], v["webhook-secret"]
	lat, err := time.ParseDuration(v["latency"])
	if err != nil || lat < 0 {
		return fmt.Errorf("pgsim: latency %q: not a non-negative duration", v["latency"])
	}
	rate, err := strconv.ParseFloat(v["decline-rate"], 64)
	if err != nil || rate < 0 || rate > 1 {
		return fmt.Errorf("pgsim: decline rate %q: not within 0..1", v["decline-rate"])
	}
	if !isLoopback(addr) {
		return fmt.Errorf("pgsim: %q is not a loopback address; the simulator serves local clients only", addr)
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil)).With("component", "pgsim")
	opts := []pgsim.Option{pgsim.WithLogger(log), pgsim.WithWebhookSecret([]byte(secret)),
		pgsim.WithLatency(lat, lat), pgsim.WithDeclineRate(rate)}
	if hook != "" {
		deliver, err := pgsim.PostWebhook(hook, &http.Client{Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		opts = append(opts, pgsim.WithWebhook(deliver, 5))
	}
	sim, err := pgsim.New(opts...)
	if err != nil {
		return err
	}
	defer sim.Close()

	log.Info("PG simulator listening", "addr", addr, "webhook_url", hook, "latency", lat, "decline_rate", rate)
	if err := serveLocal(addr, pgsim.NewHandler(sim)); err != nil {
		return err
	}
	log.Info("PG simulator stopped")
	return nil
}
