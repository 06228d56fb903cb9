// Command refserver is commercekit's reference HTTP server: a thin JSON API over package
// commerce (products, stock, orders, payments, points, coupons) with members, sessions and
// carts, bearer-token auth, RFC 9457 problems, Idempotency-Key on order creation and
// payment, Prometheus metrics, health checks, an OpenAPI document and graceful shutdown.
// See package github.com/commercekit/commercekit/refserver/server for the API and its
// configuration.
//
// Usage:
//
//	refserver [flags]                     serve (the default; -h lists the commands and flags)
//	refserver token -sub user-1 [-admin] [-ttl 24h]
//	                                      print a bearer token for tools and tests (members log in instead)
//	refserver pgsim [flags]               serve the PG simulator over HTTP (loopback only)
//	refserver collector [flags]           run the metrics collector alone (Kafka consumer group)
//	refserver dataplatform [flags]        serve the mock data platform (loopback only)
//	refserver healthcheck [-url URL]      exit 0 when URL answers 200 (for container health checks)
//
// With no configuration at all it runs the embedded default: SQLite in ./refserver.db, the
// SQL inventory and coupon backends, in-process event consumers and PG simulator, and a few
// demo products:
//
//	go run ./refserver
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	_ "time/tzdata" // COMMERCEKIT_METRICS_TZ must load in a container without a zone database
)

// commands is what -h prints above the flags of serve (which collector shares).
const commands = `Commands:
  refserver [flags]                     serve (the default)
  refserver token -sub user-1 [-admin] [-ttl 24h]
                                        print a bearer token for tools and tests
  refserver pgsim [flags]               serve the PG simulator over HTTP (loopback only)
  refserver collector [flags]           run the metrics collector alone (Kafka consumer group)
  refserver dataplatform [flags]        serve the mock data platform (loopback only)
  refserver healthcheck [-url URL]      exit 0 when URL answers 200
'refserver COMMAND -h' lists a command's flags; those of serve and collector follow, each
also read from the COMMERCEKIT_ variable in parentheses.

`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve", "help":
		if cmd == "help" || slices.ContainsFunc(args, isHelp) {
			fmt.Fprint(stderr, commands)
			args = []string{"-h"}
		}
		err = serve(args, getenv, stdout, stderr)
	case "token":
		err = token(args, getenv, stdout, stderr)
	case "pgsim":
		err = pgsimServe(args, getenv, stdout, stderr)
	case "collector":
		err = collectorRun(args, getenv, stdout, stderr)
	case "dataplatform":
		err = dataplatformServe(args, getenv, stdout, stderr)
	case "healthcheck":
		err = healthcheck(args, stderr)
	default:
		err = fmt.Errorf("unknown command %q (serve, token, pgsim, collector, dataplatform, healthcheck; -h lists them)", cmd)
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "refserver:", err)
		return 1
	}
	return 0
}

// isHelp reports whether arg asks the flag package for help.
func isHelp(arg string) bool {
	return slices.Contains([]string{"-h", "-help", "--h", "--help"}, arg)
}
