-- KEYS: a stream (jobs or calls); ARGV: idle ms.  Consumers of workers
-- gone (nothing pending, idle that long) are removed from the group, so
-- restarts do not grow it without bound.
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1],
                              '@RAGNX_GROUP@')) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[1]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], '@RAGNX_GROUP@',
               f['name'])
    n = n + 1
  end
end
return n
