-- A job fails for good: its entry dead-lettered (with its generation, so
-- "ragnx-worker jobs retry" can put it back), its hash marked failed.
-- Its followers share the failure only when it would hit any asker
-- (shared: the LLM or the database down through every attempt).  A
-- failure of the leader's own (its chat, its request refused) is not
-- theirs: the first follower becomes a job of its own, queued with its
-- own payload and leading the question, and the others follow it.
-- KEYS: job hash, jobs stream, dead stream, inflight hash, followers,
-- events stream (the answer's end: "error" with the reason), watchers
-- (nginx workers long-polling the job, woken with its id, as are those
-- of followers that share the failure).
-- ARGV: entry, now, error, retention, job id, payload, dead max,
-- "1" when the job hash keys are valid (else only dead-letter), inflight
-- field ('' when the job could not be decoded), gen, "1" when shared.
--@include wake_fn.lua
local now = ARGV[2]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[5],
  'job', ARGV[6], 'gen', ARGV[10], 'error', ARGV[3], 'failedAt', now)
redis.call('XACK', KEYS[2], '@RAGNX_GROUP@', ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
if ARGV[8] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[3],
  'updatedAt', now)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', '@RAGNX_EVENTS_MAX@', '*', 't',
  'error', 'e', ARGV[3])
redis.call('EXPIRE', KEYS[6], ARGV[4])
wake(KEYS[7], ARGV[5])
wake('@RAGNX_KEY_LISTEN@' .. ARGV[5], ARGV[5])
redis.call('HDEL', KEYS[1], 'held')
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HGET', KEYS[4], ARGV[9]) == ARGV[5] then
  redis.call('HDEL', KEYS[4], ARGV[9])
end
local fs = redis.call('LRANGE', KEYS[5], 0, -1)
redis.call('DEL', KEYS[5])
local lead
for _, f in ipairs(fs) do
  local fk = '@RAGNX_KEY_JOB@' .. f
  if ARGV[11] == '1' then
    if redis.call('EXISTS', fk) == 1 then
      redis.call('HSET', fk, 'status', 'failed', 'error', ARGV[3],
        'updatedAt', now)
      redis.call('EXPIRE', fk, ARGV[4])
      wake('@RAGNX_KEY_WATCH@' .. f, f)
    end
  else
    local p = redis.call('HGET', fk, 'payload')
    if p and not lead then
      -- a job now, kept by its stream entry as a new job is
      lead = f
      redis.call('HSET', fk, 'status', 'waiting', 'updatedAt', now)
      redis.call('HDEL', fk, 'leader', 'payload')
      redis.call('PERSIST', fk)
      redis.call('XADD', KEYS[2], '*', 'id', f, 'job', p, 'gen', ARGV[10])
      if ARGV[9] ~= '' then
        redis.call('HSETNX', KEYS[4], ARGV[9], f)
      end
    elseif p then
      local lk = '@RAGNX_KEY_JOB@' .. lead .. '@RAGNX_KEY_FOLLOWERS@'
      redis.call('HSET', fk, 'leader', lead)
      redis.call('RPUSH', lk, f)
      redis.call('EXPIRE', lk, ARGV[4])
    end
  end
end
return #fs
