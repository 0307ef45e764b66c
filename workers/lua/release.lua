-- An entry read while draining goes back to the stream for others.
-- KEYS: jobs stream, job hash; ARGV: entry, job id, payload, gen, started.
-- started is 1 for an entry read ahead and started by the completing
-- script: that start is undone (status waiting, the attempt uncounted),
-- since the job never ran; a job released at every drain would
-- otherwise fail with too many attempts having run none.
if redis.call('XACK', KEYS[1], '@RAGNX_GROUP@', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'job', ARGV[3], 'gen',
    ARGV[4])
  if ARGV[5] == '1' and redis.call('HGET', KEYS[2], 'status') == 'active'
  then
    redis.call('HSET', KEYS[2], 'status', 'waiting')
    redis.call('HINCRBY', KEYS[2], 'attempts', -1)
  end
end
return 1
