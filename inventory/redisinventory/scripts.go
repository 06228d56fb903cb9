package redisinventory

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts, one per operation. Every key a script touches arrives in KEYS, and all
// keys of a Backend carry its hash tag, so every script runs on one Redis Cluster slot.
//
// A SKU is a hash of onhand, available, sold, limit and synced (the sold count written
// back), with reserved = onhand - available: a Reserve changes one field, a Release one,
// a Commit two. Counts change with HINCRBY (exact integers); the scripts compare with
// tonumber, exact for every count the inventory allows (below 2^53).
//
// Measured with the server's own CPU time per call, each redis.call costs about 1.5 µs
// against about 11 µs for receiving and answering the EVALSHA itself, so the hot path keeps
// calls few and replies small (EXISTS rather than HMGET for the replay check).

// reserveManyLua reserves several reservations in one call (those that queued while the
// previous call ran; see Backend.Reserve), in order, each with its own reply, leaving
// exactly what running them one after another would: the server's fixed cost of a call is
// paid once, and so is the work that can be done once per batch. Each reservation checks
// every line first and changes nothing unless all fit, so a refused reservation (the
// common case once a flash sale sells out) costs only reads; each has its own record
// (replay check and HSET). The stock and buyer usage are read once per key and batch into
// Lua-local tables, checked and counted down there, and written once at the end (one
// HINCRBY per SKU and buyer), as are the due index's new entries (one ZADD). The writes
// are made also when a redis.call fails midway (a key of the wrong type), so the data
// stays as the reservations before it left it.
//
// KEYS[1] due index, then per reservation: its record, the stock of each line, the buyer
// usage of each line (only with a buyer). ARGV[1] the number of reservations, then per
// reservation: n its number of lines, id, lines, buyer, created, expires (ms), and the qty
// of each line.
// Each reply is 1 when reserved, {0, state, created, expires, resolved} for a replay, {-1}
// on a conflict, {-2, i} unknown SKU of line i, {-3, i, available} or {-4, i, limit, used}.
var reserveManyLua = reserveManyOf(reserveReplayLua, readUsageLua)

// readUsageLua sets u[1], the buyer's usage of a limited SKU, from its usage key ukey.
const readUsageLua = `u[1] = tonumber(redis.call('HGET', ukey, buyer) or '0')`

// readUsageGuardedLua is readUsageLua for the journaled backend, whose usage keys all hold
// the field usageSentinel from the SKU's creation or the rebuild on: a usage key without it
// is lost data (evicted, or missing from a partial restore), and the reservation answers
// {-9}, as the guard does, instead of counting its buyer's usage as none.
const readUsageGuardedLua = `local uv = redis.call('HMGET', ukey, buyer, ' ')
      if not uv[2] then return {-9} end
      u[1] = tonumber(uv[1] or '0')`

// usageSentinel is the field every usage key of the journaled backend holds (see
// readUsageGuardedLua). Buyer IDs are printable ASCII without spaces, so it is no buyer's.
const usageSentinel = " "

