-- Keep the newest ARGV[1] dead letters: drop the oldest from the hash and the index.
-- KEYS: letters (hash), index (zset by failed_at).
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if extra <= 0 then return 0 end
local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
redis.call('HDEL', KEYS[1], unpack(old))
redis.call('ZREM', KEYS[2], unpack(old))
return extra
