-- Records one run in one round trip: the project's session, the build's step (and its completion
-- when `p_completes`), the transition and the usage row, and the version's session. Its happy path
-- takes no lock of its own: each write carries its check (the stale-session check on the project
-- row, the fence on the build row, the replay check on the transition's unique key), and the row
-- locks come with the writes, project row first, then build row, as everywhere. A refusal undoes
-- whatever was written and is raised with SQLSTATE BT412, the outcome as the message
-- (`unknown_project`, `unknown_build`, `fenced`, `already_recorded`, `stale`), the build's current
-- fence as the detail and the project's session as the hint; a written run returns true.
-- A thread's run (`p_thread_id`) moves the thread's session instead of the project's, and its
-- first run, a fork (`p_source` 'fork'), moves a thread that has none; a thread deleted while
-- the run went on is refused as `unknown_thread`.

CREATE FUNCTION baton_record_run(
    p_project_id text,
    p_version_id text,
    p_build_id text,
    p_step text,
    p_fence bigint,
    p_old_session_id text,
    p_new_session_id text,
    p_source text,
    p_fresh_reason text,
    p_note text,
    p_input_tokens bigint,
    p_output_tokens bigint,
    p_cache_read_input_tokens bigint,
    p_cache_creation_input_tokens bigint,
    p_cost_usd double precision,
    p_duration_ms bigint,
    p_num_turns integer,
    p_completes boolean,
    p_thread_id text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_current text;
    v_fence bigint;
    v_recorded boolean;
    v_outcome text;
BEGIN
    IF p_thread_id IS NULL THEN
        UPDATE projects SET last_ai_session_id = p_new_session_id
            WHERE project_id = p_project_id
              AND (p_old_session_id IS NULL OR last_ai_session_id IS NOT DISTINCT FROM p_old_session_id);
    ELSE
        UPDATE threads SET last_ai_session_id = p_new_session_id, updated_at = now()
            WHERE project_id = p_project_id AND thread_id = p_thread_id
              AND (p_old_session_id IS NULL
                   OR last_ai_session_id IS NOT DISTINCT FROM p_old_session_id
                   OR (p_source = 'fork' AND last_ai_session_id IS NULL));
    END IF;
    IF FOUND THEN
        UPDATE builds SET
            step = p_step,
            status = CASE WHEN p_completes THEN 'completed' ELSE status END,
            finished_at = CASE WHEN p_completes THEN now() ELSE finished_at END,
            updated_at = now()
            WHERE build_id = p_build_id AND fencing_token = p_fence;
        IF FOUND THEN
            INSERT INTO session_transitions
                (project_id, thread_id, version_id, build_id, step, old_session_id, new_session_id,
                 source, fresh_reason, note)
                VALUES (p_project_id, coalesce(p_thread_id, ''), nullif(p_version_id, ''),
                        p_build_id, p_step, p_old_session_id, p_new_session_id, p_source,
                        p_fresh_reason, p_note)
                ON CONFLICT (build_id, step) WHERE build_id IS NOT NULL AND step IS NOT NULL
                DO NOTHING;
            IF FOUND THEN
                UPDATE project_versions SET
                    ai_session_created_at = CASE WHEN ai_session_id IS DISTINCT FROM p_new_session_id
                                                 THEN now() ELSE ai_session_created_at END,
                    ai_session_id = p_new_session_id,
                    ai_session_last_used_at = now()
                    WHERE project_id = p_project_id AND version_id = p_version_id;
                INSERT INTO project_ai_session_metrics
                    (session_id, project_id, build_id, step, source, input_tokens, output_tokens,
                     cache_read_input_tokens, cache_creation_input_tokens, cost_usd, duration_ms,
                     num_turns)
                    VALUES (p_new_session_id, p_project_id, p_build_id, p_step, p_source,
                            p_input_tokens, p_output_tokens, p_cache_read_input_tokens,
                            p_cache_creation_input_tokens, p_cost_usd, p_duration_ms, p_num_turns)
                    ON CONFLICT (build_id, step) WHERE build_id IS NOT NULL AND step IS NOT NULL
                    DO NOTHING;
                RETURN true;
            END IF;
        END IF;
    END IF;

    -- Refused. Say why, checking in the order the refusals rank: the project, the build, the fence,
    -- a replay, a stale session.
    SELECT p.last_ai_session_id INTO v_current FROM projects p WHERE p.project_id = p_project_id;
    IF NOT FOUND THEN
        v_outcome := 'unknown_project';
    ELSIF p_thread_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM threads th WHERE th.project_id = p_project_id AND th.thread_id = p_thread_id) THEN
        v_outcome := 'unknown_thread';
    ELSE
        IF p_thread_id IS NOT NULL THEN
            SELECT th.last_ai_session_id INTO v_current FROM threads th
                WHERE th.project_id = p_project_id AND th.thread_id = p_thread_id;
        END IF;
        SELECT b.fencing_token,
               EXISTS (SELECT 1 FROM session_transitions t
                       WHERE t.build_id = b.build_id AND t.step = p_step)
            INTO v_fence, v_recorded
            FROM builds b WHERE b.build_id = p_build_id;
        IF NOT FOUND THEN
            v_outcome := 'unknown_build';
        ELSIF v_fence <> p_fence THEN
            v_outcome := 'fenced';
        ELSIF v_recorded THEN
            v_outcome := 'already_recorded';
        ELSE
            v_outcome := 'stale';
        END IF;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'BT412', MESSAGE = v_outcome,
        DETAIL = coalesce(v_fence::text, ''), HINT = coalesce(v_current, '');
END;
$$;
