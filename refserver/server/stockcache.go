package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/commercekit/commercekit/commerce"
)

// maxStockEntries bounds the stock cache; past it, the copies are dropped and the cache
// refills from the requests that follow.
const maxStockEntries = 100_000

// stockCache keeps the encoded answers of GET /v1/products/{id}/stock for Config.StockCacheTTL,
// for display only: reservations never read it, they ask the stock backend.
//
// Freshness: every request this process serves that is not a GET (a write) drops every copy
// when it finishes, unless it was refused before it ran (400, 401, 403, 413, 429: it changed
// nothing), so a client reads its own writes; changes made elsewhere (another
// process, an expiry sweep, a rebuild) show within the TTL. Concurrent misses of one
// product share one backend read (singleflight), so a burst of readers costs one round trip.
// Only 200 answers are kept: a 404 or a 503 is asked again every time.
type stockCache struct {
	ttl time.Duration
	// timeout bounds a backend read (the route has no request timeout: see Route.OwnDeadline).
	timeout time.Duration
	now     func() time.Time
	gen     atomic.Uint64 // bumped by every write; copies of an older generation are stale

	mu      sync.RWMutex
	entries map[string]stockEntry
	loads   singleflight.Group
}

type stockEntry struct {
	body []byte
	at   time.Time
	gen  uint64
}

func newStockCache(ttl, timeout time.Duration, now func() time.Time) *stockCache {
	return &stockCache{ttl: ttl, timeout: timeout, now: now, entries: make(map[string]stockEntry)}
}

// dropAll makes every copy stale; writes call it when they finish.
func (c *stockCache) dropAll() { c.gen.Add(1) }

// get returns the encoded stock of id: a fresh copy, or one read by load (shared with the
// concurrent misses of id).
func (c *stockCache) get(ctx context.Context, id string, load func(context.Context) ([]byte, error)) ([]byte, error) {
	if c.ttl <= 0 {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		return load(ctx)
	}
	gen := c.gen.Load()
	if body, ok := c.fresh(id, gen); ok {
		return body, nil
	}
	v, err, _ := c.loads.Do(id, func() (any, error) {
		// A miss that reached Do just after another read stored its copy finds it here.
		if body, ok := c.fresh(id, gen); ok {
			return body, nil
		}
		// The read is shared: it must not fail because the one request that started it went away.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		at := c.now()
		body, err := load(lctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if len(c.entries) >= maxStockEntries {
			clear(c.entries)
		}
		c.entries[id] = stockEntry{body: body, at: at, gen: gen}
		c.mu.Unlock()
		return body, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// fresh returns the copy of id if it is of generation gen and younger than the TTL.
func (c *stockCache) fresh(id string, gen uint64) ([]byte, bool) {
	c.mu.RLock()
	e, ok := c.entries[id]
	c.mu.RUnlock()
	return e.body, ok && e.gen == gen && c.now().Sub(e.at) < c.ttl
}

// getStock is the hottest read: the stock backend (Redis in full mode) behind stockCache,
// no catalogue read.
func (s *Server) getStock(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, err := s.stock.get(r.Context(), id, func(ctx context.Context) ([]byte, error) {
		stocks, err := s.svc.Stocks(ctx, []string{id})
		if err != nil {
			return nil, err
		}
		st, ok := stocks[id]
		if !ok {
			return nil, commerce.ErrProductNotFound
		}
		b, err := json.Marshal(stockJSON(id, st))
		return append(b, '\n'), err
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeRaw(w, http.StatusOK, "application/json", body)
}
