-- GET /health on the queue server: the records stream's length (hits
-- answered from the cache whose exchange is not written yet) and how
-- many hits were refused because it was at ragnx_ask_record_max.  Any
-- reply says Redis is up.
-- KEYS: records stream, stats hash.
return {redis.call('XLEN', KEYS[1]),
  tonumber(redis.call('HGET', KEYS[2], 'records-refused') or '0')}
