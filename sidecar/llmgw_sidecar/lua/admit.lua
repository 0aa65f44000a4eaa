-- One rate-limit + budget decision, atomically, for every limit that applies to a request.
-- Sliding-window log: each admitted request is a member of a sorted set scored by Redis TIME (one clock for every
-- replica), so "at most L in any window" holds exactly across replicas.
-- KEYS: per limit 1 key (kind r = request log, p = in-flight leases) or 2 keys (kind t = token log + amounts hash),
--       then one totals hash per budget.
-- ARGV: window_ms, member, lease_ms, n_limits, n_budgets, then per limit (kind, limit, cost),
--       then per budget (field, max_nusd).
-- Returns {admitted, blocked_index (0 none), retry_ms, now_ms, then per limit (used_after, reset_ms),
--          then per budget (remaining_nusd as string)}.
-- ARGV arrives packed in one newline-separated string: encoding each argument costs client CPU per request.
local packed = ARGV[1]
local ARGV = {}
for part in string.gmatch(packed, '[^\n]+') do ARGV[#ARGV + 1] = part end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local member = ARGV[2]
local lease = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local nb = tonumber(ARGV[5])
local a, k = 6, 1
local kinds, limits, costs, zkeys, hkeys, used = {}, {}, {}, {}, {}, {}
local blocked, retry = 0, 0

local function oldest(z)
  local o = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if o[2] then return tonumber(o[2]) end
  return nil
end

for i = 1, n do
  local kind, limit, cost = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  kinds[i], limits[i], costs[i], zkeys[i] = kind, limit, cost, KEYS[k]
  local z = KEYS[k]
  k = k + 1
  if kind == 'r' then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
    used[i] = redis.call('ZCARD', z)
    if blocked == 0 and used[i] + 1 > limit then
      blocked = i
      retry = (oldest(z) or now) + window - now
    end
  elseif kind == 'p' then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)  -- scores are lease deadlines: expired leases of dead replicas
    used[i] = redis.call('ZCARD', z)
    if blocked == 0 and used[i] + 1 > limit then
      blocked = i
      retry = 1000  -- a slot frees when any call ends: we cannot know when, suggest a short retry
    end
  else
    local h = KEYS[k]
    hkeys[i] = h
    k = k + 1
    -- Expire old entries in bounded chunks, subtracting their tokens from the running sum.
    while true do
      local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - window, 'LIMIT', 0, 500)
      if #old == 0 then break end
      local amts = redis.call('HMGET', h, unpack(old))
      local sum = 0
      for j = 1, #amts do sum = sum + (tonumber(amts[j]) or 0) end
      redis.call('HINCRBY', h, '_sum', -sum)
      redis.call('HDEL', h, unpack(old))
      redis.call('ZREM', z, unpack(old))
    end
    used[i] = tonumber(redis.call('HGET', h, '_sum') or '0')
    -- A request bigger than the whole limit still runs when the window is empty (it could never run otherwise).
    if blocked == 0 and used[i] > 0 and used[i] + cost > limit then
      blocked = i
      local need = used[i] + cost - limit
      local walk = redis.call('ZRANGE', z, 0, 199, 'WITHSCORES')
      retry = window
      local freed = 0
      for j = 1, #walk, 2 do
        freed = freed + (tonumber(redis.call('HGET', h, walk[j])) or 0)
        if freed >= need then
          retry = tonumber(walk[j + 1]) + window - now
          break
        end
      end
    end
  end
end

local bfields, bmax, bspent = {}, {}, {}
for j = 1, nb do
  local spent = tonumber(redis.call('HGET', KEYS[k], ARGV[a]) or '0')
  bmax[j] = tonumber(ARGV[a + 1])
  bspent[j] = spent
  if blocked == 0 and spent >= bmax[j] then
    blocked = n + j
    retry = -1  -- the caller knows when the budget period ends
  end
  k = k + 1
  a = a + 2
end

if blocked == 0 then
  for i = 1, n do
    local z = zkeys[i]
    if kinds[i] == 'r' then
      redis.call('ZADD', z, now, member)
      redis.call('PEXPIRE', z, window * 2)
    elseif kinds[i] == 'p' then
      redis.call('ZADD', z, now + lease, member)
      redis.call('PEXPIRE', z, lease * 2)
    else
      redis.call('ZADD', z, now, member)
      redis.call('HSET', hkeys[i], member, costs[i])
      redis.call('HINCRBY', hkeys[i], '_sum', costs[i])
      redis.call('PEXPIRE', z, window * 2)
      redis.call('PEXPIRE', hkeys[i], window * 2)
    end
    used[i] = used[i] + costs[i]
  end
end

local out = {blocked == 0 and 1 or 0, blocked, retry, now}
for i = 1, n do
  local reset = 0
  if kinds[i] ~= 'p' then
    local o = oldest(zkeys[i])
    if o then reset = o + window - now end
  end
  out[#out + 1] = used[i]
  out[#out + 1] = reset
end
for j = 1, nb do out[#out + 1] = tostring(bmax[j] - bspent[j]) end
return out
