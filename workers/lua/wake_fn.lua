-- wake(watchers, id): the job's id published on the wake channel of each
-- nginx worker long-polling it (ngx_module/lua/watch.lua), then the set
-- dropped.  Included by the scripts that end a job.
local function wake(key, id)
  for _, ch in ipairs(redis.call('SMEMBERS', key)) do
    redis.call('PUBLISH', ch, id)
  end
  redis.call('DEL', key)
end
