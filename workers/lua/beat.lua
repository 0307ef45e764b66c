-- A pool process's heartbeat, every second from its maintenance thread:
-- its member of the live set scored by Redis's clock (so hosts whose
-- clocks differ agree), and PostgreSQL as its check thread last saw it,
-- kept only if no other process checked since.  Processes gone an hour
-- are forgotten, so restarts do not grow the set.
-- KEYS: live set, PostgreSQL hash.  ARGV: "<host>:<pid>", the state of
-- its last check ("" before the first, "ok", "down"), ms since then.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
if ARGV[2] ~= '' then
  local at = now - tonumber(ARGV[3])
  if at >= tonumber(redis.call('HGET', KEYS[2], 'at') or '0') then
    redis.call('HSET', KEYS[2], 'state', ARGV[2], 'at', at,
               'process', ARGV[1])
  end
end
return now
