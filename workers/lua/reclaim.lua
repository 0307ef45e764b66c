-- KEYS: jobs stream; ARGV: consumer, min idle ms.  Entries idle that long
-- belong to a dead worker (live ones are renewed by heartbeats): put them
-- back at the end of the stream as new entries.
local r = redis.call('XAUTOCLAIM', KEYS[1], '@RAGNX_GROUP@', ARGV[1],
  ARGV[2], '0-0', 'COUNT', 100)
local n = 0
for _, e in ipairs(r[2]) do
  redis.call('XACK', KEYS[1], '@RAGNX_GROUP@', e[1])
  redis.call('XDEL', KEYS[1], e[1])
  if type(e[2]) == 'table' and #e[2] > 0 then
    redis.call('XADD', KEYS[1], '*', unpack(e[2]))
    n = n + 1
  end
end
return n
