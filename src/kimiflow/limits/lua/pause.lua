-- A 429 got through: every process sharing the account pauses until now + ARGV[1] ms (never shortened).
-- KEYS: pause.  Reply: the pause's end in Redis ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + ms > current then
  redis.call('SET', KEYS[1], now + ms, 'PX', ms)
  return now + ms
end
return current
