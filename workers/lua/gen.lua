-- The cache generation "<model>@<corpus version>" that nginx looks
-- answers up under.  One model's pools hold it at a time, by a lease
-- (KEYS[2]: the model's name, renewed by each of its processes at every
-- check): a pool whose model does not hold it leaves it alone, so pools
-- of two models never flap it.  A pool takes it when nobody holds it
-- (the other model's pools are gone, their lease expired) or when it
-- claims it (its supervisor started or reloaded: a model switch takes
-- effect at once).  The value is written only when it changes, and
-- never back to an older version of the same model (a check that read
-- the corpus version just before an ingest bumped it).
-- KEYS: gen, lease.  ARGV: model, corpus version, lease ms ('0': an
-- ingest, which bumps the version of the model holding it), '1': claim.
-- Returns the generation after.
local cur = redis.call('GET', KEYS[1])
local model = ARGV[1]
if ARGV[3] == '0' then
  model = cur and string.match(cur, '^(.*)@%d+$') or model
else
  local owner = redis.call('GET', KEYS[2])
  if ARGV[4] ~= '1' and cur and owner and owner ~= model then
    return cur
  end
  redis.call('SET', KEYS[2], model, 'PX', ARGV[3])
end
local g = model .. '@' .. ARGV[2]
if cur == g then return cur end
if cur and string.match(cur, '^(.*)@%d+$') == model
   and tonumber(string.match(cur, '@(%d+)$')) > tonumber(ARGV[2]) then
  return cur
end
redis.call('SET', KEYS[1], g)
return g
