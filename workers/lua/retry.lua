-- A job waits for a retry in the delayed set.
-- KEYS: job hash, jobs stream, delayed set.
-- ARGV: entry, now, due, error, payload, job id.
redis.call('HSET', KEYS[1], 'status', 'delayed', 'error', ARGV[4],
  'updatedAt', ARGV[2], 'payload', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
redis.call('XACK', KEYS[2], '@RAGNX_GROUP@', ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
