-- ragnx: the request id of the question that made an exchange.
--
-- nginx's $ragnx_request_id (its own $request_id, or the client's
-- X-Request-Id where the operator trusts it) travels in the job payload
-- ("rid") and is stored with both messages of the exchange, or, for an
-- exchange answered from the cache, in the chat row that holds it
-- (sql/007_record_chats.sql).  It ties a chat's message to the access
-- log line and the pool's log lines of its request.  NULL for exchanges
-- stored before, or asked without one.  A column without a default: no
-- table is rewritten.

ALTER TABLE messages ADD COLUMN request_id text;

ALTER TABLE chats ADD COLUMN request_id text;

CREATE OR REPLACE VIEW chat_messages AS
    SELECT seq, id, chat_id, job_id, role, content, sources, model,
           input_tokens, output_tokens, created_at, truncated, request_id
    FROM messages
    UNION ALL
    SELECT k.seq, ragnx_message_id(c.job_id, k.role), c.id, c.job_id,
           k.role, k.content, k.sources, k.model, NULL, NULL, c.created_at,
           k.truncated, c.request_id
    FROM chats c
    LEFT JOIN answers a ON a.digest = c.answer
    CROSS JOIN LATERAL (VALUES
        (-1::bigint, 'user', c.query, NULL::jsonb, NULL::text, false),
        (0::bigint, 'assistant', a.content, a.sources, 'cache',
         coalesce(a.truncated, false))
    ) k (seq, role, content, sources, model, truncated)
    WHERE c.job_id IS NOT NULL;
