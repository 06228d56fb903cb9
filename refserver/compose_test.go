package main

import (
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/commercekit/commercekit/refserver/server"
)

// composeFile is the part of docker-compose.yml the test reads.
type composeFile struct {
	Services map[string]struct {
		Image       string                                `yaml:"image"`
		Build       *struct{ Context, Dockerfile string } `yaml:"build"`
		Command     []string                              `yaml:"command"`
		Environment map[string]string                     `yaml:"environment"`
		NetworkMode string                                `yaml:"network_mode"`
		Ports       []string                              `yaml:"ports"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

// interpolate applies compose's ${VAR:-default} with an empty environment.
var interpolation = regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`)

// required matches compose's ${VAR:?message}: VAR must be set or compose refuses to start.
var required = regexp.MustCompile(`^\$\{([A-Z_]+):\?[^}]+\}$`)

// operatorSecrets are what an operator following the README sets the required variables to.
var operatorSecrets = map[string]string{
	"COMMERCEKIT_JWT_SECRET":     "3f1c0d6a9b8e7f6a5d4c3b2a19081726354433221100ffeeddccbbaa99887766",
	"COMMERCEKIT_WEBHOOK_SECRET": "8e7f6a5d4c3b2a190817263544332211aabbccddeeff00112233445566778899",
}

func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var c composeFile
	require.NoError(t, yaml.Unmarshal(raw, &c))

	// The services and their images.
	for name, image := range map[string]string{"mysql": "mysql:8.4", "redis": "redis:7.4", "kafka": "apache/kafka:"} {
		require.Contains(t, c.Services, name)
		assert.True(t, strings.HasPrefix(c.Services[name].Image, image), "%s image %q", name, c.Services[name].Image)
	}
	for name, svc := range c.Services {
		require.NotNil(t, svc.Healthcheck, "service %s has no health check", name)
		assert.NotEmpty(t, svc.Healthcheck.Test, "service %s", name)
	}
	ref, sim := c.Services["refserver"], c.Services["pgsim"]
	require.NotNil(t, ref.Build, "refserver is built by the Dockerfile")
	assert.Equal(t, "Dockerfile", ref.Build.Dockerfile)
	_, err = os.Stat("../Dockerfile")
	require.NoError(t, err)
	assert.Equal(t, []string{"pgsim"}, sim.Command, "the pgsim service runs `refserver pgsim`")
	assert.Equal(t, ref.Image, sim.Image, "one image for both")
	for _, dep := range []string{"mysql", "redis", "kafka", "pgsim"} {
		assert.Equal(t, "service_healthy", ref.DependsOn[dep].Condition, "refserver waits for %s", dep)
	}
	// The simulator accepts loopback URLs only: refserver shares its network namespace.
	assert.Equal(t, "service:pgsim", ref.NetworkMode)
	assert.Contains(t, sim.Ports, "8080:8080")

	// Every variable refserver reads is set for it, and nothing it does not read.
	env := map[string]string{}
	for k, v := range ref.Environment {
		env[k] = interpolation.ReplaceAllString(v, "$1")
	}
	// No published secret: both secrets are required (${VAR:?...}), on both sides of the
	// webhook, with no default compose could fall back to.
	for name := range operatorSecrets {
		for svc, vars := range map[string]map[string]string{"refserver": ref.Environment, "pgsim": sim.Environment} {
			if svc == "pgsim" && name == "COMMERCEKIT_JWT_SECRET" {
				continue
			}
			m := required.FindStringSubmatch(vars[name])
			if assert.NotNil(t, m, "%s: %s must be required with ${%s:?...}, not %q", svc, name, name, vars[name]) {
				assert.Equal(t, name, m[1])
			}
		}
		env[name] = operatorSecrets[name]
	}
	var names []string
	for _, s := range server.Settings() {
		names = append(names, s.Env)
		assert.Contains(t, ref.Environment, s.Env, "refserver reads %s; docker-compose.yml does not set it", s.Env)
	}
	for k := range ref.Environment {
		assert.True(t, slices.Contains(names, k), "docker-compose.yml sets %s, which refserver does not read", k)
	}
	for _, s := range pgsimSettings {
		assert.Contains(t, sim.Environment, s.env, "refserver pgsim reads %s; the pgsim service does not set it", s.env)
	}
	assert.Equal(t, ref.Environment["COMMERCEKIT_WEBHOOK_SECRET"], sim.Environment["COMMERCEKIT_WEBHOOK_SECRET"],
		"both sides of the webhook share its secret")

	// The mock data platform and the collector process.
	dp, col := c.Services["dataplatform"], c.Services["collector"]
	assert.Equal(t, []string{"dataplatform"}, dp.Command)
	assert.Equal(t, "service:pgsim", dp.NetworkMode, "the mock platform serves loopback only: it shares refserver's namespace")
	for _, s := range dataplatformSettings {
		assert.Contains(t, dp.Environment, s.env, "refserver dataplatform reads %s; the dataplatform service does not set it", s.env)
	}
	assert.Equal(t, "http://"+dp.Environment["COMMERCEKIT_DATAPLATFORM_ADDR"]+"/v1/orders", ref.Environment["COMMERCEKIT_DATAPLATFORM_URL"])
	assert.Equal(t, []string{"collector"}, col.Command)
	assert.Equal(t, ref.Environment["COMMERCEKIT_DB_DSN"], col.Environment["COMMERCEKIT_DB_DSN"], "the collector writes where refserver reads")
	assert.Equal(t, "false", ref.Environment["COMMERCEKIT_COLLECTOR"], "refserver leaves the collecting to the collector service")

	// And they describe a valid full-mode configuration.
	cfg, err := server.Load(nil, func(k string) string { return env[k] }, os.Stderr)
	require.NoError(t, err)
	assert.Equal(t, "full", cfg.Mode())

	// The values compose used to default to are refused.
	for name, old := range map[string]string{"COMMERCEKIT_JWT_SECRET": "compose-jwt-secret-change-me", "COMMERCEKIT_WEBHOOK_SECRET": "compose-webhook-secret"} {
		bad := maps.Clone(env)
		bad[name] = old
		_, err := server.Load(nil, func(k string) string { return bad[k] }, io.Discard)
		assert.ErrorContains(t, err, name)
	}
}
