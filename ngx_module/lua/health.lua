-- GET /health on the queue server: the records stream's length (hits
-- answered from the cache whose exchange is not written yet), how many
-- hits were refused because it was at ragnx_ask_record_max, and the
-- pool's LLM circuit breaker ('' when closed, else why it is open).
-- Any reply says Redis is up.
-- KEYS: records stream, stats hash, LLM breaker.
return {redis.call('XLEN', KEYS[1]),
  tonumber(redis.call('HGET', KEYS[2], 'records-refused') or '0'),
  redis.call('GET', KEYS[3]) or ''}
