
/*
 * ragnx: the Redis contract between the nginx module and the worker pool.
 *
 * Every key carries the hash tag {ragnx}, so all of them live in one slot
 * and the Lua scripts work on Redis Cluster as on a single server.
 *
 *   {ragnx}:jobs            stream, consumer group "pool": ask jobs, entry
 *                           fields "id" <job id>, "job" <payload>
 *                           (ragnx_job.h), "gen" <cache generation>
 *   {ragnx}:records         stream, consumer group "pool": exchanges
 *                           answered from the cache (hits, followers),
 *                           written to PostgreSQL in batches; fields
 *                           "id", "job" <payload>, "result" <cached value>
 *   {ragnx}:rpc             stream read before jobs: synchronous calls,
 *                           entry fields id, method, reply, deadline, sub,
 *                           params (see ragnx_rpc.h)
 *   {ragnx}:reply:<hostname>:<pid>  pub/sub channel of one nginx worker:
 *                           replies to its calls, "<id> <status> <body>"
 *   {ragnx}:delayed         sorted set of job ids waiting for a retry,
 *                           scored by the time (ms) they are due
 *   {ragnx}:dead            stream of jobs that exhausted their attempts
 *   {ragnx}:job:<id>        hash: status, owner, chatId, attempts,
 *                           createdAt, updatedAt, answer, sources, error,
 *                           leader (single-flight followers), held (an
 *                           answer waiting to be stored by a retry)
 *   {ragnx}:job:<id>:followers  list of follower job ids of a leader
 *   {ragnx}:llm             the pool's LLM circuit breaker while open
 *                           ("unauthorized", "forbidden": the provider
 *                           refuses the key), with a TTL; read by /health
 *   {ragnx}:stats           hash of counters: "records-refused" (cache
 *                           hits refused with 503 because the records
 *                           stream was at its bound)
 *   {ragnx}:gen             cache generation "<model>@<corpus version>",
 *                           set by the pool (workers/lua/gen.lua) and on
 *                           ingest
 *   {ragnx}:gen-owner       the model whose pools hold the generation, a
 *                           lease (PX) they renew; other models' pools
 *                           leave {ragnx}:gen alone while it lives
 *   {ragnx}:cache:<digest>:<gen>     JSON {"answer","sources"}, with TTL
 *   {ragnx}:metrics         set of the pool processes' metrics hashes
 *   {ragnx}:metrics:<host>:<pid>  hash of one pool process's figures,
 *                           "<family>|<series>" -> value, with a TTL
 *                           renewed while it lives (workers/ragnx_metrics.c)
 *   {ragnx}:pool            sorted set of the live pool processes,
 *                           "<host>:<pid>" scored by the time (ms, Redis's
 *                           clock) of its last heartbeat, every second;
 *                           read by /health (workers/lua/beat.lua)
 *   {ragnx}:pool:pg         hash: PostgreSQL as the pool last saw it,
 *                           "state" ok or down, "at" (ms, Redis's clock)
 *                           of that check, "process" that made it
 *   {ragnx}:inflight        hash: "<digest>:<gen>" -> id of the job
 *                           computing that answer (single-flight)
 *   {ragnx}:chat:<id>       the JWT subject owning chat <id>, with TTL
 *                           RAGNX_CHAT_TTL, for a chat whose id is not
 *                           bound to its owner (ragnx_chat_id(): another
 *                           user's, or one made before ids were bound):
 *                           set by the pool when it looks the chat up
 *                           for the module (call "chat"), so the next
 *                           question about it needs no call; PostgreSQL
 *                           has the truth
 *
 * <digest> is ragnx_query_digest(): SHA-256 of the normalised query.  The
 * generation is a key suffix rather than digest input so that the module
 * reads it and looks the answer up in one script call: a model switch or a
 * re-ingest changes every key at once and never serves a stale answer.
 */


#ifndef RAGNX_KEYS_H
#define RAGNX_KEYS_H


