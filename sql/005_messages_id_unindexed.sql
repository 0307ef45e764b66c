-- ragnx: messages.id without its unique index.
--
-- A message's id is a random UUID made by PostgreSQL, shown by the API
-- and never looked up: its unique index only cost a random-page insert
-- for every message written, a sixth of the cost of writing one in
-- batches (the records lane).  (job_id, role) stays unique (redelivery)
-- and (chat_id, seq) indexed (history, paging).

ALTER TABLE messages DROP CONSTRAINT messages_id_key;
