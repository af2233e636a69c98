-- Compare-and-set of a schedule's last enqueued slot: one caller wins each step.
-- KEYS[1]: the schedules hash. ARGV[1]: task name. ARGV[2]: the new slot (Unix time).
-- ARGV[3]: the slot the caller read ('' for none recorded).
-- Returns 1 when this call advanced it; 0 when the recorded slot is not the one the caller
-- read (another process advanced it first), or is not earlier than the new one.
local last = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '' then
  if last then
    return 0
  end
elseif (not last) or tonumber(last) ~= tonumber(ARGV[3]) then
  return 0
end
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
