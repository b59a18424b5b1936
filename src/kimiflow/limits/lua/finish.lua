-- Settle a lease's token charge and/or end it, atomically.
-- KEYS: leases, tokens, day.  ARGV: lease id, minute bucket, day bucket, token delta, release (0/1)
-- A bucket already gone has left its window: correcting it would count tokens nobody holds.
local delta = tonumber(ARGV[4])
if delta ~= 0 then
  if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
  end
  if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
    redis.call('HINCRBY', KEYS[3], ARGV[3], delta)
  end
end
if ARGV[5] == '1' then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
