-- ragnx: messages.chat_id without a foreign key, its guarantees kept by
-- the exchange statement and a trigger.
--
-- The foreign key ran PostgreSQL's check, a query of its own, for each
-- message inserted: two per job, the largest part of the exchange.  The
-- exchange now inserts a job's messages only into a chat it has just
-- created or locked (FOR KEY SHARE, the lock the check took), and a
-- deleted chat takes its messages with it through the trigger below, as
-- ON DELETE CASCADE did (and TRUNCATE chats now empties messages too).  A chat deleted while an exchange holds its
-- lock is deleted after that commits, messages included; one deleted
-- before the lock is taken is not found, and the job fails as for a
-- chat that does not exist.

ALTER TABLE messages DROP CONSTRAINT messages_chat_id_fkey;

CREATE FUNCTION chats_cascade() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE messages;
    ELSE
        DELETE FROM messages m USING gone g WHERE m.chat_id = g.id;
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER chats_delete AFTER DELETE ON chats
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION chats_cascade();

CREATE TRIGGER chats_truncate AFTER TRUNCATE ON chats
    FOR EACH STATEMENT EXECUTE FUNCTION chats_cascade();
