-- A job ends: the cache, its hash, its entry and its followers.
-- KEYS: job hash, jobs stream, inflight hash, followers, cache key,
-- records stream, events stream (the answer's end goes there: "done"
-- with the result, after the pieces the LLM wrote), watchers (nginx
-- workers long-polling the job: woken with its id, as its followers'
-- are with theirs).
-- ARGV: entry, now, answer, sources, retention, job id, result JSON,
-- cache ttl (0: no cache SET), consumer ('' : read nothing), inflight
-- field, '1' when the answer was cut at the token limit.
-- Followers are answered at once, as a cache hit is; their exchanges go
-- to the records stream, their payloads as the module wrote them, with
-- the result beside.
-- Returns {followers, next, attempts}: with a consumer, the thread's next
-- entry is read here (XREADGROUP without BLOCK, as a script may) and,
-- when its id field is a UUID (as ragnx_uuid_valid() checks), started as
-- the start script would; a busy thread saves two round trips per job.
-- next is nil when the stream is empty (or the read failed: the thread
-- then reads as usual, and sees why).
--@include start_fn.lua
--@include wake_fn.lua
local now = ARGV[2]
-- A job already completed (by another run of it, say a worker taken for
-- dead) keeps its answer: neither its hash nor the cache is written
-- again, so both stay what the first completion wrote, the answer
-- PostgreSQL stored first (ragnx_store_exchange() completes with it).
local done = redis.call('HGET', KEYS[1], 'status') == 'completed'
if not done and tonumber(ARGV[8]) > 0 then
  redis.call('SET', KEYS[5], ARGV[7], 'EX', ARGV[8])
end

if not done then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'answer', ARGV[3],
    'sources', ARGV[4], 'updatedAt', now)
  redis.call('HDEL', KEYS[1], 'error', 'held')
  if ARGV[11] == '1' then redis.call('HSET', KEYS[1], 'truncated', '1') end
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', '@RAGNX_EVENTS_MAX@', '*', 't',
    'done', 'r', ARGV[7])
  redis.call('EXPIRE', KEYS[7], ARGV[5])
  wake(KEYS[8], ARGV[6])
  wake('@RAGNX_KEY_LISTEN@' .. ARGV[6], ARGV[6])
end
if ARGV[1] ~= '' then
  redis.call('XACK', KEYS[2], '@RAGNX_GROUP@', ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
if redis.call('HGET', KEYS[3], ARGV[10]) == ARGV[6] then
  redis.call('HDEL', KEYS[3], ARGV[10])
end
local fs = redis.call('LRANGE', KEYS[4], 0, -1)
redis.call('DEL', KEYS[4])
for _, f in ipairs(fs) do
  local fk = '@RAGNX_KEY_JOB@' .. f
  local p = redis.call('HGET', fk, 'payload')
  if p then
    redis.call('HSET', fk, 'status', 'completed', 'answer', ARGV[3],
      'sources', ARGV[4], 'updatedAt', now)
    redis.call('HDEL', fk, 'payload')
    if ARGV[11] == '1' then redis.call('HSET', fk, 'truncated', '1') end
    redis.call('EXPIRE', fk, ARGV[5])
    redis.call('XADD', KEYS[6], '*', 'id', f, 'job', p, 'result', ARGV[7])
    wake('@RAGNX_KEY_WATCH@' .. f, f)
  end
end
if ARGV[9] == '' then return {#fs} end
local n = redis.pcall('XREADGROUP', 'GROUP', '@RAGNX_GROUP@', ARGV[9],
  'COUNT', 1, 'STREAMS', KEYS[2], '>')
if type(n) ~= 'table' or n['err'] then return {#fs} end
local f, id = n[1][2][1][2], nil
for i = 1, #f - 1, 2 do
  if f[i] == 'id' then id = f[i + 1] break end
end
if id and string.match(id, '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-'
  .. '%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$') then
  return {#fs, n, start('@RAGNX_KEY_JOB@' .. id, now, ARGV[5])}
end
return {#fs, n}
