-- An entry read while draining goes back to the stream for others.
-- KEYS: jobs stream; ARGV: entry, job id, payload, gen.
if redis.call('XACK', KEYS[1], '@RAGNX_GROUP@', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'job', ARGV[3], 'gen',
    ARGV[4])
end
return 1
