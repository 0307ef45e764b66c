-- Due retries back to the stream.
-- KEYS: delayed set, jobs stream; ARGV: now, limit.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
  'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local k = '@RAGNX_KEY_JOB@' .. id
  local j = redis.call('HMGET', k, 'payload', 'gen')
  if j[1] then
    redis.call('HSET', k, 'status', 'waiting', 'updatedAt', ARGV[1])
    redis.call('XADD', KEYS[2], '*', 'id', id, 'job', j[1], 'gen',
      j[2] or '')
  end
end
return #ids