// reserveManyOf returns reserveManyLua with replay, the opening of each reservation, in
// place of reserveReplayLua. replay sees the locals key, id, lines, buyer, created,
// expires and absent (true when the record is known not to exist: the batch found none of
// its records and has not written this one), and index(expires, id), which adds an entry
// to the due index; it returns the reservation's reply, or falls through to reserve it.
//
// readUsage sets u[1] to the usage of buyer in the usage key ukey (readUsageLua, or
// readUsageGuardedLua), or returns the reservation's reply.
func reserveManyOf(replay, readUsage string) string {
	return `local due = KEYS[1]
local stock, stocks = {}, {}
local usage, usages = {}, {}
local entries = {}
-- none: no record of the batch existed before it; made: the records it wrote.
local none, made = true, {}
local function index(expires, id)
  entries[#entries + 1] = expires
  entries[#entries + 1] = id
end
-- level returns the stock of key as {available, limit, taken}, or false for an unknown SKU.
local function level(key)
  local s = stock[key]
  if s == nil then
    local v = redis.call('HMGET', key, 'available', 'limit')
    s = v[1] and {tonumber(v[1]), tonumber(v[2]) or 0, 0} or false
    stock[key] = s
    if s then stocks[#stocks + 1] = key end
  end
  return s
end
-- used returns buyer's usage of key as {used or false (not read yet), added}.
local function used(key, buyer)
  local byKey = usage[key]
  if not byKey then
    byKey = {}
    usage[key] = byKey
  end
  local u = byKey[buyer]
  if not u then
    u = {false, 0}
    byKey[buyer] = u
    usages[#usages + 1] = {key, buyer, u}
  end
  return u
end
local function reserve(k, a, n)
  local key, id, lines, buyer, created, expires = KEYS[k], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local absent = none and not made[key]
` + replay + `
  for i = 1, n do
    local s = level(KEYS[k + i])
    if not s then return {-2, i} end
    local q = tonumber(ARGV[a + 5 + i])
    local avail = s[1] - s[3]
    if avail < q then return {-3, i, avail} end
    if s[2] > 0 then
      if buyer == '' then return {-4, i, s[2], 0} end
      local ukey = KEYS[k + n + i]
      local u = used(ukey, buyer)
      if not u[1] then
      ` + readUsage + `
      end
      if u[1] + u[2] + q > s[2] then return {-4, i, s[2], u[1] + u[2]} end
    end
  end
  for i = 1, n do
    local q = tonumber(ARGV[a + 5 + i])
    local s = stock[KEYS[k + i]]
    s[3] = s[3] + q
    if buyer ~= '' then
      local u = used(KEYS[k + n + i], buyer)
      u[2] = u[2] + q
    end
  end
  redis.call('HSET', key, 'state', 'reserved', 'lines', lines, 'buyer', buyer, 'created', created, 'expires', expires)
  made[key] = true
  index(expires, id)
  return 1
end
-- Where each reservation's keys and arguments start, and whether any record exists.
local m, ks, as, records = tonumber(ARGV[1]), {}, {}, {}
local k, a = 2, 2
for j = 1, m do
  ks[j], as[j], records[j] = k, a, KEYS[k]
  local n = tonumber(ARGV[a])
  k = k + 1 + n
  if ARGV[a + 3] ~= '' then k = k + n end
  a = a + 6 + n
end
for i = 1, m, 512 do
  if redis.call('EXISTS', unpack(records, i, math.min(i + 511, m))) > 0 then
    none = false
    break
  end
end
local out = {}
local ok, err = pcall(function()
  for j = 1, m do out[j] = reserve(ks[j], as[j], tonumber(ARGV[as[j]])) end
end)
for _, key in ipairs(stocks) do
  local taken = stock[key][3]
  if taken > 0 then redis.call('HINCRBY', key, 'available', string.format('%d', -taken)) end
end
for _, u in ipairs(usages) do
  if u[3][2] > 0 then redis.call('HINCRBY', u[1], u[2], string.format('%d', u[3][2])) end
end
for i = 1, #entries, 512 do
  redis.call('ZADD', due, unpack(entries, i, math.min(i + 511, #entries)))
end
if not ok then error(err) end
return out
`
}

// reserveReplayLua opens each reservation of reserveManyLua: a reservation that exists is
// a replay.
const reserveReplayLua = `  if not absent and redis.call('EXISTS', key) == 1 then
    local rec = redis.call('HMGET', key, 'state', 'lines', 'buyer', 'created', 'expires', 'resolved')
    if rec[2] ~= lines or rec[3] ~= buyer then return {-1} end
    return {0, rec[1], rec[4], rec[5], rec[6] or '0'}
  end`

// reserveFreshLua replaces reserveReplayLua in the journaled backend, which calls the
// script only for a reservation SQL has just recorded for the first time: a live record of
// the same ID is the Redis half of an earlier attempt whose SQL transaction rolled back,
// adopted with the new deadline; a dead one is reserved anew over.
const reserveFreshLua = `  local rec = absent and {} or redis.call('HMGET', key, 'state', 'lines', 'buyer')
  if rec[1] == 'reserved' then
    if rec[2] ~= lines or rec[3] ~= buyer then return {-1} end
    redis.call('HSET', key, 'created', created, 'expires', expires)
    index(expires, id)
    return 1
  end
  if rec[1] then redis.call('DEL', key) end`

