-- Advance a schedule's last enqueued slot, if the given slot is later (one caller wins).
-- KEYS[1]: the schedules hash. ARGV[1]: task name. ARGV[2]: the slot (Unix time).
-- Returns 1 when this call advanced it, 0 when that slot (or a later one) was recorded.
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
