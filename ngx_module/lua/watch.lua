-- GET /api/ask/{jobId}?wait=N: the job's hash, as HGETALL returns it,
-- and while the job is pending this worker's wake channel added to the
-- job's watchers, in the same step: the completion or failure script,
-- which runs before or after this one, then either is seen here or
-- publishes the job's id on the channel (workers/lua/complete.lua).
-- KEYS: job hash, watchers set.  ARGV: channel ('' when this worker's
-- subscription is down: nothing to add), seconds to keep the set.
local h = redis.call('HGETALL', KEYS[1])
local st
for i = 1, #h, 2 do
  if h[i] == 'status' then st = h[i + 1] end
end
if st and st ~= 'completed' and st ~= 'failed' and ARGV[1] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return h
