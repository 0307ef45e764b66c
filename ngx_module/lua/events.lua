-- GET /api/ask/{jobId}/events: the caller's job, and its events after a
-- given entry id (the job's own, or its single-flight leader's: a
-- follower streams the answer being written for it).  While the answer
-- has not ended, this worker's wake channel is added to the job's
-- listeners in the same step, so every piece written after this read
-- wakes it (workers/lua/delta.lua, complete.lua, fail.lua).
-- KEYS: job hash.  ARGV: caller, after (an entry id, "0" for all),
-- count, channel ('' when the subscription is down), seconds to keep.
-- Returns {} for an unknown job or another user's (the same), else
-- {job whose events these are, [[id, fields], ...]}.
local h = redis.call('HMGET', KEYS[1], 'owner', 'leader')
if not h[1] or h[1] ~= ARGV[1] then return {} end
local job = h[2] or string.sub(KEYS[1], #'@RAGNX_KEY_JOB@' + 1)
local e = redis.call('XRANGE', '@RAGNX_KEY_EVENTS@' .. job, '(' .. ARGV[2],
  '+', 'COUNT', ARGV[3])
local ended = false
for _, v in ipairs(e) do
  local t = v[2][2]
  if t == 'done' or t == 'error' then ended = true end
end
if not ended and ARGV[4] ~= '' then
  local l = '@RAGNX_KEY_LISTEN@' .. job
  redis.call('SADD', l, ARGV[4])
  redis.call('EXPIRE', l, ARGV[5])
end
return {job, e}