// resolveLua is the body of the commit, release and expire scripts; TARGET is replaced by
// the state the script resolves to. A reservation at or past its deadline always resolves
// to expired; the expire script leaves one that is not due alone.
//
// KEYS[1] reservation, KEYS[2] due index, KEYS[3..n+2] stock, KEYS[n+3..2n+2] buyer usage
// (only with a buyer). ARGV[1] id, ARGV[2] lines and ARGV[3] buyer as the caller read them,
// ARGV[4] now, ARGV[5] retention in ms (0: keep), ARGV[6..n+5] qty.
// Returns the final state this call moved it to (or 'reserved': not due), 'was <state>'
// when it was resolved before, 'missing', or 'stale' when the record no longer matches
// what the caller read (the caller reads again).
const resolveLua = `
local rec = redis.call('HMGET', KEYS[1], 'state', 'lines', 'buyer', 'expires')
if not rec[1] then return 'missing' end
if rec[2] ~= ARGV[2] or rec[3] ~= ARGV[3] then return 'stale' end
if rec[1] ~= 'reserved' then return 'was ' .. rec[1] end
local to = 'TARGET'
if tonumber(rec[4]) <= tonumber(ARGV[4]) then
  to = 'expired'
elseif to == 'expired' then
  return 'reserved'
end
local n = #ARGV - 5
local buyer = ARGV[3]
for i = 1, n do
  local q = ARGV[5 + i]
  if to == 'committed' then
    redis.call('HINCRBY', KEYS[2 + i], 'onhand', -q)
    redis.call('HINCRBY', KEYS[2 + i], 'sold', q)
  else
    redis.call('HINCRBY', KEYS[2 + i], 'available', q)
    if buyer ~= '' and redis.call('HINCRBY', KEYS[2 + n + i], buyer, -q) <= 0 then
      redis.call('HDEL', KEYS[2 + n + i], buyer)
    end
  end
end
redis.call('HSET', KEYS[1], 'state', to, 'resolved', ARGV[4])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return to
`

// settleManyLua moves reservations, each from the state its record holds to its target
// state, moving the units by the difference of what the two states hold: reserved holds
// available units, committed holds sold ones (off hand), and both count against the
// buyer's limit; released, expired and returned hold nothing. The plain backend uses it for
// Return (need = committed); the journaled backend to make Redis follow SQL's verdict from
// any state, for one reservation or for a batch of them (one call, each with its own reply,
// exactly as one call each).
//
// KEYS[1] due index, then per reservation: its record, the stock of each line, the buyer
// usage of each line (only with a buyer). ARGV[1] the number of reservations, ARGV[2]
// retention in ms (0: keep), then per reservation: n its number of lines, id, lines, buyer,
// now, the target state, the only state it may move from (empty: any), the state to assume
// when the record is gone (empty: none, 'missing'), created and expires (both to write), the
// deadline the record must still have (empty: any), and the qty of each line.
// Each reply is the target state when it moved the reservation, 'was <state>' when it did
// not, 'missing', 'stale' (the record is another reservation's, or was renewed), or 'lost'
// (a stock key is gone).
const settleManyLua = `
local due, retention = KEYS[1], tonumber(ARGV[2])
local function held(st)
  if st == 'reserved' then return 0, 1, 0, 1 end
  if st == 'committed' then return 1, 1, 1, 1 end
  return 0, 0, 0, 0
end
-- settle moves one reservation: its keys start at KEYS[k], its arguments (after n) at ARGV[a].
local function settle(k, a, n)
  local rec = redis.call('HMGET', KEYS[k], 'state', 'lines', 'buyer', 'expires')
  local from = rec[1]
  if from then
    if rec[2] ~= ARGV[a + 1] or rec[3] ~= ARGV[a + 2] then return 'stale' end
    if ARGV[a + 9] ~= '' and rec[4] ~= ARGV[a + 9] then return 'stale' end
  else
    from = ARGV[a + 6]
    if from == '' then return 'missing' end
  end
  local to = ARGV[a + 4]
  if from == to or (ARGV[a + 5] ~= '' and from ~= ARGV[a + 5]) then return 'was ' .. from end
  for i = 1, n do
    if redis.call('EXISTS', KEYS[k + i]) == 0 then return 'lost' end
  end
  local fo, fa, fs, fu = held(from)
  local o, av, s, u = held(to)
  local buyer = ARGV[a + 2]
  for i = 1, n do
    local q, stock, usage = tonumber(ARGV[a + 9 + i]), KEYS[k + i], KEYS[k + n + i]
    if o ~= fo then redis.call('HINCRBY', stock, 'onhand', (fo - o) * q) end
    if av ~= fa then redis.call('HINCRBY', stock, 'available', (fa - av) * q) end
    if s ~= fs then redis.call('HINCRBY', stock, 'sold', (s - fs) * q) end
    if buyer ~= '' and u ~= fu and redis.call('HINCRBY', usage, buyer, (u - fu) * q) <= 0 then
      redis.call('HDEL', usage, buyer)
    end
  end
  redis.call('HSET', KEYS[k], 'state', to, 'lines', ARGV[a + 1], 'buyer', buyer, 'created', ARGV[a + 7], 'expires', ARGV[a + 8], 'resolved', ARGV[a + 3])
  redis.call('ZREM', due, ARGV[a])
  if retention > 0 then redis.call('PEXPIRE', KEYS[k], retention) end
  return to
end
local out, k, a = {}, 2, 3
for j = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  out[j] = settle(k, a + 1, n)
  k = k + 1 + n
  if ARGV[a + 3] ~= '' then k = k + n end
  a = a + 11 + n
end
return out
`

