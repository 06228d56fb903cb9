package rediscoupon

import "github.com/redis/go-redis/v9"

// A template's whole issuer state is one hash (so a loss, a load or a recount is all or
// nothing for the template), with these fields:
//
//	taken               coupons taken in all; its absence means "not loaded"
//	n|<user>            how many ordinals the user holds
//	o|<ordinal>|<user>  the request that holds that ordinal of the user
//	r|<request>         "<ordinal>|<user>": what the request took (idempotency)
//	w|<request>         how many attempts at the request may be writing its coupon, when
//	                    more than one (a retry replayed the take while an attempt was
//	                    still writing); absent means one

// Take replies {code, ordinal}.
const (
	codeTaken     = 1
	codeReplay    = 2
	codeNotLoaded = -1
	codeSoldOut   = -2
	codeLimit     = -3
	codeOtherUser = -4
)

// takeScript checks, in order: a request already taken (replay: one more attempt may be
// writing its coupon), a missing state, the total quantity, the user's count; then takes
// the user's first free ordinal, starting after the ordinals already held. KEYS[1] the
// template's hash; ARGV user, request, total quantity (0 = unlimited), per-user limit.
var takeScript = redis.NewScript(`
local h, user, req = KEYS[1], ARGV[1], ARGV[2]
local prev = redis.call('HGET', h, 'r|' .. req)
if prev then
  local sep = string.find(prev, '|', 1, true)
  if string.sub(prev, sep + 1) ~= user then return {-4, 0} end
  redis.call('HSET', h, 'w|' .. req, tonumber(redis.call('HGET', h, 'w|' .. req) or '1') + 1)
  return {2, tonumber(string.sub(prev, 1, sep - 1))}
end
local taken = redis.call('HGET', h, 'taken')
if not taken then return {-1, 0} end
local total = tonumber(ARGV[3])
if total > 0 and tonumber(taken) >= total then return {-2, 0} end
local limit = tonumber(ARGV[4])
local n = tonumber(redis.call('HGET', h, 'n|' .. user) or '0')
if n >= limit then return {-3, 0} end
for k = 0, limit - 1 do
  local o = (n + k) % limit + 1
  if redis.call('HSETNX', h, 'o|' .. o .. '|' .. user, req) == 1 then
    redis.call('HSET', h, 'n|' .. user, n + 1, 'r|' .. req, o .. '|' .. user)
    redis.call('HINCRBY', h, 'taken', 1)
    return {1, o}
  end
end
return {-3, 0}
`)

// giveBackScript undoes a request's take if the request still holds it and no other
// attempt at the request may still be writing its coupon (else it only counts this
// attempt out). KEYS[1] the template's hash; ARGV[1] the request. Replies 1 if it gave
// something back.
var giveBackScript = redis.NewScript(`
local h, req = KEYS[1], ARGV[1]
local prev = redis.call('HGET', h, 'r|' .. req)
if not prev then return 0 end
local writers = tonumber(redis.call('HGET', h, 'w|' .. req) or '1')
if writers > 2 then
  redis.call('HSET', h, 'w|' .. req, writers - 1)
  return 0
elseif writers == 2 then
  redis.call('HDEL', h, 'w|' .. req)
  return 0
end
redis.call('HDEL', h, 'r|' .. req)
local sep = string.find(prev, '|', 1, true)
local mark = 'o|' .. string.sub(prev, 1, sep - 1) .. '|' .. string.sub(prev, sep + 1)
if redis.call('HGET', h, mark) ~= req then return 0 end
redis.call('HDEL', h, mark)
redis.call('HINCRBY', h, 'n|' .. string.sub(prev, sep + 1), -1)
redis.call('HINCRBY', h, 'taken', -1)
return 1
`)

// installScript makes a staged state live. KEYS[1] the template's hash, KEYS[2] the staged
// hash; ARGV[1] the count, ARGV[2] "1" to keep an existing live state. Replies 1 if it
// installed the staged state.
var installScript = redis.NewScript(`
redis.call('HSET', KEYS[2], 'taken', ARGV[1])
if ARGV[2] == '1' and redis.call('HEXISTS', KEYS[1], 'taken') == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('PERSIST', KEYS[1])
return 1
`)
