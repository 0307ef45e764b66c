-- ragnx: users, chats, messages, documents, chunks, corpus version.

CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email          text NOT NULL,
    password_hash  text NOT NULL,
    name           text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- a chat belongs to the JWT subject that created it
CREATE TABLE chats (
    id             uuid PRIMARY KEY,
    owner          text NOT NULL,
    title          text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX chats_owner_updated ON chats (owner, updated_at DESC);

-- (job_id, role) is unique: a redelivered job never duplicates a message
CREATE TABLE messages (
    seq            bigserial PRIMARY KEY,
    id             uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    chat_id        uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    job_id         uuid NOT NULL,
    role           text NOT NULL CHECK (role IN ('user', 'assistant')),
    content        text NOT NULL,
    sources        jsonb,
    model          text,
    input_tokens   integer,
    output_tokens  integer,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (job_id, role)
);

CREATE INDEX messages_chat ON messages (chat_id, seq);

CREATE TABLE documents (
    id             bigserial PRIMARY KEY,
    path           text NOT NULL UNIQUE,
    title          text NOT NULL,
    content_hash   text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- the title weighs more than a heading, a heading more than the body
CREATE TABLE chunks (
    id             bigserial PRIMARY KEY,
    document_id    bigint NOT NULL REFERENCES documents (id)
                   ON DELETE CASCADE,
    seq            integer NOT NULL,
    path           text NOT NULL,           -- copies of the document's,
    title          text NOT NULL,           -- so retrieval needs no join
    heading        text NOT NULL DEFAULT '',
    body           text NOT NULL,
    tsv            tsvector GENERATED ALWAYS AS (
                       setweight(to_tsvector('english', title), 'A')
                       || setweight(to_tsvector('english', heading), 'B')
                       || setweight(to_tsvector('english', body), 'D')
                   ) STORED,
    UNIQUE (document_id, seq)
);

CREATE INDEX chunks_tsv ON chunks USING gin (tsv);

CREATE TABLE corpus (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    version        bigint NOT NULL DEFAULT 0
);

INSERT INTO corpus (id, version) VALUES (true, 0);
