-- Extend the holder's live leases by ARGV[1] ms from Redis's now. A lease already expired stays gone:
-- its slot may be someone else's by now. KEYS: leases.  ARGV: lease ms, lease ids...  Reply: renewed count
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if expiry and tonumber(expiry) > now then
    redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[i])
    renewed = renewed + 1
  end
end
if renewed > 0 then
  redis.call('PEXPIRE', KEYS[1], lease_ms + 1000)
end
return renewed
