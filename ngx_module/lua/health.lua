-- GET /health on the queue server, one call: the records stream's length
-- (hits answered from the cache whose exchange is not written yet), how
-- many hits were refused because it was at ragnx_ask_record_max, the
-- pool's LLM circuit breaker ('' when closed, else why it is open), the
-- pool's processes that beat within ARGV[1] ms and the age of the newest
-- beat (-1: none), PostgreSQL as the pool last saw it ('' never, 'ok',
-- 'down') and that check's age (-1), the jobs stream's length, its
-- entries being run (delivered, not acknowledged), the jobs waiting for
-- a retry, and the age of the oldest job in the stream (finished ones
-- leave it; 0 when empty).  Ages in ms by Redis's clock, the one the
-- pool's heartbeats are scored by.  Any reply says Redis is up.
-- KEYS: records stream, stats hash, LLM breaker, live pool set, pool's
-- PostgreSQL hash, jobs stream, delayed set.  ARGV: the pool's timeout.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local live = redis.call('ZCOUNT', KEYS[4], now - tonumber(ARGV[1]), '+inf')
local beat = -1
local newest = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if #newest == 2 then
  beat = math.max(now - tonumber(newest[2]), 0)
end

local pg = redis.call('HMGET', KEYS[5], 'state', 'at')
local checked = -1
if pg[2] then
  checked = math.max(now - tonumber(pg[2]), 0)
end

-- no group before the pool's first start: nothing runs
local running = 0
local p = redis.pcall('XPENDING', KEYS[6], '@RAGNX_GROUP@')
if type(p) == 'table' and not p.err then
  running = p[1]
end

local oldest = 0
local first = redis.call('XRANGE', KEYS[6], '-', '+', 'COUNT', 1)
if #first > 0 then
  oldest = math.max(now - tonumber(string.match(first[1][1], '^(%d+)')), 0)
end

return {redis.call('XLEN', KEYS[1]),
  tonumber(redis.call('HGET', KEYS[2], 'records-refused') or '0'),
  redis.call('GET', KEYS[3]) or '',
  live, beat, pg[1] or '', checked,
  redis.call('XLEN', KEYS[6]), running, redis.call('ZCARD', KEYS[7]),
  oldest}
