package redisidempotency

import "github.com/redis/go-redis/v9"

// A record is one hash: state ("running" | "done"), fp, tok, lock and exp (Unix
// milliseconds, from the Store's clock), and once done status, code and body. Its Redis TTL
// is set to exp - now on every write, so Redis drops it when its retention is over; the
// scripts nevertheless compare exp with the now they are given, which keeps the logic on
// the Store's (injectable) clock.

// Every script is safe to run twice (go-redis sends a command again after a read timeout,
// and a stalled server runs the first copy when it wakes up): a claim that finds its own
// token reports it as created, a completion that finds its own token done with the same
// response reports success, and a release leaves a tombstone for its token, so a claim
// with that token that arrives after it changes nothing.

// claimScript implements Backend.Claim (idempotency.ClaimRequest.Decide, in Lua).
// KEYS[1] record, KEYS[2] the tombstone of the token. ARGV: fingerprint, token, now,
// lockedUntil, expiresAt, ttl (ms).
// Returns {0} released before it arrived, {1} created, {2} taken over, or
// {3, state, fp, lock, exp, status, code, body}.
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {0}
end
local now = tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'lock', 'exp', 'status', 'code', 'body', 'tok')
if r[1] == 'running' and r[8] == ARGV[2] then
  return {1}
end
local outcome = 1
if r[1] and tonumber(r[4]) > now then
  if r[1] ~= 'running' or r[2] ~= ARGV[1] or tonumber(r[3]) > now then
    return {3, r[1], r[2], r[3] or '', r[4], r[5] or '', r[6] or '', r[7] or ''}
  end
  outcome = 2
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'tok', ARGV[2], 'lock', ARGV[4], 'exp', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {outcome}
`)

// completeScript implements Backend.Complete.
// KEYS[1] record. ARGV: token, status, code, body, expiresAt, ttl (ms). Returns 1, or 0
// when the token does not hold a running record nor one it completed with this response.
var completeScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'tok', 'state', 'status', 'code', 'body')
if r[1] ~= ARGV[1] then
  return 0
end
if r[2] == 'done' then
  if r[3] == ARGV[2] and r[4] == ARGV[3] and r[5] == ARGV[4] then
    return 1
  end
  return 0
end
if r[2] ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'code', ARGV[3], 'body', ARGV[4], 'exp', ARGV[5])
redis.call('HDEL', KEYS[1], 'lock')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
`)

// releaseScript implements Backend.Release.
// KEYS[1] record, KEYS[2] the tombstone of the token. ARGV: token, tombstone ttl (ms).
// Returns 1, or 0 when the token does not hold a running record.
var releaseScript = redis.NewScript(`
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'tok', 'state')
if r[1] ~= ARGV[1] or r[2] ~= 'running' then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
`)
