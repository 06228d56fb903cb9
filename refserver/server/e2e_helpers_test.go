package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testSecret signs the tests' bearer tokens; testWebhookSecret the simulator's webhooks in
// full mode (the embedded default makes a random one of its own).
var (
	testSecret        = []byte("e2e-test-secret-0123456789abcdef0123456789")
	testWebhookSecret = []byte("e2e-webhook-secret-0123456789abcdef012345")
)

// backend builds a Config for one deployment the end-to-end tests run against.
type backend struct {
	name string
	// config returns the configuration and, when the PG is reached over HTTP, the
	// simulator behind it and a function to tell it the server's webhook URL.
	config func(t *testing.T) (server.Config, *pgsim.Simulator, func(url string))
}

// embedded is the default deployment: SQLite in a file, everything else in process.
var embedded = backend{name: "embedded-sqlite", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
	cfg := baseConfig()
	cfg.DBDSN = filepath.Join(t.TempDir(), "refserver.db")
	return cfg, nil, nil
}}

// full is MySQL + Redis + Kafka (testenv) + the PG simulator over HTTP, delivering its
// webhooks to the server's webhook route over HTTP.
var full = backend{name: "full-mysql-redis-kafka", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
	rdb := testenv.Redis(t)
	return fullConfig(t, testenv.MySQLDSN(t), rdb.Options().Addr, rdb.Options().DB)
}}

// fullConfig is the full deployment on the given MySQL database and Redis database, with
// simOpts for the simulator behind the PG's URL.
func fullConfig(t *testing.T, dsn, redisAddr string, redisDB int, simOpts ...pgsim.Option) (server.Config, *pgsim.Simulator, func(string)) {
	cfg := baseConfig()
	cfg.WebhookSecret = string(testWebhookSecret)
	cfg.DBDriver, cfg.DBDSN = server.DriverMySQL, dsn
	cfg.RedisAddr, cfg.RedisDB = redisAddr, redisDB
	k := testenv.NewKafka(t)
	cfg.KafkaBrokers = k.Brokers
	for _, typ := range commerce.EventTypes { // topics of this test's own
		topic, _ := commerce.DefaultTopics().Of(typ)
		cfg.KafkaTopics = append(cfg.KafkaTopics, typ+"="+k.Topic(t, topic))
	}

	var hookURL atomic.Value
	hookURL.Store("")
	sim := testkit.Must(pgsim.New(append([]pgsim.Option{pgsim.WithWebhookSecret(testWebhookSecret), pgsim.WithWebhook(func(ctx context.Context, body []byte, sig string) error {
		url := hookURL.Load().(string)
		if url == "" {
			return fmt.Errorf("no webhook URL yet")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set(pgsim.SignatureHeader, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("webhook answered %s", resp.Status)
		}
		return nil
	}, 3)}, simOpts...)...))(t)
	pg := httptest.NewServer(pgsim.NewHandler(sim))
	t.Cleanup(func() { pg.Close(); sim.Close() })
	cfg.PGSimURL = pg.URL
	return cfg, sim, func(url string) { hookURL.Store(url + "/v1/payments/webhook") }
}

func baseConfig() server.Config {
	cfg := server.Defaults()
	cfg.JWTSecret = string(testSecret)
	cfg.SeedDemo = false
	cfg.RateLimit = 0
	cfg.PGTimeout = time.Second
	return cfg
}

// app is a running server for one test: the real handler behind httptest, with its
// background loops.
type app struct {
	t   *testing.T
	srv *server.Server
	url string
	sim *pgsim.Simulator
	hc  *http.Client
}

// start builds and starts a server for b, with edit applied to its configuration and
// opts to the server.
func start(t *testing.T, b backend, edit func(*server.Config), opts ...server.Option) *app {
	t.Helper()
	cfg, sim, setHook := b.config(t)
	if edit != nil {
		edit(&cfg)
	}
	log := slog.New(slog.NewJSONHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(t.Context(), cfg, append([]server.Option{server.WithLogger(log)}, opts...)...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	wait := srv.Start(ctx)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		cancel()
		wait()
		srv.Close()
	})
	if setHook != nil {
		setHook(ts.URL)
	}
	if sim == nil {
		sim = srv.Simulator()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 200
	return &app{t: t, srv: srv, url: ts.URL, sim: sim, hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// token signs a token for user.
func token(t testing.TB, user string, admin bool) string {
	t.Helper()
	return testkit.Must(server.IssueToken(testSecret, user, admin, time.Hour, time.Now()))(t)
}

// resp is an HTTP answer.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

// call sends a request: body is JSON-encoded unless it is a string (sent as it is) or nil;
// tok is a bearer token ("" for none); key an Idempotency-Key ("" for none).
func (a *app) call(method, path, tok, key string, body any) resp {
	a.t.Helper()
	r, err := a.try(method, path, tok, key, body)
	require.NoError(a.t, err)
	return r
}

// try is call for goroutines: it returns the error instead of failing the test.
func (a *app) try(method, path, tok, key string, body any) (resp, error) {
	header := http.Header{}
	if key != "" {
		header.Set(server.IdempotencyKeyHeader, key)
	}
	return a.send(method, path, tok, header, body)
}

// send is try with the request's other headers as given (names not canonicalised).
func (a *app) send(method, path, tok string, header http.Header, body any) (resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return resp{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		return resp{}, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return resp{Status: res.StatusCode, Header: res.Header, Body: raw}, err
}

// as decodes a JSON body.
func as[T any](t testing.TB, r resp) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.Body, &v), "body: %s", r.Body)
	return v
}

// jsonUnmarshal decodes JSON (for goroutines, which must not call require).
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// expect checks a status and returns the response.
func expect(t testing.TB, r resp, status int) resp {
	t.Helper()
	require.Equal(t, status, r.Status, "body: %s", r.Body)
	return r
}

// expectProblem checks a problem answer's status and code.
func expectProblem(t testing.TB, r resp, status int, code string) server.Problem {
	t.Helper()
	require.Equal(t, status, r.Status, "body: %s", r.Body)
	require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"), "body: %s", r.Body)
	p := as[server.Problem](t, r)
	require.Equal(t, code, p.Code, "body: %s", r.Body)
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.RequestID)
	return p
}
