-- Extend the holder's live leases by ARGV[1] ms from Redis's now, in every lease set (KEYS) it holds
-- them in. A lease already expired stays gone: its slot may be someone else's by now.
-- ARGV: lease ms, lease ids...  Reply: how many (set, lease) pairs were renewed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[1])
local renewed = 0
for _, key in ipairs(KEYS) do
  local here = 0
  for i = 2, #ARGV do
    local expiry = redis.call('ZSCORE', key, ARGV[i])
    if expiry and tonumber(expiry) > now then
      redis.call('ZADD', key, now + lease_ms, ARGV[i])
      here = here + 1
    end
  end
  if here > 0 then
    redis.call('PEXPIRE', key, lease_ms + 1000)
  end
  renewed = renewed + here
end
return renewed
