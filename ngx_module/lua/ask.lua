-- The ask script of ngx_http_ragnx_ask_module (POST /api/ask), run by
-- EVALSHA.  scripts/embed-lua embeds it in the module at build time; a
-- name between two @ is that string of shared/ragnx_keys.h.
--
-- One round trip per question.  Mode "all": read the cache generation,
-- look the answer up, and on a hit append the exchange to the records
-- stream (it still lands in the chat) or on a miss create the job and
-- enqueue it, unless an identical question is already being answered:
-- then the new job follows that leader and the LLM runs once.  Mode
-- "ask" is the same with the worker's generation.  With a separate cache
-- server, "lookup" runs there and "enqueue" on the queue server;
-- "enqueue" also follows a plain GET that missed.
--
-- Mode "chat" is a question asked in an existing chat.  Its answer may
-- draw on the chat's history, so it is never looked up in the cache,
-- never leads nor follows another job, and is enqueued on its own.  The
-- chat is the caller's: "verified" when its id is bound to the caller
-- (ragnx_chat_id_owned()) or the pool said so, else by the owner the
-- pool left in {ragnx}:chat:<id> ("foreign" when another's, "unknown"
-- when Redis does not know it: the module then asks the pool).  Every
-- other mode makes a new chat, with an id bound to the caller.
--
-- KEYS: gen, jobs stream, job hash, chat, records stream.
-- ARGV: digest, job id, payload, owner, chatId, now ms, queue max, job
-- ttl s, mode, gen ('' when unknown), cached value ("enqueue") or
-- verified ("chat"), records max, deadline ms (optional).
-- Returns {outcome, gen, cached|leader}.
--
-- A script Redis runs after the deadline (a Redis stopped, or too busy,
-- with the command in its socket buffer) does nothing and answers
-- "late": an asker told 503 was told that nothing happened, so nothing
-- may.  Before it, the script acts and nginx waits for its reply, however
-- late (ngx_http_ragnx_redis_cmd_timeout()).  Compared with Redis's
-- clock, so nginx's and Redis's hosts keep their clocks within a
-- fraction of ragnx_redis_timeout of each other (NTP).
--
-- The payload (ragnx_job.h) is immutable: it goes into the stream entry,
-- or a follower's hash, as the module wrote it, with the generation (a
-- job) or the cached value (a record) as fields beside it.  A hit is
-- refused ("hit-full") when the records stream holds records max entries:
-- never answered without its record.
--
-- The cache key and the in-flight field are ragnx_cache_key()'s and
-- ragnx_inflight_field()'s, built here from the same macros (t/keys.t
-- runs this script and compares).
--
-- Single-flight: the question is claimed with one HSETNX of its field in
-- the in-flight hash; for a new question that is the only single-flight
-- command.  A field already there names a leader, followed while it is
-- pending and younger than ragnx_ask_job_ttl, else taken over.  The pool
-- removes the field when the leader ends, and sweeps fields of leaders
-- no longer pending.  A key per question with its own TTL cost Redis
-- about 2 us more per new question: a new key and an entry in the
-- expires table.
--
-- A new job's hash holds only what a poll needs (the pool adds attempts
-- and updatedAt when it starts the job) and has no TTL: its entry in the
-- stream, which ragnx_ask_queue_max bounds, is what keeps it, and every
-- way the pool ends a job sets the retention.  A follower's hash and list
-- are not in the stream: they expire after ragnx_ask_job_ttl.
if ARGV[13] and ARGV[13] ~= '' then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
     > tonumber(ARGV[13])
  then
    return {'late', '', ''}
  end
end
local mode, gen, cached, p = ARGV[9], ARGV[10], false, ARGV[3]
local chat = mode == 'chat'
if chat then
  if ARGV[11] ~= '1' then
    local o = redis.call('GET', KEYS[4])
    if not o then return {'unknown', '', ''} end
    if o ~= ARGV[4] then return {'foreign', '', ''} end
  end
elseif mode == 'enqueue' then
  if ARGV[11] ~= '' then cached = ARGV[11] end
else
  if mode ~= 'ask' then
    gen = redis.call('GET', KEYS[1]) or '@RAGNX_GEN_DEFAULT@'
  end
  cached = redis.call('GET', '@RAGNX_KEY_CACHE@' .. ARGV[1]
    .. '@RAGNX_KEY_GEN_SEP@' .. gen)
  if mode == 'lookup' then return {'lookup', gen, cached or ''} end
end
if gen == '' then
  gen = redis.call('GET', KEYS[1]) or '@RAGNX_GEN_DEFAULT@'
end
if cached then
  if redis.call('XLEN', KEYS[5]) >= tonumber(ARGV[12]) then
    return {'hit-full', gen, cached}
  end
  redis.call('XADD', KEYS[5], '*', 'id', ARGV[2], 'job', p, 'result',
    cached)
  return {'hit', gen, cached}
end
local ttl = ARGV[8]
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[7]) then
  return {'full', gen, ''}
end
local inflight = ARGV[1] .. '@RAGNX_KEY_GEN_SEP@' .. gen
if not chat
   and redis.call('HSETNX', '@RAGNX_KEY_INFLIGHT@', inflight, ARGV[2])
       == 0
then
  local leader = redis.call('HGET', '@RAGNX_KEY_INFLIGHT@', inflight)
  local lk = '@RAGNX_KEY_JOB@' .. leader
  local l = redis.call('HMGET', lk, 'status', 'createdAt')
  local st, age = l[1], tonumber(ARGV[6]) - (tonumber(l[2]) or 0)
  if (st == 'waiting' or st == 'active' or st == 'delayed')
     and age < tonumber(ttl) * 1000
  then
    redis.call('HSET', KEYS[3], 'status', 'waiting', 'owner', ARGV[4],
      'chatId', ARGV[5], 'createdAt', ARGV[6], 'leader', leader,
      'payload', p)
    redis.call('EXPIRE', KEYS[3], ttl)
    local fk = lk .. '@RAGNX_KEY_FOLLOWERS@'
    if redis.call('RPUSH', fk, ARGV[2]) == 1 then
      redis.call('EXPIRE', fk, ttl)
    end
    return {'follower', gen, leader}
  end
  redis.call('HSET', '@RAGNX_KEY_INFLIGHT@', inflight, ARGV[2])
end
redis.call('HSET', KEYS[3], 'status', 'waiting', 'owner', ARGV[4],
  'chatId', ARGV[5], 'createdAt', ARGV[6])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'job', p, 'gen', gen)
return {'queued', gen, ''}
