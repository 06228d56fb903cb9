package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
)

// dataplatformSettings are the flags of `refserver dataplatform`, each with the environment
// variable that sets its default (the compose test checks that the service sets them all).
var dataplatformSettings = []localSetting{
	{"addr", "COMMERCEKIT_DATAPLATFORM_ADDR", "127.0.0.1:8095", "loopback listen address"},
	{"down", "COMMERCEKIT_DATAPLATFORM_DOWN", "false", "start down (connections dropped)"},
	{"latency", "COMMERCEKIT_DATAPLATFORM_LATENCY", "0s", "latency of every answer (after the order is recorded)"},
	{"error-rate", "COMMERCEKIT_DATAPLATFORM_ERROR_RATE", "0", "fraction of POSTs answered 500"},
}

// dataplatformServe serves the mock data platform (package platformsim) until SIGINT or
// SIGTERM, on a loopback address only; its faults can be changed at run time with PUT
// /admin/faults.
func dataplatformServe(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	v, err := parseLocalFlags("refserver dataplatform", dataplatformSettings, args, getenv, stderr)
	if err != nil {
		return err
	}
	addr := v["addr"]
	down, err := strconv.ParseBool(v["down"])
	if err != nil {
		return fmt.Errorf("dataplatform: down %q: not a boolean", v["down"])
	}
	lat, err := time.ParseDuration(v["latency"])
	if err != nil || lat < 0 {
		return fmt.Errorf("dataplatform: latency %q: not a non-negative duration", v["latency"])
	}
	rate, err := strconv.ParseFloat(v["error-rate"], 64)
	if err != nil || rate < 0 || rate > 1 {
		return fmt.Errorf("dataplatform: error rate %q: not within 0..1", v["error-rate"])
	}
	if !isLoopback(addr) {
		return fmt.Errorf("dataplatform: %q is not a loopback address; the mock platform serves local clients only", addr)
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil)).With("component", "dataplatform")
	platform := platformsim.New()
	platform.SetFaults(platformsim.Faults{Down: down, Latency: platformsim.Duration(lat), ErrorRate: rate})

	f, _ := json.Marshal(platform.Faults())
	log.Info("mock data platform listening", "addr", addr, "faults", string(f))
	if err := serveLocal(addr, platform); err != nil {
		return err
	}
	log.Info("mock data platform stopped", "received", len(platform.Received()))
	return nil
}
