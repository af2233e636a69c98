-- One task-monitor event, written to the task's record if it is not stale.
-- KEYS: 1 task hash, 2 index
-- ARGV: 1 id, 2 ttl, 3 now, 4 life ('' = unordered), 5 attempt, 6 phase, 7 task name,
--       8 '1' = duration from started_at, 9 '1' = one more attempt, 10.. field/value pairs
local h = KEYS[1]
if ARGV[4] ~= '' then
  local cur = redis.call('HMGET', h, 'ep', 'at', 'ph')
  local nep = tonumber(ARGV[4])
  if cur[1] then
    local ep, at, ph = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
    local nat, nph = tonumber(ARGV[5]), tonumber(ARGV[6])
    if nep < ep or (nep == ep and (nat < at or (nat == at and nph < ph))) then
      return 0
    end
    if nep ~= ep and ARGV[6] ~= '2' then redis.call('DEL', h) end
  end
  redis.call('HSET', h, 'ep', ARGV[4], 'at', ARGV[5], 'ph', ARGV[6])
end
if #ARGV >= 11 then redis.call('HSET', h, unpack(ARGV, 10)) end
if ARGV[8] == '1' then
  local s = redis.call('HGET', h, 'started_at')
  if s and s ~= '' then
    redis.call('HSET', h, 'finished_at', ARGV[3], 'duration', tostring(ARGV[3] - s))
  end
end
if ARGV[9] == '1' then redis.call('HINCRBY', h, 'attempts', 1) end
redis.call('HSET', h, 'id', ARGV[1], 'updated_at', ARGV[3])
if not redis.call('HGET', h, 'name') then redis.call('HSET', h, 'name', ARGV[7]) end
redis.call('EXPIRE', h, ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
