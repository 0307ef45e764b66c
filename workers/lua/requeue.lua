-- ragnx-worker jobs retry: a dead-lettered job back to the stream.
-- KEYS: job hash, jobs stream, dead stream.
-- ARGV: dead entry, job id, now, payload, retention.
redis.call('HSET', KEYS[1], 'status', 'waiting', 'attempts', 0,
  'updatedAt', ARGV[3], 'payload', ARGV[4])
redis.call('HDEL', KEYS[1], 'error')
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'job', ARGV[4])
return redis.call('XDEL', KEYS[3], ARGV[1])
