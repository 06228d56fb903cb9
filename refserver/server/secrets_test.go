package server

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment/pgsim"
)

// Secrets of 32+ random bytes, as `openssl rand -hex 32` prints them (64 hex digits).
const (
	jwtSecret     = "5b2e8f0c1d7a4b3e9f6c2a8d0e1b7c4f3a9e6d2c8b0f1a7e4d3c9b6a2f8e0d1c"
	webhookSecret = "c1d0e8f2a6b9c3d4e7f1a0b8c2d6e9f3a4b7c0d1e5f8a2b6c9d3e0f4a7b1c8d2"
)

// TestSecretsRefusedAtStart: outside the embedded default, refserver refuses to start with a
// JWT or webhook secret that is unset, shorter than 32 bytes, or one the project publishes.
func TestSecretsRefusedAtStart(t *testing.T) {
	full := map[string]string{
		"COMMERCEKIT_DB_DRIVER": "mysql", "COMMERCEKIT_DB_DSN": "app:pw@tcp(db:3306)/shop",
		"COMMERCEKIT_REDIS_ADDR": "r:6379", "COMMERCEKIT_KAFKA_BROKERS": "k:9092", "COMMERCEKIT_PGSIM_URL": "http://127.0.0.1:8090",
		"COMMERCEKIT_JWT_SECRET": jwtSecret, "COMMERCEKIT_WEBHOOK_SECRET": webhookSecret,
	}
	load := func(env map[string]string, edit map[string]string) error {
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		for k, v := range edit {
			e[k] = v
		}
		_, err := Load(nil, func(k string) string { return e[k] }, io.Discard)
		return err
	}
	require.NoError(t, load(full, nil), "two secrets of our own: starts")
	onlyPG := map[string]string{"COMMERCEKIT_PGSIM_URL": "http://127.0.0.1:8090",
		"COMMERCEKIT_JWT_SECRET": jwtSecret, "COMMERCEKIT_WEBHOOK_SECRET": webhookSecret}
	require.NoError(t, load(onlyPG, nil))

	refused := map[string]string{
		"unset":                  "",
		"31 bytes":               strings.Repeat("k", 31),
		"the dev JWT secret":     DevJWTSecret,
		"the simulator's secret": pgsim.DefaultWebhookSecret,
		"the old compose JWT":    "compose-jwt-secret-change-me",
		"the old compose hook":   "compose-webhook-secret",
		"the old bench JWT":      "bench-jwt-secret-0123456789abcdef0123456789",
		"the old bench hook":     "bench-webhook-secret-0123456789abcdef01234",
	}
	for _, env := range []string{"COMMERCEKIT_JWT_SECRET", "COMMERCEKIT_WEBHOOK_SECRET"} {
		for name, secret := range refused {
			for mode, base := range map[string]map[string]string{"full": full, "mixed": onlyPG} {
				t.Run(env+"/"+name+"/"+mode, func(t *testing.T) {
					err := load(base, map[string]string{env: secret})
					require.Error(t, err)
					assert.Contains(t, err.Error(), env)
				})
			}
		}
	}
	for _, p := range PublishedSecrets {
		assert.Contains(t, refused, map[string]string{
			DevJWTSecret: "the dev JWT secret", pgsim.DefaultWebhookSecret: "the simulator's secret",
			"compose-jwt-secret-change-me": "the old compose JWT", "compose-webhook-secret": "the old compose hook",
			"bench-jwt-secret-0123456789abcdef0123456789": "the old bench JWT",
			"bench-webhook-secret-0123456789abcdef01234":  "the old bench hook",
		}[p], "every published secret is in the table: %s", p)
	}

	// The embedded default needs neither, and accepts its own published development secret.
	require.NoError(t, load(nil, nil))
	require.NoError(t, load(map[string]string{"COMMERCEKIT_JWT_SECRET": DevJWTSecret}, nil))
	assert.Error(t, load(map[string]string{"COMMERCEKIT_JWT_SECRET": "short"}, nil), "a secret that is set is never short")
}

