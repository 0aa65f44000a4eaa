-- Rate-limit + budget decisions, atomically, for a batch of requests (those that arrived in one process while the
-- previous batch was on its way): each request is decided in order, against every limit that applies to it.
-- Sliding-window log: each admitted request is a member of a sorted set scored by Redis TIME (one clock for every
-- replica), so "at most L in any window" holds exactly across replicas.
-- KEYS: per request, per limit 1 key (kind r = request log, p = in-flight leases) or 2 keys (kind t = token log +
--       amounts hash), then one totals hash per budget.
-- ARGV (packed in one newline-separated string: encoding each argument costs client CPU per request):
--       window_ms, lease_ms, count, then per request: member, n_limits, n_budgets, per limit (kind, limit, cost),
--       per budget (field, max_nusd).
-- Returns {now_ms, then per request: blocked_index (0 = admitted), retry_ms, per limit (used_after, reset_ms),
--          per budget (remaining_nusd as string)}.
local packed = ARGV[1]
local A = {}
for part in string.gmatch(packed, '[^\n]+') do A[#A + 1] = part end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, lease, count = tonumber(A[1]), tonumber(A[2]), tonumber(A[3])
local a, k = 4, 1
local out = {now}

local function oldest(z)
  local o = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if o[2] then return tonumber(o[2]) end
  return nil
end

local function expire_tokens(z, h)
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
end

local function token_retry(z, h, need)
  local walk = redis.call('ZRANGE', z, 0, 199, 'WITHSCORES')
  local freed = 0
  for j = 1, #walk, 2 do
    freed = freed + (tonumber(redis.call('HGET', h, walk[j])) or 0)
    if freed >= need then return tonumber(walk[j + 1]) + window - now end
  end
  return window
end

for _ = 1, count do
  local member, n, nb = A[a], tonumber(A[a + 1]), tonumber(A[a + 2])
  a = a + 3
  local kinds, limits, costs, zkeys, hkeys, used = {}, {}, {}, {}, {}, {}
  local blocked, retry = 0, 0
  for i = 1, n do
    local kind, limit, cost = A[a], tonumber(A[a + 1]), tonumber(A[a + 2])
    a = a + 3
    local z = KEYS[k]
    k = k + 1
    kinds[i], limits[i], costs[i], zkeys[i] = kind, limit, cost, z
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
      k = k + 1
      hkeys[i] = h
      expire_tokens(z, h)
      used[i] = tonumber(redis.call('HGET', h, '_sum') or '0')
      -- A request bigger than the whole limit still runs when the window is empty (it could never run otherwise).
      if blocked == 0 and used[i] > 0 and used[i] + cost > limit then
        blocked = i
        retry = token_retry(z, h, used[i] + cost - limit)
      end
    end
  end

  local bmax, bspent = {}, {}
  for j = 1, nb do
    local spent = tonumber(redis.call('HGET', KEYS[k], A[a]) or '0')
    bmax[j] = tonumber(A[a + 1])
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

  out[#out + 1] = blocked
  out[#out + 1] = retry
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
end
return out
