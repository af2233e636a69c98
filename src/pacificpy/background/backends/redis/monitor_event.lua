-- A batch of task-monitor events, each written to its task's record if it is not stale,
-- then the batch's counters. One call per batch: the whole batch is one JSON argument.
-- KEYS: 1 index, 2 totals, 3 dur, 4 metrics, 5 queues
-- ARGV: 1 task hash prefix, 2 ttl, 3 JSON {"e": events, "t": totals, "d": dur counts,
--       "s": dur sums, "q": queues, "m": metrics}; every value is a string:
--   events  [[id, now, life ('' = unordered), attempt, phase, task name,
--             '1' = duration from started_at, '1' = one more attempt, field, value, ...]]
--   totals / d / s  [field, increment, ...] (HINCRBY / HINCRBY / HINCRBYFLOAT)
--   queues  [queue, ...];  metrics  [[field base, count, sum, last], ...]
-- Returns the number of events that failed (each is applied on its own).
local prefix, ttl = ARGV[1], ARGV[2]
local batch = cjson.decode(ARGV[3])

-- Index entries (score, id, ...) of the events written, added in one ZADD per chunk.
local index = {}

local function apply(e)
  local h = prefix .. e[1]
  local now = e[2]
  local set = {}
  -- nil: not known whether the record has a name yet (an unordered event: HSETNX after).
  local named = nil
  if e[3] ~= '' then
    local cur = redis.call('HMGET', h, 'ep', 'at', 'ph', 'name')
    local nep = tonumber(e[3])
    named = cur[4]
    if cur[1] then
      local ep, at, ph = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
      local nat, nph = tonumber(e[4]), tonumber(e[5])
      if nep < ep or (nep == ep and (nat < at or (nat == at and nph < ph))) then
        return
      end
      if nep ~= ep and e[5] ~= '2' then
        redis.call('DEL', h)
        named = false
      end
    end
    set = {'ep', e[3], 'at', e[4], 'ph', e[5]}
  end
  for i = 9, #e do set[#set + 1] = e[i] end
  set[#set + 1] = 'id'
  set[#set + 1] = e[1]
  set[#set + 1] = 'updated_at'
  set[#set + 1] = now
  if named == false and type(e[6]) == 'string' then
    set[#set + 1] = 'name'
    set[#set + 1] = e[6]
  end
  redis.call('HSET', h, unpack(set))
  if e[7] == '1' then
    local s = redis.call('HGET', h, 'started_at')
    if s and s ~= '' then
      redis.call('HSET', h, 'finished_at', now, 'duration', tostring(now - s))
    end
  end
  if e[8] == '1' then redis.call('HINCRBY', h, 'attempts', 1) end
  if named == nil then redis.call('HSETNX', h, 'name', e[6]) end
  redis.call('EXPIRE', h, ttl)
  index[#index + 1] = now
  index[#index + 1] = e[1]
end

local failed = 0
for _, e in ipairs(batch.e) do
  if not pcall(apply, e) then failed = failed + 1 end
end
for i = 1, #index, 1000 do
  redis.call('ZADD', KEYS[1], unpack(index, i, math.min(i + 999, #index)))
end
local function incr(cmd, key, pairs)
  for i = 1, #pairs, 2 do redis.call(cmd, key, pairs[i], pairs[i + 1]) end
end
incr('HINCRBY', KEYS[2], batch.t)
incr('HINCRBY', KEYS[3], batch.d)
incr('HINCRBYFLOAT', KEYS[3], batch.s)
if #batch.q > 0 then redis.call('SADD', KEYS[5], unpack(batch.q)) end
for _, m in ipairs(batch.m) do
  redis.call('HINCRBY', KEYS[4], m[1] .. 'c', m[2])
  redis.call('HINCRBYFLOAT', KEYS[4], m[1] .. 's', m[3])
  redis.call('HSET', KEYS[4], m[1] .. 'l', m[4])
end
return failed
