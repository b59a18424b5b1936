-- One admission, atomically, on Redis's clock, against one or more books (an account's limits, and
-- above it a gateway key's), and optionally a budget: nothing is recorded unless every one has room.
-- KEYS: per book (5 each): leases (zset id -> expiry ms), requests, tokens, day (hashes bucket ->
--       amount), pause (string ms); with a budget, then: reservations (hash id -> nano-CNY), spent (string)
-- ARGV: [1] lease id, [2] tokens, [3] books, [4] bucket ms, [5] day bucket ms, [6] lease ms,
--       per book from 7 (6 each): concurrency, rpm, tpm, tpd (negative: unlimited), window ms, day ms;
--       then: budget nano-CNY (negative: no budget), this request's worst case nano-CNY
-- Reply: {1, now ms, minute bucket, day bucket, requests left, tokens left, budget left} (-1: unlimited)
--     or {0, wait ms (-1: until a lease ends), reason, book, spent, reserved}
--     or {2}: the budget's spent counter is missing (a new period, a Redis restart): seed it, ask again
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local tokens = tonumber(ARGV[2])
local books = tonumber(ARGV[3])
local width, day_width, lease_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local budget_at = 7 + 6 * books
local budget = tonumber(ARGV[budget_at] or '-1')

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

-- {wait ms, what is left after this request (-1: unlimited)}
local function wait_for(key, bucket_width, span, amount, limit)
  if limit < 0 then
    return 0, -1
  end
  local total, live = live_buckets(key, bucket_width, span)
  local excess = total + amount - limit
  if excess <= 0 or #live == 0 then
    return 0, math.max(0, limit - total - amount)
  end
  if amount > limit then
    -- Larger than the (reduced) limit: it fits only into an empty window.
    return live[#live][1] - now, 0
  end
  local freed = 0
  for _, bucket in ipairs(live) do
    freed = freed + bucket[2]
    if freed >= excess then
      return bucket[1] - now, 0
    end
  end
  return live[#live][1] - now, 0
end

local function least(a, b)
  if a < 0 then return b end
  if b < 0 then return a end
  return math.min(a, b)
end

local budget_left = -1
if budget >= 0 then
  local reservations, spent_key = KEYS[5 * books + 1], KEYS[5 * books + 2]
  local spent = redis.call('GET', spent_key)
  if not spent then
    return {2}
  end
  spent = tonumber(spent)
  -- A holder that stopped renewing (crashed) gives its reservation back with its lease.
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    redis.call('HDEL', reservations, gone)
  end
  local reserved = 0
  for _, amount in ipairs(redis.call('HVALS', reservations)) do
    reserved = reserved + tonumber(amount)
  end
  local worst = tonumber(ARGV[budget_at + 1])
  if spent + reserved + worst > budget then
    return {0, -1, 'budget', 1, spent, reserved}
  end
  budget_left = budget - spent - reserved - worst
end

local requests_left, tokens_left = -1, -1
for b = 1, books do
  local k, a = 5 * (b - 1), 7 + 6 * (b - 1)
  local leases, pause_key = KEYS[k + 1], KEYS[k + 5]
  local concurrency, rpm, tpm, tpd = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local window, day = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local paused = tonumber(redis.call('GET', pause_key) or '0')
  if paused > now then
    return {0, paused - now, 'paused after a 429', b, 0, 0}
  end
  -- A holder that stopped renewing (crashed, killed, partitioned) loses its slot here.
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if concurrency >= 0 and redis.call('ZCARD', leases) >= concurrency then
    return {0, -1, 'concurrency', b, 0, 0}
  end
  local wait, reason = 0, ''
  for _, check in ipairs({
    {KEYS[k + 2], width, window, 1, rpm, 'rpm'},
    {KEYS[k + 3], width, window, tokens, tpm, 'tpm'},
    {KEYS[k + 4], day_width, day, tokens, tpd, 'tpd'},
  }) do
    local w, left = wait_for(check[1], check[2], check[3], check[4], check[5])
    if w > wait then
      wait, reason = w, check[6]
    end
    if check[6] == 'rpm' then
      requests_left = least(requests_left, left)
    elseif check[6] == 'tpm' then
      tokens_left = least(tokens_left, left)
    end
  end
  if wait > 0 then
    return {0, wait, reason, b, 0, 0}
  end
end

local minute_bucket = math.floor(now / width)
local day_bucket = math.floor(now / day_width)
for b = 1, books do
  local k, a = 5 * (b - 1), 7 + 6 * (b - 1)
  local window, day = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  redis.call('ZADD', KEYS[k + 1], now + lease_ms, id)
  redis.call('PEXPIRE', KEYS[k + 1], lease_ms + 1000)
  redis.call('HINCRBY', KEYS[k + 2], minute_bucket, 1)
  redis.call('PEXPIRE', KEYS[k + 2], window + width + 1000)
  if tokens > 0 then
    redis.call('HINCRBY', KEYS[k + 3], minute_bucket, tokens)
    redis.call('PEXPIRE', KEYS[k + 3], window + width + 1000)
    if tonumber(ARGV[a + 3]) >= 0 then
      redis.call('HINCRBY', KEYS[k + 4], day_bucket, tokens)
      redis.call('PEXPIRE', KEYS[k + 4], day + day_width + 1000)
    end
  end
end
if budget >= 0 then
  local reservations = KEYS[5 * books + 1]
  redis.call('HSET', reservations, id, tonumber(ARGV[budget_at + 1]))
  -- Entries leave with their lease (finish, or the clean-up above); the hash itself outlives any lease.
  redis.call('PEXPIRE', reservations, 86400000)
end
return {1, now, minute_bucket, day_bucket, requests_left, tokens_left, budget_left}
