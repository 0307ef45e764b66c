-- Due retries back to the stream.  A job whose hash is gone (evicted,
-- deleted by hand) cannot run again: it is dead-lettered with the reason,
-- never dropped without a trace.
-- KEYS: delayed set, jobs stream, dead stream; ARGV: now, limit, dead max.
-- Returns the number of such lost jobs.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
  'LIMIT', 0, ARGV[2])
local lost = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local k = '@RAGNX_KEY_JOB@' .. id
  local j = redis.call('HMGET', k, 'payload', 'gen')
  if j[1] then
    redis.call('HSET', k, 'status', 'waiting', 'updatedAt', ARGV[1])
    redis.call('XADD', KEYS[2], '*', 'id', id, 'job', j[1], 'gen',
      j[2] or '')
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'id', id,
      'job', '', 'error', 'job lost while delayed', 'failedAt', ARGV[1])
    lost = lost + 1
  end
end
return lost
