-- A piece of a job's answer as the LLM writes it (ragnx_work.c), or the
-- mark that a new attempt starts again: appended to the job's events
-- stream, kept for job_retention, and every nginx worker streaming the
-- job ({ragnx}:listen:<id>, ngx_module/lua/events.lua) woken with its id.
-- KEYS: events stream, listeners.  ARGV: type ("delta" or "restart"),
-- attempt, text, max entries, seconds to keep, job id.
local e = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 't',
  ARGV[1], 'a', ARGV[2], 'd', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
for _, ch in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('PUBLISH', ch, ARGV[6])
end
return e
