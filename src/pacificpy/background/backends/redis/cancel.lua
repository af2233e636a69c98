-- Cancel a task: lay its tombstone and store its cancelled outcome, unless it finished.
-- KEYS: 1 the task's outcome key, 2 the tombstones zset (task id -> expiry)
-- ARGV: 1 task id, 2 tombstone expiry (epoch seconds), 3 now, 4 outcome bytes,
--       5 outcome TTL (seconds), 6 the channel workers listen on
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[1] .. ' ' .. ARGV[2])
return 1