// guardLua opens every script of the journaled backend: the last key is the generation
// marker and the last argument the generation the caller read from SQL; when they differ
// (Redis lost its data, or a rebuild is under way) the script changes nothing and answers
// {-9}.
const guardLua = `local gen = table.remove(ARGV)
local marker = table.remove(KEYS)
if redis.call('GET', marker) ~= gen then return {-9} end
`

// stockFields are the fields stockFrom reads, in its order.
var stockFields = []string{"onhand", "available", "sold", "limit"}

// setStockLua creates a SKU or sets its on-hand count and limit.
// KEYS[1] stock, KEYS[2] SKU set, and (journaled backend) KEYS[3] the SKU's usage key,
// which gets usageSentinel when the SKU is created. ARGV[1] sku, ARGV[2] on hand, ARGV[3] limit.
// Returns {1, onhand, available, sold, limit} or {-3, onhand, available}.
const setStockLua = setStockApplyLua + setStockAnswerLua

// setStockGuardedLua is setStockLua that, once it has set the stock, moves the
// generation marker to ARGV[4], the generation the caller's transaction commits with the
// setting (see Durable.SetStock), and records it in the stock hash (setGenField; see
// Durable.afterRebuild). It follows guardLua, which names the marker. ARGV[5] is
// '1' when the journal knows the SKU: Redis must then hold its stock key and its usage key
// with usageSentinel, or it lost data, which creating the SKU afresh would hide (its
// reserved units on sale again, its buyers' usage forgotten); the script then changes
// nothing and answers {-10}. ARGV[6] is the units the journal holds committed for the SKU:
// a sold count in Redis other than it means Redis and the journal disagree on which units
// left the shelf (a commit's Redis step ran in a transaction that did not commit, or a
// return's has not run yet), so an absolute on-hand count, which each counts against its
// own, would leave them apart; the script then changes nothing and answers {-11, sold}.
const setStockGuardedLua = setStockKnownLua + setStockSoldLua + setStockApplyLua +
	"redis.call('HSET', KEYS[1], '" + setGenField + "', ARGV[4])\nredis.call('SET', marker, ARGV[4])\n" + setStockAnswerLua

// setGenField is the stock hash's field where setStockGuardedLua records the generation
// the SetStock commits with; a stock hash a rebuild wrote has none.
const setGenField = "setgen"

const setStockKnownLua = `
if ARGV[5] == '1' and (redis.call('EXISTS', KEYS[1]) == 0 or not redis.call('HGET', KEYS[3], ' ')) then return {-10} end
`

const setStockSoldLua = `
local sold = redis.call('HGET', KEYS[1], 'sold')
if sold and tonumber(sold) ~= tonumber(ARGV[6]) then return {-11, sold} end
`

const setStockApplyLua = `
local s = redis.call('HMGET', KEYS[1], 'onhand', 'available')
if not s[1] then
  redis.call('HSET', KEYS[1], 'onhand', ARGV[2], 'available', ARGV[2], 'sold', 0, 'limit', ARGV[3], 'synced', 0)
  redis.call('SADD', KEYS[2], ARGV[1])
  if KEYS[3] then redis.call('HSET', KEYS[3], ' ', 1) end
else
  local reserved = tonumber(s[1]) - tonumber(s[2])
  if tonumber(ARGV[2]) < reserved then return {-3, s[1], s[2]} end
  redis.call('HSET', KEYS[1], 'onhand', ARGV[2], 'available', string.format('%d', tonumber(ARGV[2]) - reserved), 'limit', ARGV[3])
end
`

const setStockAnswerLua = `local v = redis.call('HMGET', KEYS[1], 'onhand', 'available', 'sold', 'limit')
return {1, v[1], v[2], v[3], v[4]}
`

