-- ragnx: a chat made by a record holds its exchange in its own row.
--
-- Every record (a cache hit, or a follower of a single-flight leader) is
-- the first exchange of a new chat: a question asked in an existing chat
-- is never answered from the cache (ragnx_job.h, "scope").  Written as a
-- chat and two messages, a record cost three rows and five index entries;
-- written here it is one chat row that names the question's job, holds
-- the question, and points at its answer.  Answers are stored once, under
-- the BLAKE2b-128 digest of the cached value the pool computes, however
-- many chats show them: a cached answer is the same text for every asker.
-- Nothing in ragnx deletes an answer (the pool remembers which it wrote).
--
-- chat_messages shows both kinds the same way: a chat's inline exchange
-- comes first (seq -1 and 0, before any message's), then its messages.

CREATE TABLE answers (
    digest         bytea PRIMARY KEY,
    content        text NOT NULL,
    sources        jsonb NOT NULL,
    truncated      boolean NOT NULL DEFAULT false
);

ALTER TABLE chats
    ADD COLUMN job_id uuid,
    ADD COLUMN query text,
    ADD COLUMN answer bytea;

-- the inline messages' ids: stable, and derived from the job's as no
-- other message's is (a message's own id is random)
CREATE FUNCTION ragnx_message_id(job uuid, role text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(substr(sha256(convert_to(job::text || '/' || role,
                                           'UTF8')), 1, 16), 'hex')::uuid
$$;

CREATE VIEW chat_messages AS
    SELECT seq, id, chat_id, job_id, role, content, sources, model,
           input_tokens, output_tokens, created_at, truncated
    FROM messages
    UNION ALL
    SELECT k.seq, ragnx_message_id(c.job_id, k.role), c.id, c.job_id,
           k.role, k.content, k.sources, k.model, NULL, NULL, c.created_at,
           k.truncated
    FROM chats c
    LEFT JOIN answers a ON a.digest = c.answer
    CROSS JOIN LATERAL (VALUES
        (-1::bigint, 'user', c.query, NULL::jsonb, NULL::text, false),
        (0::bigint, 'assistant', a.content, a.sources, 'cache',
         coalesce(a.truncated, false))
    ) k (seq, role, content, sources, model, truncated)
    WHERE c.job_id IS NOT NULL;
