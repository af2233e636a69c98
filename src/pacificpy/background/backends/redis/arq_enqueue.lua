-- Enqueue one ARQ job the way ArqRedis.enqueue_job writes it, in one round trip.
-- KEYS: job, queue, result, idempotency (or "").
-- ARGV: data, expires ms, score, job id, idempotency ttl s ("0": none), clear result ("1").
-- Returns 0 when the idempotency key is held or the job id is already queued or running.
if ARGV[5] ~= '0' then
  if not redis.call('SET', KEYS[4], ARGV[4], 'NX', 'EX', ARGV[5]) then return 0 end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if ARGV[6] == '1' then redis.call('DEL', KEYS[3]) end
return 1
