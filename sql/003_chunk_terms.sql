-- ragnx: each chunk's lexemes with the weight of their positions, kept by
-- triggers from the chunk's tsvector.
--
-- Retrieval ORs a plain question's terms, and for such a query each
-- position holding one of them is a cover of its own: ts_rank_cd's
-- default is the sum of those positions' weights (title A 1.0, heading B
-- 0.4, C 0.2, body D 0.1).  With these sums stored, in tenths so that
-- equal chunks tie exactly, a question ranks its chunks from the postings
-- of its own lexemes instead of calling ts_rank_cd on every match.  A
-- lexeme without positions counts for nothing, as in ts_rank_cd, but
-- still covers its term.

CREATE TABLE chunk_terms (
    lexeme         text NOT NULL,
    chunk_id       bigint NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    tenths         integer NOT NULL,
    PRIMARY KEY (lexeme, chunk_id)
);

-- the cascade from a removed chunk
CREATE INDEX chunk_terms_chunk ON chunk_terms (chunk_id);

CREATE FUNCTION chunk_terms_fill() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM chunk_terms WHERE chunk_id = OLD.id;
    END IF;

    INSERT INTO chunk_terms (lexeme, chunk_id, tenths)
    SELECT u.lexeme, NEW.id,
           coalesce((SELECT sum(CASE w WHEN 'A' THEN 10 WHEN 'B' THEN 4
                                       WHEN 'C' THEN 2 ELSE 1 END)
                     FROM unnest(u.weights) w), 0)
    FROM unnest(NEW.tsv) u;

    RETURN NULL;
END
$$;

CREATE TRIGGER chunk_terms_insert AFTER INSERT ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunk_terms_fill();

CREATE TRIGGER chunk_terms_update AFTER UPDATE ON chunks
    FOR EACH ROW WHEN (OLD.tsv IS DISTINCT FROM NEW.tsv OR OLD.id <> NEW.id)
    EXECUTE FUNCTION chunk_terms_fill();

INSERT INTO chunk_terms (lexeme, chunk_id, tenths)
SELECT u.lexeme, c.id,
       coalesce((SELECT sum(CASE w WHEN 'A' THEN 10 WHEN 'B' THEN 4
                                   WHEN 'C' THEN 2 ELSE 1 END)
                 FROM unnest(u.weights) w), 0)
FROM chunks c, unnest(c.tsv) u;
