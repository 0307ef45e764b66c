-- ragnx: chat lists page by (updated_at, id), newest first, so that chats
-- updated in the same microsecond still appear exactly once.

DROP INDEX chats_owner_updated;

CREATE INDEX chats_owner_updated ON chats (owner, updated_at DESC, id DESC);
