-- Settle a lease's token charge and/or end it, in every book it was admitted to, atomically.
-- KEYS: per book (3 each): leases, tokens, day; with a budget, then: reservations, spent
-- ARGV: [1] lease id, [2] minute bucket, [3] day bucket, [4] token delta, [5] release (0/1), [6] books,
--       [7] cost nano-CNY (negative: no budget), [8] spent ttl ms
-- A bucket already gone has left its window: correcting it would count tokens nobody holds.
-- Reply: the budget's spent after this request (-1: no budget or no counter), else 0
local delta = tonumber(ARGV[4])
local books = tonumber(ARGV[6])
for b = 1, books do
  local k = 3 * (b - 1)
  if delta ~= 0 then
    if redis.call('HEXISTS', KEYS[k + 2], ARGV[2]) == 1 then
      redis.call('HINCRBY', KEYS[k + 2], ARGV[2], delta)
    end
    if redis.call('HEXISTS', KEYS[k + 3], ARGV[3]) == 1 then
      redis.call('HINCRBY', KEYS[k + 3], ARGV[3], delta)
    end
  end
  if ARGV[5] == '1' then
    redis.call('ZREM', KEYS[k + 1], ARGV[1])
  end
end
local cost = tonumber(ARGV[7] or '-1')
if cost >= 0 then
  local reservations, spent_key = KEYS[3 * books + 1], KEYS[3 * books + 2]
  redis.call('HDEL', reservations, ARGV[1])
  -- A counter gone (expired, Redis restarted) is seeded again from the ledger, which has this cost.
  if redis.call('EXISTS', spent_key) == 1 then
    local spent = redis.call('INCRBY', spent_key, cost)
    redis.call('PEXPIRE', spent_key, tonumber(ARGV[8]))
    return spent
  end
  return -1
end
return 0
