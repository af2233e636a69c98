-- Take one start of a task under its concurrency and rate limits, atomically (flow.py).
-- KEYS: slots (zset holder -> lease expiry ms), starts (zset holder -> start ms).
-- ARGV: holder, concurrency ("0": none), rate count ("0": none), rate window ms, lease ms.
-- Returns {0, 0} when admitted (the slot and the start are taken); else {1, 0} (no free
-- slot) or {2, ms until the oldest start leaves the window}. Times are the server's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= limit then return {1, 0} end
end
local rate = tonumber(ARGV[3])
if rate > 0 then
  local window = tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, tonumber(oldest[2]) + window - now}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], window)
end
if limit > 0 then
  local lease = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
end
return {0, 0}
