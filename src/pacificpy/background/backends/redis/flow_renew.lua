-- Extend concurrency leases (flow.py): a lease still held gets ARGV[1] ms from now.
-- KEYS: the slots zset of each lease. ARGV: lease ms, then the holder of each lease.
-- A lease that expired (or was released) stays gone. Returns how many were renewed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local renewed = 0
for i, key in ipairs(KEYS) do
  local expiry = redis.call('ZSCORE', key, ARGV[i + 1])
  if expiry and tonumber(expiry) > now then
    redis.call('ZADD', key, now + lease, ARGV[i + 1])
    if redis.call('PTTL', key) < lease then redis.call('PEXPIRE', key, lease) end
    renewed = renewed + 1
  end
end
return renewed
