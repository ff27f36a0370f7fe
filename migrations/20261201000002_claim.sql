-- Takes a build for a worker in one round trip: creates the project and the version on first
-- sight, checks that the job's user owns the project, raises the build's fencing token and marks
-- it running, and answers what the resume policy needs to know of the project, which runs of
-- the build are recorded, and whether someone asked to cancel it (its worker then ends it unrun).
-- A job of a thread (`p_thread_id`) is answered about the thread's chain instead of the main one:
-- the thread is made on first sight, owned by the job's user and pinned to the session its
-- `p_fork_from` names (see migrations/*_threads.sql), and `fork_session` is that session while the
-- thread has recorded nothing.
-- A refusal is raised with SQLSTATE BT403 (not the owner) or BT409 (the build id is another
-- build's: another project, user, version or kind, or another payload; the whole call is undone,
-- so the other build, its rows and the job's project are left untouched). A build that ended
-- (completed, failed or cancelled) is left as it is: its status is the answer.
--
-- Each question is its own statement with one obvious plan, and the function runs on generic
-- plans, which a connection makes once and keeps: planned with the tables' statistics each call,
-- it cost more to plan than to run. The project's row is taken with the lock the record's update
-- of it takes, and written only when the project is new.

CREATE FUNCTION baton_claim_build(
    p_build_id text,
    p_project_id text,
    p_version_id text,
    p_user_id text,
    p_kind text,
    p_stream text,
    p_stream_id text,
    p_payload jsonb,
    p_enqueued_at timestamptz,
    p_previous_session_id text,
    p_thread_id text DEFAULT NULL,
    p_fork_from text DEFAULT NULL
) RETURNS TABLE (
    fence bigint,
    attempt integer,
    status text,
    last_session text,
    last_resumable boolean,
    fresh_start_at timestamptz,
    ops bigint,
    reset boolean,
    previous_in_chain boolean,
    recorded_steps text[],
    recorded_old text[],
    recorded_new text[],
    cancel_requested boolean,
    fork_session text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_owner text;
    v_last text;
    v_fence bigint;
    v_attempt integer;
    v_status text;
    v_resumable boolean;
    v_fresh_id bigint;
    v_fresh_at timestamptz;
    v_ops bigint := 0;
    v_reset boolean;
    v_in_chain boolean := false;
    v_steps text[];
    v_olds text[];
    v_news text[];
    v_reset_asked timestamptz;
    v_cancel boolean;
    v_thread text := coalesce(p_thread_id, '');
    v_thread_owner text;
    v_fork text;
BEGIN
    -- Locks the project's row, as strongly as the record's update of it will; an upsert would also
    -- write a new version of the row on every claim. On first sight the row is created, and a
    -- concurrent first claim of the same project ends in the upsert's update, which locks it too.
    SELECT p.user_id, p.last_ai_session_id, p.reset_requested_at INTO v_owner, v_last, v_reset_asked
        FROM projects p WHERE p.project_id = p_project_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO projects (project_id, user_id) VALUES (p_project_id, p_user_id)
            ON CONFLICT (project_id) DO UPDATE SET user_id = projects.user_id
            RETURNING projects.user_id, projects.last_ai_session_id INTO v_owner, v_last;
    END IF;
    IF v_owner <> p_user_id THEN
        RAISE EXCEPTION USING ERRCODE = 'BT403', MESSAGE = 'not_owner';
    END IF;

    -- A chat or a plan that names no version records none.
    IF p_version_id <> '' THEN
        INSERT INTO project_versions (project_id, version_id) VALUES (p_project_id, p_version_id)
            ON CONFLICT (project_id, version_id) DO NOTHING;
    END IF;

    -- A thread's job is about the thread's chain: its newest session replaces the project's.
    IF p_thread_id IS NOT NULL THEN
        SELECT th.user_id, th.last_ai_session_id, th.fork_session_id
            INTO v_thread_owner, v_last, v_fork
            FROM threads th WHERE th.project_id = p_project_id AND th.thread_id = p_thread_id
            FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            IF p_fork_from IS NOT NULL THEN
                v_fork := baton_fork_source(p_project_id => p_project_id, p_user_id => p_user_id,
                                            p_fork_from => p_fork_from);
            END IF;
            INSERT INTO threads (project_id, thread_id, user_id, fork_from, fork_session_id)
                VALUES (p_project_id, p_thread_id, p_user_id, p_fork_from, v_fork);
            v_thread_owner := p_user_id;
            v_last := NULL;
        END IF;
        IF v_thread_owner <> p_user_id THEN
            RAISE EXCEPTION USING ERRCODE = 'BT403', MESSAGE = 'not_thread_owner';
        END IF;
        -- The fork is the thread's first run only.
        IF EXISTS (SELECT 1 FROM session_transitions t
                   WHERE t.project_id = p_project_id AND t.thread_id = v_thread) THEN
            v_fork := NULL;
        END IF;
    END IF;

    INSERT INTO builds AS b (build_id, project_id, version_id, user_id, kind, status, stream, stream_id,
                             payload, enqueued_at, started_at, attempt, fencing_token)
        VALUES (p_build_id, p_project_id, p_version_id, p_user_id, p_kind, 'running', p_stream,
                p_stream_id, p_payload, p_enqueued_at, now(), 1, 1)
        ON CONFLICT (build_id) DO UPDATE SET
            attempt = b.attempt + CASE WHEN b.status IN ('completed', 'failed', 'cancelled') THEN 0 ELSE 1 END,
            fencing_token = b.fencing_token + CASE WHEN b.status IN ('completed', 'failed', 'cancelled') THEN 0 ELSE 1 END,
            status = CASE WHEN b.status IN ('completed', 'failed', 'cancelled') THEN b.status ELSE 'running' END,
            stream = COALESCE(EXCLUDED.stream, b.stream),
            stream_id = COALESCE(EXCLUDED.stream_id, b.stream_id),
            started_at = COALESCE(b.started_at, now()),
            updated_at = now()
        -- The same build again (a duplicate entry, a replay) whatever its enqueue time; anything
        -- else that names this id is another build.
        WHERE b.project_id = p_project_id AND b.user_id = p_user_id
          AND b.version_id = p_version_id AND b.kind = p_kind
          AND (b.payload IS NULL OR b.payload - 'enqueued_at' = p_payload - 'enqueued_at')
        RETURNING b.fencing_token, b.attempt, b.status, b.cancel_requested_at IS NOT NULL
            INTO v_fence, v_attempt, v_status, v_cancel;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'BT409', MESSAGE = 'build_id_reused';
    END IF;

    -- The runs of this build already recorded, in order.
    SELECT COALESCE(array_agg(t.step ORDER BY t.id), '{}'),
           COALESCE(array_agg(t.old_session_id::text ORDER BY t.id), '{}'),
           COALESCE(array_agg(t.new_session_id::text ORDER BY t.id), '{}')
        INTO v_steps, v_olds, v_news
        FROM session_transitions t
        WHERE t.build_id = p_build_id AND t.step IS NOT NULL AND t.new_session_id IS NOT NULL;

    -- A reset asked for while the previous job ran takes effect now, before a build that has run
    -- nothing yet (a build resumed after recording runs goes on with its session).
    IF v_reset_asked IS NOT NULL AND cardinality(v_steps) = 0 AND p_thread_id IS NULL THEN
        INSERT INTO session_transitions (project_id, old_session_id, new_session_id, source)
            VALUES (p_project_id, v_last, NULL, 'reset');
        UPDATE projects SET last_ai_session_id = NULL, reset_requested_at = NULL
            WHERE project_id = p_project_id;
        v_last := NULL;
    END IF;

    -- What the resume policy needs to know of the project. Each question is its own statement,
    -- shaped so that its one plan, cached for the connection, reads only the rows it is about.
    SELECT NOT EXISTS (SELECT 1 FROM project_ai_session_metrics m
                       WHERE m.project_id = p_project_id AND m.session_id = v_last
                         AND NOT m.is_resumable)
        INTO v_resumable;
    SELECT t.id, t.created_at INTO v_fresh_id, v_fresh_at
        FROM session_transitions t
        WHERE t.project_id = p_project_id AND t.thread_id = v_thread
          AND (t.old_session_id IS NULL OR t.source = 'fork')
          AND t.new_session_id IS NOT NULL
        ORDER BY t.id DESC LIMIT 1;
    IF v_fresh_id IS NOT NULL THEN
        SELECT count(*) INTO v_ops FROM session_transitions t
            WHERE t.project_id = p_project_id AND t.thread_id = v_thread AND t.id >= v_fresh_id
              AND t.new_session_id IS NOT NULL;
    END IF;
    SELECT t.source = 'reset' INTO v_reset FROM session_transitions t
        WHERE t.project_id = p_project_id AND t.thread_id = v_thread ORDER BY t.id DESC LIMIT 1;
    IF p_previous_session_id IS NOT NULL THEN
        -- Session ids are unique across projects, so each probe stops at its first row.
        v_in_chain := EXISTS (SELECT 1 FROM session_transitions t
                              WHERE t.new_session_id = p_previous_session_id
                                AND t.project_id = p_project_id)
                   OR EXISTS (SELECT 1 FROM session_transitions t
                              WHERE t.old_session_id = p_previous_session_id
                                AND t.project_id = p_project_id)
                   OR EXISTS (SELECT 1 FROM pruned_sessions s
                              WHERE s.session_id = p_previous_session_id
                                AND s.project_id = p_project_id);
    END IF;
    RETURN QUERY SELECT v_fence, v_attempt, v_status, v_last, v_resumable, v_fresh_at, v_ops,
                        COALESCE(v_reset, false), v_in_chain, v_steps, v_olds, v_news, v_cancel,
                        v_fork;
END;
$$;

ALTER FUNCTION baton_claim_build(text, text, text, text, text, text, text, jsonb, timestamptz, text,
                                 text, text)
    SET plan_cache_mode = force_generic_plan;
