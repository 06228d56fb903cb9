package server

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment/pgsim"
)

func TestLoadPrecedence(t *testing.T) {
	env := map[string]string{"COMMERCEKIT_ADDR": ":9000", "COMMERCEKIT_ORDER_EXPIRY": "5m",
		"COMMERCEKIT_KAFKA_BROKERS": "a:1, b:2", "COMMERCEKIT_JWT_SECRET": jwtSecret, "COMMERCEKIT_WEBHOOK_SECRET": webhookSecret}
	c, err := Load([]string{"-addr", ":9100", "-seed-demo=false"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, ":9100", c.Addr, "a flag wins over the environment")
	assert.Equal(t, 5*time.Minute, c.OrderExpiry, "the environment wins over the default")
	assert.Equal(t, []string{"a:1", "b:2"}, c.KafkaBrokers)
	assert.False(t, c.SeedDemo)
	assert.Equal(t, Defaults().RateLimit, c.RateLimit)
	assert.Equal(t, DefaultRateLimitRedisTimeout, c.RateLimitRedisTimeout)
	assert.Equal(t, "mixed", c.Mode())
}

func TestLoadErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"bad duration":    {env: map[string]string{"COMMERCEKIT_ORDER_EXPIRY": "soon"}, want: "COMMERCEKIT_ORDER_EXPIRY"},
		"bad driver":      {args: []string{"-db-driver", "oracle"}, want: "COMMERCEKIT_DB_DRIVER"},
		"mysql needs dsn": {args: []string{"-db-driver", "mysql", "-jwt-secret", jwtSecret, "-webhook-secret", webhookSecret}, want: "COMMERCEKIT_DB_DSN"},
		"external needs jwt secret": {env: map[string]string{"COMMERCEKIT_REDIS_ADDR": "127.0.0.1:6379"},
			want: "COMMERCEKIT_JWT_SECRET is required"},
		"short jwt secret": {args: []string{"-jwt-secret", "short"}, want: "at least 32 bytes"},
		"lock below timeout": {args: []string{"-idempotency-lock", "10s", "-request-timeout", "30s"},
			want: "COMMERCEKIT_IDEMPOTENCY_LOCK"},
		"stray argument": {args: []string{"extra"}, want: "unexpected arguments"},
		// recovery picks up a payment left in flight 30 s after its last change, within 5 s:
		// holds that end sooner would make it refund a payment it could complete.
		"payment window within recovery's takeover": {args: []string{"-order-expiry", "1h", "-payment-window", "35s"},
			want: "COMMERCEKIT_PAYMENT_WINDOW (35s) must exceed the time recovery takes"},
		"redis timeout too long for the request": {args: []string{"-redis-timeout", "4s", "-request-timeout", "30s"},
			want: "COMMERCEKIT_REDIS_TIMEOUT (4s) is too long"},
		"no wait for the write limit's redis": {env: map[string]string{"COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT": "0s"},
			want: "COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT must be positive"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestWindowsAboveRecoveryTakeover: the shortest payment window refserver accepts is just
// above recovery's takeover delay.
func TestWindowsAboveRecoveryTakeover(t *testing.T) {
	c := Defaults()
	c.PaymentWindow = 35*time.Second + time.Millisecond
	require.NoError(t, c.Validate())
	c.PaymentWindow = 35 * time.Second
	require.ErrorContains(t, c.Validate(), "COMMERCEKIT_PAYMENT_WINDOW")
}

func TestModeAndMasking(t *testing.T) {
	c := Defaults()
	assert.Equal(t, "embedded", c.Mode())
	c.DBDriver, c.DBDSN = DriverMySQL, "app:hunter2@tcp(db:3306)/shop?parseTime=true"
	c.RedisAddr, c.KafkaBrokers, c.PGSimURL = "r:6379", []string{"k:9092"}, "http://127.0.0.1:8090"
	c.JWTSecret, c.WebhookSecret = jwtSecret, webhookSecret
	assert.Equal(t, "full", c.Mode())
	require.NoError(t, c.Validate())

	var b strings.Builder
	c.Print(&b)
	out := b.String()
	for _, secret := range []string{"hunter2", jwtSecret, webhookSecret} {
		assert.NotContains(t, out, secret)
	}
	assert.Contains(t, out, "app:****@tcp(db:3306)/shop", "the DSN keeps everything but its password")
	assert.Contains(t, out, "COMMERCEKIT_JWT_SECRET")
	for _, s := range Settings() {
		assert.True(t, strings.HasPrefix(s.Env, "COMMERCEKIT_"), s.Env)
		assert.Contains(t, out, s.Env, "every setting is printed")
	}
}

// TestDevSecretListensOnLoopbackOnly: with COMMERCEKIT_JWT_SECRET unset, bearer tokens are
// signed with the public development secret, so anyone who reaches the server can mint an
// admin token. Such a server listens on loopback only: by default, and a COMMERCEKIT_ADDR
// beyond loopback is refused until the deployment sets a secret of its own.
func TestDevSecretListensOnLoopbackOnly(t *testing.T) {
	none := func(string) string { return "" }
	c, err := Load(nil, none, io.Discard)
	require.NoError(t, err)
	host, _, err := net.SplitHostPort(c.Addr)
	require.NoError(t, err)
	assert.True(t, net.ParseIP(host).IsLoopback(), "the embedded default listens on %q", c.Addr)
	for _, addr := range []string{":8080", "0.0.0.0:8080", "[::]:8080", "192.0.2.1:8080", "example.com:8080"} {
		_, err := Load([]string{"-addr", addr}, none, io.Discard)
		require.Error(t, err, addr)
		assert.Contains(t, err.Error(), "COMMERCEKIT_ADDR", addr)
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:8080", "[::1]:8080"} {
		_, err := Load([]string{"-addr", addr}, none, io.Discard)
		assert.NoError(t, err, addr)
	}
	_, err = Load([]string{"-addr", ":8080", "-jwt-secret", jwtSecret}, none, io.Discard)
	assert.NoError(t, err, "a secret of the deployment's own may listen on every interface")
}

// TestPublishedSecretSetListensOnLoopbackOnly: a JWT secret the project publishes is no
// secret of the deployment's own when it is set rather than defaulted: with it too, anyone
// who reaches the server can mint an admin token, so the embedded default listens on
// loopback only.
func TestPublishedSecretSetListensOnLoopbackOnly(t *testing.T) {
	none := func(string) string { return "" }
	for _, secret := range []string{DevJWTSecret, "compose-jwt-secret-change-me", "bench-jwt-secret-0123456789abcdef0123456789"} {
		_, err := Load([]string{"-addr", "127.0.0.1:8080", "-jwt-secret", secret}, none, io.Discard)
		assert.NoError(t, err, "%s on loopback", secret)
		for _, addr := range []string{":8080", "0.0.0.0:8080", "192.0.2.1:8080"} {
			_, err := Load([]string{"-addr", addr, "-jwt-secret", secret}, none, io.Discard)
			if assert.Error(t, err, "%s on %s: anyone reaching it can mint an admin token", secret, addr) {
				assert.Contains(t, err.Error(), "COMMERCEKIT_ADDR", addr)
			}
		}
	}
}

// TestPublishedWebhookSecretListensOnLoopbackOnly: an embedded server given a webhook secret
// the project publishes (its own JWT secret set) would take webhooks anyone can sign from
// anyone who reaches it, so it listens on loopback only, as with a published JWT secret.
// (Each webhook is re-checked with the PG, but a published secret is no secret: only the
// embedded default on loopback may hold one.)
func TestPublishedWebhookSecretListensOnLoopbackOnly(t *testing.T) {
	none := func(string) string { return "" }
	for _, secret := range []string{pgsim.DefaultWebhookSecret, "compose-webhook-secret", "bench-webhook-secret-0123456789abcdef01234"} {
		_, err := Load([]string{"-addr", "127.0.0.1:8080", "-jwt-secret", jwtSecret, "-webhook-secret", secret}, none, io.Discard)
		assert.NoError(t, err, "%s on loopback", secret)
		for _, addr := range []string{":8080", "0.0.0.0:8080", "192.0.2.1:8080"} {
			_, err := Load([]string{"-addr", addr, "-jwt-secret", jwtSecret, "-webhook-secret", secret}, none, io.Discard)
			if assert.Error(t, err, "%s on %s: anyone reaching it can sign webhooks", secret, addr) {
				assert.Contains(t, err.Error(), "COMMERCEKIT_ADDR", addr)
			}
		}
	}
}
