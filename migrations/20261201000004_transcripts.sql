-- Session transcripts in the ledger, so that any replica can resume any session.
--
-- The CLI keeps a session as files on the disk of the host that ran it: `<id>.jsonl` and, beside
-- it, a folder `<id>/` (tool results, subagents). Each run's files are stored here in the same
-- statement that records the run, so a recorded run is resumable from any machine; before a run
-- resumes a session, the worker writes the stored files back where the CLI looks.
--
-- A file is stored as pieces: the first store of a file sends it whole, later ones only the bytes
-- added since (the transcript is append-only in practice). Each piece is compressed by the worker;
-- Postgres stores it as it comes (EXTERNAL: no second compression attempt).

CREATE TABLE session_transcripts (
    session_id   varchar(255) PRIMARY KEY,
    project_id   text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    -- Why the stored copy cannot be resumed (over BATON_TRANSCRIPT_MAX_BYTES, not found on the
    -- worker); NULL when it is whole.
    incomplete   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_transcripts_project_id_idx ON session_transcripts (project_id);

-- A store changes only the files it sends and adds their pieces: sizes, counts and times are read
-- from these rows (`baton session show`, `prune`), never kept as totals that every run would have
-- to write again.
CREATE TABLE session_transcript_files (
    session_id varchar(255) NOT NULL REFERENCES session_transcripts (session_id) ON DELETE CASCADE,
    -- Relative to the CLI's project folder: `<id>.jsonl`, or a path under `<id>/`.
    path       text NOT NULL,
    length     bigint NOT NULL CHECK (length >= 0),
    sha256     bytea NOT NULL,
    pieces     integer NOT NULL,
    PRIMARY KEY (session_id, path)
);

CREATE TABLE session_transcript_pieces (
    session_id varchar(255) NOT NULL,
    path       text NOT NULL,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, path, seq),
    FOREIGN KEY (session_id, path) REFERENCES session_transcript_files (session_id, path)
        ON DELETE CASCADE
);
ALTER TABLE session_transcript_pieces ALTER COLUMN data SET STORAGE EXTERNAL;

-- Stores what changed in one session's files. For each file i: `p_base_lengths[i]` = 0 replaces
-- the file with `p_data[i]`; otherwise `p_data[i]` is appended, provided the stored copy is still
-- `p_base_lengths[i]` bytes with hash `p_base_hashes[i]` (else nothing is written and BT412
-- `transcript_conflict` is raised, and the worker sends the file whole). `p_incomplete` marks the
-- session as not resumable from the store, dropping what was stored. Returns the compressed bytes
-- written.
CREATE FUNCTION baton_store_transcript(
    p_project_id text,
    p_session_id text,
    p_paths text[],
    p_base_lengths bigint[],
    p_base_hashes bytea[],
    p_lengths bigint[],
    p_hashes bytea[],
    p_data bytea[],
    p_incomplete text
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_owner text;
    v_incomplete text;
    v_written bigint := 0;
    v_length bigint;
    v_sha bytea;
    v_pieces integer;
BEGIN
    IF coalesce(cardinality(p_paths), 0) = 0 AND p_incomplete IS NULL THEN
        RETURN 0;
    END IF;
    -- No row locks of its own: the run's record, in the same statement, holds the project's row,
    -- and a session belongs to one project, so no two stores of a session meet.
    INSERT INTO session_transcripts (session_id, project_id) VALUES (p_session_id, p_project_id)
        ON CONFLICT (session_id) DO NOTHING;
    SELECT t.project_id, t.incomplete INTO v_owner, v_incomplete FROM session_transcripts t
        WHERE t.session_id = p_session_id;
    IF v_owner <> p_project_id THEN
        RAISE EXCEPTION USING ERRCODE = 'BT412', MESSAGE = 'transcript_of_other_project';
    END IF;
    IF p_incomplete IS NOT NULL THEN
        DELETE FROM session_transcript_files f WHERE f.session_id = p_session_id;
        UPDATE session_transcripts SET incomplete = p_incomplete WHERE session_id = p_session_id;
        RETURN 0;
    END IF;
    IF v_incomplete IS NOT NULL THEN
        UPDATE session_transcripts SET incomplete = NULL WHERE session_id = p_session_id;
    END IF;
    FOR i IN 1 .. cardinality(p_paths) LOOP
        SELECT f.length, f.sha256, f.pieces INTO v_length, v_sha, v_pieces
            FROM session_transcript_files f
            WHERE f.session_id = p_session_id AND f.path = p_paths[i];
        IF p_base_lengths[i] = 0 THEN
            IF v_length IS NULL THEN
                INSERT INTO session_transcript_files (session_id, path, length, sha256, pieces)
                    VALUES (p_session_id, p_paths[i], p_lengths[i], p_hashes[i], 1);
            ELSE
                DELETE FROM session_transcript_pieces c
                    WHERE c.session_id = p_session_id AND c.path = p_paths[i];
                UPDATE session_transcript_files SET length = p_lengths[i], sha256 = p_hashes[i],
                    pieces = 1
                    WHERE session_id = p_session_id AND path = p_paths[i];
            END IF;
            INSERT INTO session_transcript_pieces (session_id, path, seq, data)
                VALUES (p_session_id, p_paths[i], 0, p_data[i]);
        ELSIF v_length IS DISTINCT FROM p_base_lengths[i] OR v_sha IS DISTINCT FROM p_base_hashes[i] THEN
            RAISE EXCEPTION USING ERRCODE = 'BT412', MESSAGE = 'transcript_conflict',
                DETAIL = p_paths[i];
        ELSE
            INSERT INTO session_transcript_pieces (session_id, path, seq, data)
                VALUES (p_session_id, p_paths[i], v_pieces, p_data[i]);
            UPDATE session_transcript_files SET length = p_lengths[i], sha256 = p_hashes[i],
                pieces = v_pieces + 1
                WHERE session_id = p_session_id AND path = p_paths[i];
        END IF;
        v_written := v_written + octet_length(p_data[i]);
    END LOOP;
    RETURN v_written;
END;
$$;
