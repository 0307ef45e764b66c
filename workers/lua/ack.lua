-- An entry acknowledged and deleted.  KEYS: jobs stream; ARGV: entry.
redis.call('XACK', KEYS[1], '@RAGNX_GROUP@', ARGV[1])
return redis.call('XDEL', KEYS[1], ARGV[1])
