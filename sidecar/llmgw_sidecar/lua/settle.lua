-- Settle a batch of reservations with their real usage (streams included) once the answers are complete.
-- Settlements are batched per process (a few ms) so that the per-request cost is one list append, not a round trip.
-- KEYS: for each reservation in order, the keys of its limits as in admit.lua.
-- ARGV (packed, newline-separated): window_ms, count, then per reservation: member, n, then per limit
--   (kind, action, estimate):
--   r: action 1 = refund (remove the request, e.g. a cache hit never reached the upstream), 0 = keep
--   p: always released
--   t: action = real tokens; the reserved estimate is replaced by it
local packed = ARGV[1]
local ARGV = {}
for part in string.gmatch(packed, '[^\n]+') do ARGV[#ARGV + 1] = part end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local a, k = 3, 1
for _ = 1, count do
  local member, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    local kind, action, est = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local z = KEYS[k]
    k = k + 1
    if kind == 'r' then
      if action == 1 then redis.call('ZREM', z, member) end
    elseif kind == 'p' then
      redis.call('ZREM', z, member)
    else
      local h = KEYS[k]
      k = k + 1
      local old = redis.call('HGET', h, member)
      if old then
        redis.call('HINCRBY', h, '_sum', action - tonumber(old))
        if action == 0 then
          redis.call('HDEL', h, member)
          redis.call('ZREM', z, member)
        else
          redis.call('HSET', h, member, action)
        end
      elseif action > est then
        -- The reservation already left the window (a long call): charge what exceeded it, now.
        local m2 = member .. ':x'
        redis.call('ZADD', z, now, m2)
        redis.call('HSET', h, m2, action - est)
        redis.call('HINCRBY', h, '_sum', action - est)
        redis.call('PEXPIRE', z, window * 2)
        redis.call('PEXPIRE', h, window * 2)
      end
    end
  end
end
return count