// adjustLua applies a delta once per adjustment ID, kept for the retention period.
// KEYS[1] stock, KEYS[2] adjustment. ARGV[1] delta, ARGV[2] fingerprint, ARGV[3] retention
// ms, ARGV[4] the most on hand a positive delta may leave (0: no bound, the caller checked).
// Returns {1, onhand, available, sold, limit}, {-1} conflict, {-2} unknown SKU,
// {-3, available}, {-4, onhand} past the bound. Every count stays within 2^53, so the
// doubles of Lua are exact.
const adjustLua = `
local prev = redis.call('GET', KEYS[2])
if prev then
  if prev ~= ARGV[2] then return {-1} end
else
  local s = redis.call('HMGET', KEYS[1], 'available', 'onhand')
  if not s[1] then return {-2} end
  local d, bound = tonumber(ARGV[1]), tonumber(ARGV[4])
  if tonumber(s[1]) + d < 0 then return {-3, s[1]} end
  if d > 0 and bound > 0 and tonumber(s[2]) + d > bound then return {-4, s[2]} end
  redis.call('HINCRBY', KEYS[1], 'available', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'onhand', ARGV[1])
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[2], ARGV[2])
  end
end
local v = redis.call('HMGET', KEYS[1], 'onhand', 'available', 'sold', 'limit')
if not v[1] then return {-2} end
return {1, v[1], v[2], v[3], v[4]}
`

// warmUpLua creates the SKUs Redis does not have, leaving existing ones alone.
// KEYS[1] SKU set, KEYS[2..] stock. ARGV: sku, available, limit for each stock key.
// Returns how many it created.
const warmUpLua = `
local loaded = 0
for i = 2, #KEYS do
  local j = (i - 2) * 3
  if redis.call('HSETNX', KEYS[i], 'available', ARGV[j + 2]) == 1 then
    redis.call('HSET', KEYS[i], 'onhand', ARGV[j + 2], 'sold', 0, 'limit', ARGV[j + 3], 'synced', 0)
    redis.call('SADD', KEYS[1], ARGV[j + 1])
    loaded = loaded + 1
  end
end
return loaded
`

// claimLua fixes the range of a SKU's sold count to write back next: the range claimed
// before and not yet written back, else from the written-back watermark to the sold count
// now. A claimed range never changes, so a write-back that failed halfway (or two running
// at once) hands the same range to the idempotent SoldFunc again.
// KEYS[1] stock. Returns {from, to}, or {} when nothing is pending.
const claimLua = `
local v = redis.call('HMGET', KEYS[1], 'sold', 'synced', 'claim')
if not v[1] then return {} end
if v[3] then return {v[2], v[3]} end
if tonumber(v[1]) <= tonumber(v[2]) then return {} end
redis.call('HSET', KEYS[1], 'claim', v[1])
return {v[2], v[1]}
`

// syncedLua moves the written-back watermark to the claimed ARGV[1] and clears the claim,
// unless another writer did. KEYS[1] stock. Returns 1 when it moved it.
const syncedLua = `
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'synced', ARGV[1])
redis.call('HDEL', KEYS[1], 'claim')
return 1
`

// scripts holds one redis.Script per operation (EVALSHA, falling back to EVAL on NOSCRIPT,
// for instance after Redis restarted).
type scripts struct {
	reserveMany, commit, release, expire, settleMany *redis.Script
	setStock, adjust, warmUp, claim, synced          *redis.Script
}

func newScripts() scripts {
	resolve := func(target string) *redis.Script {
		return redis.NewScript(strings.Replace(resolveLua, "TARGET", target, 1))
	}
	return scripts{
		reserveMany: redis.NewScript(reserveManyLua),
		commit:      resolve("committed"),
		release:     resolve("released"),
		expire:      resolve("expired"),
		settleMany:  redis.NewScript(settleManyLua),
		setStock:    redis.NewScript(setStockLua),
		adjust:      redis.NewScript(adjustLua),
		warmUp:      redis.NewScript(warmUpLua),
		claim:       redis.NewScript(claimLua),
		synced:      redis.NewScript(syncedLua),
	}
}

// guardedScripts are the journaled backend's scripts: each opens with guardLua.
type guardedScripts struct {
	reserveMany, settleMany, setStock, adjust *redis.Script
}

func newGuardedScripts() guardedScripts {
	guarded := func(body string) *redis.Script { return redis.NewScript(guardLua + body) }
	return guardedScripts{
		reserveMany: guarded(reserveManyOf(reserveFreshLua, readUsageGuardedLua)),
		settleMany:  guarded(settleManyLua),
		setStock:    guarded(setStockGuardedLua),
		adjust:      guarded(adjustLua),
	}
}