#define RAGNX_KEY_PREFIX         "{ragnx}:"
#define RAGNX_KEY_JOBS           RAGNX_KEY_PREFIX "jobs"
#define RAGNX_KEY_RECORDS        RAGNX_KEY_PREFIX "records"
#define RAGNX_KEY_STATS          RAGNX_KEY_PREFIX "stats"
#define RAGNX_KEY_RPC            RAGNX_KEY_PREFIX "rpc"
#define RAGNX_KEY_REPLY          RAGNX_KEY_PREFIX "reply:"
#define RAGNX_KEY_DELAYED        RAGNX_KEY_PREFIX "delayed"
#define RAGNX_KEY_DEAD           RAGNX_KEY_PREFIX "dead"
#define RAGNX_KEY_JOB            RAGNX_KEY_PREFIX "job:"
#define RAGNX_KEY_GEN            RAGNX_KEY_PREFIX "gen"
#define RAGNX_KEY_GEN_OWNER      RAGNX_KEY_PREFIX "gen-owner"
#define RAGNX_KEY_CACHE          RAGNX_KEY_PREFIX "cache:"
#define RAGNX_KEY_INFLIGHT       RAGNX_KEY_PREFIX "inflight"
#define RAGNX_KEY_LLM            RAGNX_KEY_PREFIX "llm"
#define RAGNX_KEY_METRICS        RAGNX_KEY_PREFIX "metrics"
#define RAGNX_KEY_METRICS_PROCESS  RAGNX_KEY_PREFIX "metrics:"
#define RAGNX_KEY_POOL           RAGNX_KEY_PREFIX "pool"
#define RAGNX_KEY_POOL_PG        RAGNX_KEY_PREFIX "pool:pg"

/*
 * {ragnx}:events:<job id>: the answer as it is written, a stream of
 * entries {t: "delta", a: attempt, d: text}, and {t: "restart", a} before
 * the first piece of an attempt after one that wrote some; it ends with
 * {t: "done", r: the result JSON} (complete.lua) or {t: "error", e: the
 * job's error} (fail.lua).  Kept for job_retention.  The pieces of one
 * attempt make its answer exactly.
 */
#define RAGNX_KEY_EVENTS         RAGNX_KEY_PREFIX "events:"

/*
 * Long-poll (GET /api/ask/{id}?wait=N): {ragnx}:watch:<job id>, the set
 * of nginx workers' wake channels ({ragnx}:wake:<worker>) waiting for
 * the job; the scripts that end a job publish its id on each, then drop
 * the set.
 */
#define RAGNX_KEY_WATCH          RAGNX_KEY_PREFIX "watch:"

/*
 * Streaming (GET /api/ask/{id}/events): {ragnx}:listen:<job id>, the wake
 * channels of the nginx workers streaming the job's answer; every piece
 * written publishes the job's id on each (workers/lua/delta.lua), the
 * scripts that end a job too, then drop the set.
 */
#define RAGNX_KEY_LISTEN         RAGNX_KEY_PREFIX "listen:"
#define RAGNX_KEY_WAKE           RAGNX_KEY_PREFIX "wake:"
#define RAGNX_EVENTS_MAX         "65536"
/* "<digest>:<gen>": a field of {ragnx}:inflight, the tail of a cache key */
#define RAGNX_KEY_GEN_SEP        ":"
#define RAGNX_KEY_FOLLOWERS      ":followers"
#define RAGNX_KEY_CHAT           RAGNX_KEY_PREFIX "chat:"

/* seconds a chat's owner, once looked up, stays in Redis */
#define RAGNX_CHAT_TTL           86400

#define RAGNX_GROUP              "pool"
#define RAGNX_GEN_DEFAULT        "default@0"

#define RAGNX_JOB_VERSION        2

/* lengths of the fixed-size parts */
#define RAGNX_UUID_LEN           36
#define RAGNX_DIGEST_LEN         64


#endif /* RAGNX_KEYS_H */
