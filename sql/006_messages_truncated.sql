-- ragnx: an answer cut at the LLM's token limit says so.  Such an answer
-- is stored and shown, never cached; the API marks it "truncated".

ALTER TABLE messages ADD COLUMN truncated boolean NOT NULL DEFAULT false;
