-- A worker process is gone (its supervisor reaped it), and its threads
-- with it: the entries its consumers hold go back to the end of their
-- streams at once, as new entries (the first entry's id kept in "asked",
-- as reclaim.lua does), for the living; then the consumers
-- leave the group.  Its consumers are named "<host>-<pid>-<index>".
-- KEYS: jobs stream, records stream; ARGV: "<host>-<pid>-".
-- Returns {jobs requeued, records requeued}.
local out = {}
for k = 1, #KEYS do
  local n = 0
  local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[k], '@RAGNX_GROUP@')
  if type(cs) ~= 'table' or cs['err'] then cs = {} end
  for _, c in ipairs(cs) do
    local f = {}
    for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
    local name = f['name']
    if string.sub(name, 1, #ARGV[1]) == ARGV[1]
       and string.match(string.sub(name, #ARGV[1] + 1), '^%d+$') then
      while true do
        local p = redis.call('XPENDING', KEYS[k], '@RAGNX_GROUP@', '-', '+',
          100, name)
        if #p == 0 then break end
        for _, e in ipairs(p) do
          local r = redis.call('XRANGE', KEYS[k], e[1], e[1])
          redis.call('XACK', KEYS[k], '@RAGNX_GROUP@', e[1])
          redis.call('XDEL', KEYS[k], e[1])
          if #r > 0 and #r[1][2] > 0 then
            local f = r[1][2]
            if f[#f - 1] ~= 'asked' then
              f[#f + 1] = 'asked'
              f[#f + 1] = e[1]
            end
            redis.call('XADD', KEYS[k], '*', unpack(f))
            n = n + 1
          end
        end
      end
      redis.call('XGROUP', 'DELCONSUMER', KEYS[k], '@RAGNX_GROUP@', name)
    end
  end
  out[k] = n
end
return out
