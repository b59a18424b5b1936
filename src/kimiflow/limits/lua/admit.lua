-- One admission, atomically, on Redis's clock: pause, concurrency leases, then the RPM/TPM/TPD windows.
-- KEYS: leases (zset id -> expiry ms), requests, tokens, day (hashes bucket -> amount), pause (string ms)
-- ARGV: lease id, tokens, concurrency, rpm, tpm, tpd (negative: unlimited), window ms, day ms,
--       bucket ms, day bucket ms, lease ms
-- Reply: {1, now ms, minute bucket, day bucket} or {0, wait ms (-1: until a lease ends), reason}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leases, requests, tokens_key, day_key, pause_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local tokens = tonumber(ARGV[2])
local concurrency, rpm, tpm, tpd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local window, day, width, day_width = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local lease_ms = tonumber(ARGV[11])

local paused = tonumber(redis.call('GET', pause_key) or '0')
if paused > now then
  return {0, paused - now, 'paused after a 429'}
end

-- A holder that stopped renewing (crashed, killed, partitioned) loses its slot here.
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
if concurrency >= 0 and redis.call('ZCARD', leases) >= concurrency then
  return {0, -1, 'concurrency'}
end

-- A bucket counts until its END plus the window, so a window can only over-count, never under-count.
local function live_buckets(key, bucket_width, span)
  local flat = redis.call('HGETALL', key)
  local total, live = 0, {}
  for i = 1, #flat, 2 do
    local ends = (tonumber(flat[i]) + 1) * bucket_width + span
    if ends <= now then
      redis.call('HDEL', key, flat[i])
    else
      local amount = tonumber(flat[i + 1])
      total = total + amount
      live[#live + 1] = {ends, amount}
    end
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return total, live
end

local function wait_for(key, bucket_width, span, amount, limit)
  if limit < 0 then
    return 0
  end
  local total, live = live_buckets(key, bucket_width, span)
  local excess = total + amount - limit
  if excess <= 0 or #live == 0 then
    return 0
  end
  if amount > limit then
    -- Larger than the (reduced) limit: it fits only into an empty window.
    return live[#live][1] - now
  end
  local freed = 0
  for _, bucket in ipairs(live) do
    freed = freed + bucket[2]
    if freed >= excess then
      return bucket[1] - now
    end
  end
  return live[#live][1] - now
end

local wait, reason = 0, ''
for _, check in ipairs({
  {requests, width, window, 1, rpm, 'rpm'},
  {tokens_key, width, window, tokens, tpm, 'tpm'},
  {day_key, day_width, day, tokens, tpd, 'tpd'},
}) do
  local w = wait_for(check[1], check[2], check[3], check[4], check[5])
  if w > wait then
    wait, reason = w, check[6]
  end
end
if wait > 0 then
  return {0, wait, reason}
end

local minute_bucket = math.floor(now / width)
local day_bucket = math.floor(now / day_width)
redis.call('ZADD', leases, now + lease_ms, id)
redis.call('PEXPIRE', leases, lease_ms + 1000)
redis.call('HINCRBY', requests, minute_bucket, 1)
redis.call('PEXPIRE', requests, window + width + 1000)
if tokens > 0 then
  redis.call('HINCRBY', tokens_key, minute_bucket, tokens)
  redis.call('PEXPIRE', tokens_key, window + width + 1000)
  redis.call('HINCRBY', day_key, day_bucket, tokens)
  redis.call('PEXPIRE', day_key, day + day_width + 1000)
end
return {1, now, minute_bucket, day_bucket}
