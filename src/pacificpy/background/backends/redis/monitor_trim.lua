-- Drop task-monitor records past their TTL, then the oldest past the cap.
-- KEYS: 1 index; ARGV: 1 max records, 2 task hash prefix, 3 cutoff (older entries go)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000)
local function drop(ids)
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = ARGV[2] .. id end
  if #keys > 0 then redis.call('DEL', unpack(keys)) end
end
drop(gone)
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
local n = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if n <= 0 then return #gone end
if n > 1000 then n = 1000 end
local old = redis.call('ZRANGE', KEYS[1], 0, n - 1)
drop(old)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
return n + #gone
