-- Seed a budget's spent counter from the ledger unless another process already did (or it is live).
-- KEYS: spent.  ARGV: spent nano-CNY, ttl ms.  Reply: the counter's value
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return tonumber(ARGV[1])
end
return tonumber(redis.call('GET', KEYS[1]))
