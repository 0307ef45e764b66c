-- A job starts: its attempt number, or -1 when it already finished.
-- Included by start.lua and complete.lua.
local function start(k, now, ret)
  local st = redis.call('HGET', k, 'status')
  if st == 'completed' or st == 'failed' then return -1 end
  redis.call('HSET', k, 'status', 'active', 'updatedAt', now)
  if redis.call('TTL', k) < 0 then redis.call('EXPIRE', k, ret) end
  return redis.call('HINCRBY', k, 'attempts', 1)
end
