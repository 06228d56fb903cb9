package rediscoupon

import "github.com/redis/go-redis/v9"

// A template's whole issuer state is one hash (so a loss, a load or a recount is all or
// nothing for the template), with these fields:
//
//	taken               coupons taken in all (units)
//	top                 the highest place handed out (0 for a template without a total);
//	                    its absence means "not loaded" (a state of an earlier version,
//	                    which had no places, is loaded again from SQL)
//	free                places 1..top not held, comma-separated (given back, or holes
//	                    left in SQL when the state was loaded); absent when none
//	n|<user>            how many ordinals the user holds
//	o|<ordinal>|<user>  the request that holds that ordinal of the user
//	p|<place>           the request that holds that place
//	r|<request>         "<ordinal>|<user>": what the request took (idempotency)
//	q|<request>         the place the request took (absent: none)
//	w|<request>         how many attempts at the request may be writing its coupon, when
//	                    more than one (a retry replayed the take while an attempt was
//	                    still writing); absent means one

// Take replies {code, ordinal, place}.
const (
	codeTaken     = 1
	codeReplay    = 2
	codeNotLoaded = -1
	codeSoldOut   = -2
	codeLimit     = -3
	codeOtherUser = -4
)

// placesLua are the helpers on the free places shared by the scripts.
const placesLua = `
local function pop_free(h)
  local free = redis.call('HGET', h, 'free')
  if not free then return nil end
  local i = string.find(free, ',[^,]*$')
  if not i then
    redis.call('HDEL', h, 'free')
    return tonumber(free)
  end
  redis.call('HSET', h, 'free', string.sub(free, 1, i - 1))
  return tonumber(string.sub(free, i + 1))
end
local function push_free(h, place)
  local free = redis.call('HGET', h, 'free')
  if free then free = free .. ',' .. place else free = tostring(place) end
  redis.call('HSET', h, 'free', free)
end
local function remove_free(h, place)
  local free = redis.call('HGET', h, 'free')
  if not free then return end
  free = string.gsub(',' .. free .. ',', ',' .. place .. ',', ',', 1)
  free = string.sub(free, 2, -2)
  if free == '' then redis.call('HDEL', h, 'free') else redis.call('HSET', h, 'free', free) end
end
`

// giveBackLua undoes a request's take if the request still holds it and no other attempt
// at the request may still be writing its coupon (else it only counts this attempt out):
// the unit returns to the count, the ordinal to the user and the place to the free ones,
// each only if still the request's (Adopt may have given them to the coupon that holds
// them durably). Returns 1 if it gave something back.
const giveBackLua = placesLua + `
local function give_back(h, req)
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
  local user = string.sub(prev, sep + 1)
  local mark = 'o|' .. string.sub(prev, 1, sep - 1) .. '|' .. user
  if redis.call('HGET', h, mark) == req then
    redis.call('HDEL', h, mark)
    redis.call('HINCRBY', h, 'n|' .. user, -1)
  end
  local place = redis.call('HGET', h, 'q|' .. req)
  if place then
    redis.call('HDEL', h, 'q|' .. req)
    if redis.call('HGET', h, 'p|' .. place) == req then
      redis.call('HDEL', h, 'p|' .. place)
      push_free(h, place)
    end
  end
  redis.call('HINCRBY', h, 'taken', -1)
  return 1
end
`

