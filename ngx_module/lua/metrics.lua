-- GET /metrics on the queue server: the pool's part of the scrape, as
-- Prometheus text.  Every pool process publishes its figures to a hash
-- listed in KEYS[1] (workers/ragnx_metrics.c: fields "<family>|<series>"
-- and "# HELP/TYPE <family>"); a hash that expired (its process died) is
-- taken off the list.  The series are grouped by family across the
-- processes, each with a "process" label, then the queue's gauges.
-- KEYS: metrics set, jobs stream, delayed set, dead stream, records
-- stream.
local fams, names, help, kind = {}, {}, {}, {}
local live = 0
local prefix = #KEYS[1] + 2

for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', key)
  if #h == 0 then
    redis.call('SREM', KEYS[1], key)
  else
    live = live + 1
    local proc = 'process="' .. string.sub(key, prefix) .. '"'
    for i = 1, #h, 2 do
      local f, v = h[i], h[i + 1]
      local head = string.sub(f, 1, 7)
      if head == '# HELP ' then
        help[string.sub(f, 8)] = v
      elseif head == '# TYPE ' then
        kind[string.sub(f, 8)] = v
      else
        local fam, name, labels = string.match(f, '^([%w_]+)|([%w_]+)(.*)$')
        if fam then
          if labels == '' then
            labels = '{' .. proc .. '}'
          else
            labels = '{' .. proc .. ',' .. string.sub(labels, 2)
          end
          -- buckets in the order of their bounds
          local sort = name .. labels
          local le = string.match(labels, 'le="([^"]+)"')
          if le then
            sort = name .. string.gsub(labels, 'le="[^"]+"', '')
              .. string.format('%024.6f', tonumber(le) or 1e15)
          end
          if not fams[fam] then
            fams[fam] = {}
            names[#names + 1] = fam
          end
          local t = fams[fam]
          t[#t + 1] = {sort, name .. labels .. ' ' .. v}
        end
      end
    end
  end
end

local out = {}
local function gauge(name, text, v)
  out[#out + 1] = '# HELP ' .. name .. ' ' .. text
  out[#out + 1] = '# TYPE ' .. name .. ' gauge'
  out[#out + 1] = name .. ' ' .. v
end

gauge('ragnx_pool_processes',
  'Worker pool processes whose figures are in Redis.', live)

table.sort(names)
for _, fam in ipairs(names) do
  local t = fams[fam]
  table.sort(t, function(a, b) return a[1] < b[1] end)
  out[#out + 1] = '# HELP ' .. fam .. ' ' .. (help[fam] or fam)
  out[#out + 1] = '# TYPE ' .. fam .. ' ' .. (kind[fam] or 'untyped')
  for _, s in ipairs(t) do
    out[#out + 1] = s[2]
  end
end

-- the oldest job not finished: finished ones leave the stream
local now = redis.call('TIME')
local age = 0
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then
  local ms = tonumber(string.match(first[1][1], '^(%d+)'))
  age = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    - ms) / 1000
  if age < 0 then age = 0 end
end

gauge('ragnx_queue_jobs', 'Ask jobs in the stream, waiting or running.',
  redis.call('XLEN', KEYS[2]))
gauge('ragnx_queue_delayed_jobs', 'Jobs waiting for a retry.',
  redis.call('ZCARD', KEYS[3]))
gauge('ragnx_queue_dead_letters', 'Entries of the dead-letter stream.',
  redis.call('XLEN', KEYS[4]))
gauge('ragnx_queue_records', 'Exchanges answered from the cache not '
  .. 'written to PostgreSQL yet.', redis.call('XLEN', KEYS[5]))
gauge('ragnx_queue_oldest_job_age_seconds',
  'Age of the oldest job in the stream (0 when it is empty).',
  string.format('%.3f', age))

return table.concat(out, '\n') .. '\n'
