-- Threads: chat conversations beside a project's main session. Each is keyed by (project, thread),
-- owned by a user, and has its own chain in session_transitions (`thread_id`), its newest session
-- here as the project's main one is in `projects`. A thread that forks starts from a copy of
-- another session's history (`--fork-session`): the session it branches from is pinned when the
-- thread is made, and its first run forks it.

CREATE TABLE threads (
    project_id                 text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    thread_id                  text NOT NULL CHECK (thread_id <> ''),
    user_id                    text NOT NULL,
    last_ai_session_id         varchar(255),
    -- What the thread was forked from as it was asked (`main`, a thread, a session id), and the
    -- session that named when the thread was made.
    fork_from                  text,
    fork_session_id            varchar(255),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, thread_id)
);
CREATE INDEX threads_user_id_idx ON threads (user_id, project_id);

-- The session a new thread of `p_user_id` branches from when it forks `p_fork_from`: `main` (the
-- project's newest session), another thread of the project (its newest, or the one it forks), or
-- a session id of one of the project's chains. Threads are looked up before session ids. Refused
-- with BT403 `not_thread_owner` (another user's thread) or BT404 `fork_source_unknown` (nothing
-- of that name, or nothing to fork yet).
CREATE FUNCTION baton_fork_source(
    p_project_id text,
    p_user_id text,
    p_fork_from text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_owner text;
    v_session text;
    v_thread text;
BEGIN
    IF p_fork_from = 'main' THEN
        SELECT p.last_ai_session_id INTO v_session FROM projects p WHERE p.project_id = p_project_id;
    ELSE
        SELECT th.user_id, coalesce(th.last_ai_session_id, th.fork_session_id)
            INTO v_owner, v_session
            FROM threads th WHERE th.project_id = p_project_id AND th.thread_id = p_fork_from;
        IF NOT FOUND THEN
            SELECT t.thread_id INTO v_thread FROM session_transitions t
                WHERE t.new_session_id = p_fork_from AND t.project_id = p_project_id LIMIT 1;
            IF FOUND THEN
                v_session := p_fork_from;
                IF v_thread <> '' THEN
                    SELECT th.user_id INTO v_owner FROM threads th
                        WHERE th.project_id = p_project_id AND th.thread_id = v_thread;
                END IF;
            END IF;
        END IF;
        IF v_owner IS NOT NULL AND v_owner <> p_user_id THEN
            RAISE EXCEPTION USING ERRCODE = 'BT403', MESSAGE = 'not_thread_owner';
        END IF;
    END IF;
    IF v_session IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'BT404', MESSAGE = 'fork_source_unknown';
    END IF;
    RETURN v_session;
END;
$$;
