-- Recording a run is the hot path of every job: four times per build job. Done from the client it
-- costs five round trips (begin, lock the project, lock and check the build, write, commit); as one
-- function call it is a single statement in its own transaction, so one round trip.
--
-- Returns one row: `outcome` is 'written', 'already_recorded', 'unknown_build', 'unknown_project',
-- 'fenced' (with the build's current `fence`) or 'stale' (with the project's current `session`).
-- A refusal writes nothing.
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
    p_num_turns integer
) RETURNS TABLE (outcome text, fence bigint, session text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_current text;
    v_fence bigint;
    v_recorded boolean;
BEGIN
    -- Lock order everywhere: project row, then build row.
    SELECT p.last_ai_session_id INTO v_current
        FROM projects p WHERE p.project_id = p_project_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_project'::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    SELECT b.fencing_token,
           EXISTS (SELECT 1 FROM session_transitions t
                   WHERE t.build_id = b.build_id AND t.step = p_step)
        INTO v_fence, v_recorded
        FROM builds b WHERE b.build_id = p_build_id FOR UPDATE OF b;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_build'::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    IF v_fence <> p_fence THEN
        RETURN QUERY SELECT 'fenced'::text, v_fence, NULL::text;
        RETURN;
    END IF;
    IF v_recorded THEN
        RETURN QUERY SELECT 'already_recorded'::text, v_fence, v_current;
        RETURN;
    END IF;
    -- A resumed run extends the chain only from its newest link; anything else is a fork.
    IF p_old_session_id IS NOT NULL AND v_current IS DISTINCT FROM p_old_session_id THEN
        RETURN QUERY SELECT 'stale'::text, v_fence, v_current;
        RETURN;
    END IF;

    INSERT INTO session_transitions
        (project_id, version_id, build_id, step, old_session_id, new_session_id, source, fresh_reason, note)
        VALUES (p_project_id, p_version_id, p_build_id, p_step, p_old_session_id, p_new_session_id,
                p_source, p_fresh_reason, p_note);
    UPDATE projects SET last_ai_session_id = p_new_session_id WHERE project_id = p_project_id;
    UPDATE project_versions SET
        ai_session_created_at = CASE WHEN ai_session_id IS DISTINCT FROM p_new_session_id
                                     THEN now() ELSE ai_session_created_at END,
        ai_session_id = p_new_session_id,
        ai_session_last_used_at = now()
        WHERE version_id = p_version_id;
    INSERT INTO project_ai_session_metrics
        (session_id, project_id, build_id, step, source, input_tokens, output_tokens,
         cache_read_input_tokens, cache_creation_input_tokens, cost_usd, duration_ms, num_turns)
        VALUES (p_new_session_id, p_project_id, p_build_id, p_step, p_source, p_input_tokens,
                p_output_tokens, p_cache_read_input_tokens, p_cache_creation_input_tokens,
                p_cost_usd, p_duration_ms, p_num_turns)
        ON CONFLICT (build_id, step) WHERE build_id IS NOT NULL AND step IS NOT NULL DO NOTHING;
    UPDATE builds SET step = p_step, updated_at = now() WHERE build_id = p_build_id;
    RETURN QUERY SELECT 'written'::text, v_fence, p_new_session_id;
END;
$$;
