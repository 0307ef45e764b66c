-- ragnx-worker jobs retry: a dead-lettered entry back to its lane.  A
-- record (it has a result) goes back to the records stream, as it was;
-- an ask job to the jobs stream, its hash waiting again.
-- KEYS: job hash, jobs stream, dead stream, records stream.
-- ARGV: dead entry, job id, now, retention.
local e = redis.call('XRANGE', KEYS[3], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = {}
for i = 1, #e[1][2] - 1, 2 do f[e[1][2][i]] = e[1][2][i + 1] end
if f['result'] and f['result'] ~= '' then
  redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'job', f['job'],
    'result', f['result'])
else
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'attempts', 0,
    'updatedAt', ARGV[3])
  redis.call('HDEL', KEYS[1], 'error')
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'job', f['job'], 'gen',
    f['gen'] or '')
end
return redis.call('XDEL', KEYS[3], ARGV[1])