// TestSecretVariantsRefusedAtStart: a published secret does not become private by a stray
// newline, surrounding spaces or another case (an attacker tries those first), blanks are
// no secret, and one secret is not both the JWT and the webhook secret (the PG, which knows
// the webhook secret, could then mint admin tokens).
func TestSecretVariantsRefusedAtStart(t *testing.T) {
	env := func(jwt, hook string) func(string) string {
		e := map[string]string{
			"COMMERCEKIT_DB_DRIVER": "mysql", "COMMERCEKIT_DB_DSN": "app:pw@tcp(db:3306)/shop",
			"COMMERCEKIT_REDIS_ADDR": "r:6379", "COMMERCEKIT_KAFKA_BROKERS": "k:9092", "COMMERCEKIT_PGSIM_URL": "http://127.0.0.1:8090",
			"COMMERCEKIT_JWT_SECRET": jwt, "COMMERCEKIT_WEBHOOK_SECRET": hook,
		}
		return func(k string) string { return e[k] }
	}
	for name, secret := range map[string]string{
		"dev JWT secret and a newline": DevJWTSecret + "\n",
		"dev JWT secret in spaces":     "  " + DevJWTSecret + "  ",
		"dev JWT secret in upper case": strings.ToUpper(DevJWTSecret),
		"simulator's secret, padded":   pgsim.DefaultWebhookSecret + strings.Repeat(" ", 20),
		"compose JWT, tab-padded":      "\t\t\t\tcompose-jwt-secret-change-me",
		"32 spaces":                    strings.Repeat(" ", 32),
		"own secret and a newline":     jwtSecret + "\n",
	} {
		t.Run("jwt/"+name, func(t *testing.T) {
			_, err := Load(nil, env(secret, webhookSecret), io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "COMMERCEKIT_JWT_SECRET")
		})
		t.Run("webhook/"+name, func(t *testing.T) {
			_, err := Load(nil, env(jwtSecret, secret), io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "COMMERCEKIT_WEBHOOK_SECRET")
		})
	}
	t.Run("one secret for both", func(t *testing.T) {
		_, err := Load(nil, env(jwtSecret, jwtSecret), io.Discard)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "COMMERCEKIT_WEBHOOK_SECRET")
		// The flag wins over the environment, and is checked the same way.
		_, err = Load([]string{"-webhook-secret", jwtSecret}, env(jwtSecret, webhookSecret), io.Discard)
		require.Error(t, err)
		_, err = Load([]string{"-jwt-secret", DevJWTSecret + " "}, env(jwtSecret, webhookSecret), io.Discard)
		require.Error(t, err)
		_, err = Load([]string{"-webhook-secret", jwtSecret[:32] + webhookSecret[32:]}, env(jwtSecret, webhookSecret), io.Discard)
		require.NoError(t, err)
	})
}

// TestMetricsTokenRefusedAtStart: the scrape token of /metrics (COMMERCEKIT_METRICS_TOKEN,
// optional) is a secret like the others, in every mode: at least 32 bytes, none the project
// publishes, without surrounding whitespace, and neither the JWT secret (the scraper could
// then mint admin tokens) nor the webhook secret (the PG could read the metrics).
func TestMetricsTokenRefusedAtStart(t *testing.T) {
	const own = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	full := map[string]string{
		"COMMERCEKIT_DB_DRIVER": "mysql", "COMMERCEKIT_DB_DSN": "app:pw@tcp(db:3306)/shop",
		"COMMERCEKIT_REDIS_ADDR": "r:6379", "COMMERCEKIT_KAFKA_BROKERS": "k:9092", "COMMERCEKIT_PGSIM_URL": "http://127.0.0.1:8090",
		"COMMERCEKIT_JWT_SECRET": jwtSecret, "COMMERCEKIT_WEBHOOK_SECRET": webhookSecret,
	}
	load := func(base map[string]string, token string) error {
		_, err := Load(nil, func(k string) string {
			if k == "COMMERCEKIT_METRICS_TOKEN" {
				return token
			}
			return base[k]
		}, io.Discard)
		return err
	}
	for mode, base := range map[string]map[string]string{"full": full, "embedded": nil} {
		require.NoError(t, load(base, ""), "%s: no scrape token", mode)
		require.NoError(t, load(base, own), "%s: a token of our own", mode)
		refused := map[string]string{
			"31 bytes": strings.Repeat("k", 31), "published": DevJWTSecret, "published, upper case": strings.ToUpper(pgsim.DefaultWebhookSecret),
			"a newline": own + "\n", "32 spaces": strings.Repeat(" ", 32),
		}
		if base != nil {
			refused["the JWT secret"], refused["the webhook secret"] = jwtSecret, webhookSecret
		}
		for name, token := range refused {
			t.Run(mode+"/"+name, func(t *testing.T) {
				err := load(base, token)
				require.Error(t, err)
				assert.Contains(t, err.Error(), "COMMERCEKIT_METRICS_TOKEN")
			})
		}
	}
}