// takeScript checks, in order: a request already taken (replay: one more attempt may be
// writing its coupon), a missing state, the total quantity, the user's count; then takes
// the user's first free ordinal, starting after the ordinals already held, and, for a
// template with a total, a free place (one given back, else the next). KEYS[1] the
// template's hash; ARGV user, request, total quantity (0 = unlimited), per-user limit.
var takeScript = redis.NewScript(placesLua + `
local h, user, req = KEYS[1], ARGV[1], ARGV[2]
local prev = redis.call('HGET', h, 'r|' .. req)
if prev then
  local sep = string.find(prev, '|', 1, true)
  if string.sub(prev, sep + 1) ~= user then return {-4, 0, 0} end
  redis.call('HSET', h, 'w|' .. req, tonumber(redis.call('HGET', h, 'w|' .. req) or '1') + 1)
  return {2, tonumber(string.sub(prev, 1, sep - 1)), tonumber(redis.call('HGET', h, 'q|' .. req) or '0')}
end
local top = redis.call('HGET', h, 'top')
if not top then return {-1, 0, 0} end
local total = tonumber(ARGV[3])
if total > 0 and tonumber(redis.call('HGET', h, 'taken')) >= total then return {-2, 0, 0} end
local limit = tonumber(ARGV[4])
local n = tonumber(redis.call('HGET', h, 'n|' .. user) or '0')
if n >= limit then return {-3, 0, 0} end
local o
for k = 0, limit - 1 do
  local c = (n + k) % limit + 1
  if redis.call('HEXISTS', h, 'o|' .. c .. '|' .. user) == 0 then
    o = c
    break
  end
end
if not o then return {-3, 0, 0} end
local place = 0
if total > 0 then
  place = pop_free(h)
  if not place then
    if tonumber(top) >= total then return {-2, 0, 0} end
    place = tonumber(top) + 1
    redis.call('HSET', h, 'top', place)
  end
  redis.call('HSET', h, 'p|' .. place, req, 'q|' .. req, place)
end
redis.call('HSET', h, 'o|' .. o .. '|' .. user, req, 'n|' .. user, n + 1, 'r|' .. req, o .. '|' .. user)
redis.call('HINCRBY', h, 'taken', 1)
return {1, o, place}
`)

// giveBackScript runs give_back. KEYS[1] the template's hash; ARGV[1] the request.
// Replies 1 if it gave something back.
var giveBackScript = redis.NewScript(giveBackLua + `
return give_back(KEYS[1], ARGV[1])
`)

// adoptScript counts durable coupons the state missed, then gives a request's take back.
// Each coupon not known yet (by its request) is recorded as a take: its unit, its ordinal
// (taken over from whichever request held it in Redis, which keeps its own unit until it
// is given back) and its place (likewise; a place above top makes the places in between
// free). KEYS[1] the template's hash; ARGV request, total quantity, then for each coupon
// user, ordinal, place (0: none), request. Replies how many coupons it counted.
var adoptScript = redis.NewScript(giveBackLua + `
local h, total = KEYS[1], tonumber(ARGV[2])
local adopted = 0
for i = 3, #ARGV, 4 do
  local user, o, place, req = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if redis.call('HEXISTS', h, 'r|' .. req) == 0 then
    local mark = 'o|' .. o .. '|' .. user
    if redis.call('HEXISTS', h, mark) == 0 then redis.call('HINCRBY', h, 'n|' .. user, 1) end
    redis.call('HSET', h, mark, req, 'r|' .. req, o .. '|' .. user)
    if place > 0 and place <= total then
      if redis.call('HEXISTS', h, 'p|' .. place) == 0 then
        local top = tonumber(redis.call('HGET', h, 'top'))
        if place > top then
          for p = top + 1, place - 1 do push_free(h, p) end
          redis.call('HSET', h, 'top', place)
        else
          remove_free(h, place)
        end
      end
      redis.call('HSET', h, 'p|' .. place, req, 'q|' .. req, place)
    end
    redis.call('HINCRBY', h, 'taken', 1)
    adopted = adopted + 1
  end
end
give_back(h, ARGV[1])
return adopted
`)

// installScript makes a staged state live. KEYS[1] the template's hash, KEYS[2] the staged
// hash; ARGV count, "1" to keep an existing live state, top, free places ("" for none).
// Replies 1 if it installed the staged state.
var installScript = redis.NewScript(`
redis.call('HSET', KEYS[2], 'taken', ARGV[1], 'top', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'free', ARGV[4]) end
if ARGV[2] == '1' and redis.call('HEXISTS', KEYS[1], 'top') == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('PERSIST', KEYS[1])
return 1
`)
