-- A job waits for a retry in the delayed set, its payload and generation
-- kept in its hash for the promote script; the hash lives for the delay
-- and the retention after it, so a delayed job never vanishes.  An
-- answer the LLM gave but the database did not store (held) waits in
-- the hash for the next attempt, which stores it without asking again.
-- KEYS: job hash, jobs stream, delayed set.
-- ARGV: entry, now, due, error, payload, job id, gen, retention s, held
-- ('' : none), '1' when the attempt is given back (the job did not run:
-- LLM calls paused).
redis.call('HSET', KEYS[1], 'status', 'delayed', 'error', ARGV[4],
  'updatedAt', ARGV[2], 'payload', ARGV[5], 'gen', ARGV[7])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'held', ARGV[9]) end
if ARGV[10] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('EXPIRE', KEYS[1],
  math.ceil((tonumber(ARGV[3]) - tonumber(ARGV[2])) / 1000)
  + tonumber(ARGV[8]))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
redis.call('XACK', KEYS[2], '@RAGNX_GROUP@', ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
