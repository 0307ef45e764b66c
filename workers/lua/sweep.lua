-- KEYS: inflight hash; ARGV: cursor.  One HSCAN step over the in-flight
-- fields: a field whose leader is no longer pending (its hash gone, or
-- an end that could not name the field, such as an undecodable entry)
-- is removed.  A finished leader's own script removes its field; this
-- catches the rest.  Returns the next cursor.
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 100)
local f = r[2]
for i = 1, #f - 1, 2 do
  local st = redis.call('HGET', '@RAGNX_KEY_JOB@' .. f[i + 1], 'status')
  if st ~= 'waiting' and st ~= 'active' and st ~= 'delayed' then
    redis.call('HDEL', KEYS[1], f[i])
  end
end
return r[1]
