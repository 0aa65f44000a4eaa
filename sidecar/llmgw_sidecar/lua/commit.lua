-- Commit one handed-off batch into the durable totals and acknowledge it, atomically (reliable queue, step 3+4).
-- Fenced: only the current holder of the flusher lock may commit; a flusher that lost its lock changes nothing.
-- Idempotent: a batch id already committed (a hand-off retried after a lost reply) is acknowledged, not counted.
-- With sinks (PostgreSQL) the batch also goes to the sink outbox in the same step: the totals budgets read never wait
-- for a sink, and the outbox keeps what a sink has not taken yet (bounded: the oldest batch goes when it is full).
-- KEYS: lock, processing, committed, days, outbox, then one hash per aggregate.
-- ARGV: token, element, batch_id, n_hashes, outbox_max (0 = no sinks), then per hash (display, n_fields, field,
--       delta, ...), then days...
-- Returns 0 fenced, 1 committed, 2 duplicate, 3 committed and the outbox dropped its oldest batch.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local now = tonumber(redis.call('TIME')[1])
redis.call('LREM', KEYS[2], 1, ARGV[2])
if redis.call('ZSCORE', KEYS[3], ARGV[3]) then return 2 end
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 7 * 86400)
local result = 1
local outbox_max = tonumber(ARGV[5])
if outbox_max > 0 then
  if redis.call('RPUSH', KEYS[5], ARGV[2]) > outbox_max then
    redis.call('LPOP', KEYS[5])
    result = 3
  end
end
local nk = tonumber(ARGV[4])
local a = 6
for i = 1, nk do
  local key = KEYS[5 + i]
  local display, nf = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, nf do
    redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  if display == '1' then
    -- Integers are the truth (exact sums); the decimal strings are for people and the operator.
    local c = tonumber(redis.call('HGET', key, 'cost_nusd') or '0')
    local s = tonumber(redis.call('HGET', key, 'saved_nusd') or '0')
    redis.call('HSET', key, 'cost_usd', string.format('%.9f', c / 1e9), 'saved_usd', string.format('%.9f', s / 1e9))
  end
  redis.call('EXPIRE', key, 400 * 86400)
end
for j = a, #ARGV do redis.call('SADD', KEYS[4], ARGV[j]) end
return result
