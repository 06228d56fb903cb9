package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/refserver/server"
)

func TestTokenSubcommand(t *testing.T) {
	env := map[string]string{"COMMERCEKIT_JWT_SECRET": "a-test-secret-of-enough-bytes"}
	var out, errb bytes.Buffer
	code := run([]string{"token", "-sub", "user-7", "-admin", "-ttl", "1h"}, func(k string) string { return env[k] }, &out, &errb)
	require.Equal(t, 0, code, errb.String())

	var c server.Claims
	tok, err := jwt.ParseWithClaims(strings.TrimSpace(out.String()), &c,
		func(*jwt.Token) (any, error) { return []byte(env["COMMERCEKIT_JWT_SECRET"]), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	require.NoError(t, err)
	assert.True(t, tok.Valid)
	assert.Equal(t, "user-7", c.Subject)
	assert.Equal(t, server.RoleAdmin, c.Role)
	assert.WithinDuration(t, time.Now().Add(time.Hour), c.ExpiresAt.Time, time.Minute)

	// Without a secret it signs with the development one and says so.
	out.Reset()
	errb.Reset()
	require.Equal(t, 0, run([]string{"token", "-sub", "u"}, func(string) string { return "" }, &out, &errb))
	assert.Contains(t, errb.String(), "development secret")
	assert.Equal(t, 1, run([]string{"token"}, func(string) string { return "" }, &out, &errb), "-sub is required")
}

func TestUnknownCommandAndBadConfig(t *testing.T) {
	var out, errb bytes.Buffer
	none := func(string) string { return "" }
	assert.Equal(t, 1, run([]string{"frobnicate"}, none, &out, &errb))
	assert.Equal(t, 1, run([]string{"-db-driver", "oracle"}, none, &out, &errb))
	assert.Contains(t, errb.String(), "COMMERCEKIT_DB_DRIVER")
	assert.Equal(t, 1, run([]string{"pgsim", "-addr", "0.0.0.0:8090"}, none, &out, &errb), "the simulator listens on loopback only")
}

func TestAnalyticsSubcommandsRefuseBadInput(t *testing.T) {
	var out, errb bytes.Buffer
	none := func(string) string { return "" }
	assert.Equal(t, 1, run([]string{"dataplatform", "-addr", "0.0.0.0:8095"}, none, &out, &errb), "the mock platform listens on loopback only")
	assert.Contains(t, errb.String(), "loopback")
	assert.Equal(t, 1, run([]string{"dataplatform", "-error-rate", "2"}, none, &out, &errb))
	assert.Equal(t, 1, run([]string{"dataplatform", "-latency", "-1s"}, none, &out, &errb))
	errb.Reset()
	assert.Equal(t, 1, run([]string{"collector"}, none, &out, &errb), "the collector process needs Kafka")
	assert.Contains(t, errb.String(), "COMMERCEKIT_KAFKA_BROKERS")
	errb.Reset()
	assert.Equal(t, 1, run([]string{"-metrics-tz", "Mars/Olympus"}, none, &out, &errb))
	assert.Contains(t, errb.String(), "COMMERCEKIT_METRICS_TZ")
}

// TestHelpListsCommands: -h (and help) lists the subcommands above serve's flags, and
// exits 0.
func TestHelpListsCommands(t *testing.T) {
	none := func(string) string { return "" }
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"-addr", ":0", "-help"}} {
		var out, errb bytes.Buffer
		assert.Equal(t, 0, run(args, none, &out, &errb), args)
		for _, cmd := range []string{"token", "pgsim", "collector", "dataplatform", "healthcheck", "-addr", "COMMERCEKIT_ADDR"} {
			assert.Contains(t, errb.String(), cmd, args)
		}
		assert.Empty(t, out.String())
	}
}