// secretAssignment finds a literal JWT or webhook secret given to refserver in a file: an
// environment variable (COMMERCEKIT_JWT_SECRET=..., COMMERCEKIT_WEBHOOK_SECRET: ...) or a
// flag (-jwt-secret ..., --webhook-secret=...). A value that is a reference ($VAR, ${VAR})
// is no literal.
var secretAssignment = regexp.MustCompile(`(?:COMMERCEKIT_(?:JWT_SECRET|WEBHOOK_SECRET|METRICS_TOKEN)\s*[=:]|-(?:jwt-secret|webhook-secret|metrics-token)[= ])\s*["']?([^\s"'$\\]+)`)

// TestRepositorySecretsArePublished: every secret the repository's scripts, compose files,
// documentation and code hand to refserver is public — anyone who reads the repository
// can sign tokens or webhooks with it — so a deployment outside the embedded default must
// refuse it, as it refuses PublishedSecrets. Test files are not read: their secrets sign
// the tokens of servers that live on loopback for one test. make bench started a server
// in mixed mode (MySQL, Redis) with two secrets written in scripts/bench.sh, and it took
// them.
func TestRepositorySecretsArePublished(t *testing.T) {
	// The pattern finds the forms a secret is handed over in, and no reference.
	for line, want := range map[string]string{
		`COMMERCEKIT_JWT_SECRET=abc refserver serve`:          "abc",
		`  COMMERCEKIT_WEBHOOK_SECRET: "abc"`:                 "abc",
		`refserver serve -jwt-secret abc`:                     "abc",
		`refserver serve --webhook-secret='abc'`:              "abc",
		`COMMERCEKIT_METRICS_TOKEN=abc`:                       "abc",
		`refserver serve -metrics-token abc`:                  "abc",
		`COMMERCEKIT_JWT_SECRET=$(openssl rand -hex 32)`:      "",
		`COMMERCEKIT_JWT_SECRET: "${COMMERCEKIT_JWT_SECRET}"`: "",
		`-jwt-secret "$COMMERCEKIT_JWT_SECRET"`:               "",
	} {
		got := ""
		if m := secretAssignment.FindStringSubmatch(line); m != nil {
			got = m[1]
		}
		require.Equal(t, want, got, line)
	}

	root, err := filepath.Abs(".")
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		require.NotEqual(t, root, parent, "no go.mod above the test's directory")
		root = parent
	}
	found := map[string]string{} // secret -> where
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") && name != ".ci" || name == "third_party" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(name)
		if strings.HasSuffix(name, "_test.go") || !(ext == ".go" || ext == ".sh" || ext == ".yml" || ext == ".yaml" ||
			ext == ".md" || ext == ".env" || name == "Makefile" || name == "Dockerfile" || name == "run") {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range secretAssignment.FindAllSubmatch(raw, -1) {
			rel, _ := filepath.Rel(root, path)
			found[string(m[1])] = rel
		}
		return nil
	})
	require.NoError(t, err)
	full := map[string]string{
		"COMMERCEKIT_DB_DRIVER": "mysql", "COMMERCEKIT_DB_DSN": "app:pw@tcp(db:3306)/shop",
		"COMMERCEKIT_REDIS_ADDR": "r:6379", "COMMERCEKIT_KAFKA_BROKERS": "k:9092", "COMMERCEKIT_PGSIM_URL": "http://127.0.0.1:8090",
	}
	for secret, where := range found {
		for _, env := range []string{"COMMERCEKIT_JWT_SECRET", "COMMERCEKIT_WEBHOOK_SECRET", "COMMERCEKIT_METRICS_TOKEN"} {
			e := map[string]string{"COMMERCEKIT_JWT_SECRET": jwtSecret, "COMMERCEKIT_WEBHOOK_SECRET": webhookSecret, env: secret}
			for k, v := range full {
				e[k] = v
			}
			_, err := Load(nil, func(k string) string { return e[k] }, io.Discard)
			if assert.Error(t, err, "%s publishes %q, and a full deployment takes it as %s", where, secret, env) {
				assert.Contains(t, err.Error(), env)
			}
		}
	}
}
