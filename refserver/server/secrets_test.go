package server

import (
	"io"
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
