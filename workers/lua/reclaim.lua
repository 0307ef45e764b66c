-- KEYS: jobs stream; ARGV: consumer, min idle ms.  Entries idle that long
-- belong to a dead worker (live ones are renewed by heartbeats): put them
-- back at the end of the stream as new entries, which keep the first
-- entry's id in the field "asked" (a record's time: ragnx_records.c).
local r = redis.call('XAUTOCLAIM', KEYS[1], '@RAGNX_GROUP@', ARGV[1],
  ARGV[2], '0-0', 'COUNT', 100)
local n = 0
for _, e in ipairs(r[2]) do
  redis.call('XACK', KEYS[1], '@RAGNX_GROUP@', e[1])
  redis.call('XDEL', KEYS[1], e[1])
  if type(e[2]) == 'table' and #e[2] > 0 then
    local f = e[2]
    if f[#f - 1] ~= 'asked' then
      f[#f + 1] = 'asked'
      f[#f + 1] = e[1]
    end
    redis.call('XADD', KEYS[1], '*', unpack(f))
    n = n + 1
  end
end
return n
