-- A claim in one round trip, and a record that can also end its build.
--
-- `baton_claim_build` does what the worker's claim used to do in six round trips (BEGIN, project
-- upsert, version upsert, build upsert, the project's session facts, COMMIT).
--
-- `baton_record_run` gains an 18th argument, `p_completes`: the job's last run records its session
-- and marks the build completed in the same transaction, so a job's end costs no transaction of its
-- own. Its happy path takes no lock of its own either: each write carries its check (the stale-session
-- check on the project row, the fence on the build row, the replay check on the transition's unique
-- key), and the row locks come with the writes, project row first, then build row, as everywhere. A
-- refusal is raised, which undoes whatever was already written, with SQLSTATE BT412, the outcome as
-- the message, the build's current fence as the detail and the project's session as the hint; a
-- written run returns true.
--
-- The 17-argument `baton_record_run` of migration 4 stays, so workers of the previous version keep
-- working while a new version rolls out.

CREATE FUNCTION baton_claim_build(
    p_build_id text,
    p_project_id text,
    p_version_id text,
    p_user_id text,
    p_kind text,
    p_stream_id text,
    p_payload jsonb,
    p_enqueued_at timestamptz,
    p_previous_session_id text
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
    recorded_new text[]
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_owner text;
    v_fence bigint;
    v_attempt integer;
    v_status text;
BEGIN
    -- Creates the project on first sight and locks its row either way (an upsert's update locks like
    -- FOR UPDATE).
    INSERT INTO projects (project_id, user_id) VALUES (p_project_id, p_user_id)
        ON CONFLICT (project_id) DO UPDATE SET user_id = projects.user_id
        RETURNING projects.user_id INTO v_owner;
    IF v_owner <> p_user_id THEN
        RAISE EXCEPTION USING ERRCODE = 'BT403', MESSAGE = 'not_owner', DETAIL = v_owner;
    END IF;

    -- The version's project: the one just inserted, or the one it already had.
    WITH inserted AS (
        INSERT INTO project_versions (version_id, project_id) VALUES (p_version_id, p_project_id)
        ON CONFLICT (version_id) DO NOTHING RETURNING project_versions.project_id
    )
    SELECT i.project_id INTO v_owner FROM (
        SELECT project_id FROM inserted
        UNION ALL
        SELECT v.project_id FROM project_versions v WHERE v.version_id = p_version_id
        LIMIT 1
    ) i;
    IF NOT FOUND THEN
        -- Another project's claim inserted the version after the statement's snapshot was taken; a
        -- new statement sees it.
        SELECT v.project_id INTO v_owner FROM project_versions v WHERE v.version_id = p_version_id;
    END IF;
    IF v_owner IS DISTINCT FROM p_project_id THEN
        RAISE EXCEPTION USING ERRCODE = 'BT409', MESSAGE = 'version_of_other_project',
            DETAIL = coalesce(v_owner, '');
    END IF;

    INSERT INTO builds AS b (build_id, project_id, version_id, user_id, kind, status, stream_id, payload,
                             enqueued_at, started_at, attempt, fencing_token)
        VALUES (p_build_id, p_project_id, p_version_id, p_user_id, p_kind, 'running', p_stream_id,
                p_payload, p_enqueued_at, now(), 1, 1)
        ON CONFLICT (build_id) DO UPDATE SET
            attempt = b.attempt + CASE WHEN b.status IN ('completed', 'failed') THEN 0 ELSE 1 END,
            fencing_token = b.fencing_token + CASE WHEN b.status IN ('completed', 'failed') THEN 0 ELSE 1 END,
            status = CASE WHEN b.status IN ('completed', 'failed') THEN b.status ELSE 'running' END,
            stream_id = COALESCE(EXCLUDED.stream_id, b.stream_id),
            started_at = COALESCE(b.started_at, now()),
            updated_at = now()
        RETURNING b.fencing_token, b.attempt, b.status INTO v_fence, v_attempt, v_status;

    -- What the resume policy needs to know of the project, and the runs of this build already
    -- recorded, in order.
    RETURN QUERY
    WITH last_fresh AS (
        SELECT max(id) AS id FROM session_transitions
        WHERE project_id = p_project_id AND old_session_id IS NULL AND new_session_id IS NOT NULL
    )
    SELECT v_fence,
           v_attempt,
           v_status,
           p.last_ai_session_id::text,
           NOT EXISTS (SELECT 1 FROM project_ai_session_metrics m
                       WHERE m.project_id = p.project_id AND m.session_id = p.last_ai_session_id
                         AND NOT m.is_resumable),
           (SELECT t.created_at FROM session_transitions t, last_fresh f WHERE t.id = f.id),
           (SELECT count(*) FROM session_transitions t, last_fresh f
            WHERE t.project_id = p_project_id AND t.id >= f.id AND t.new_session_id IS NOT NULL),
           COALESCE((SELECT t.source = 'reset' FROM session_transitions t
                     WHERE t.project_id = p_project_id ORDER BY t.id DESC LIMIT 1), false),
           EXISTS (SELECT 1 FROM session_transitions t
                   WHERE t.project_id = p_project_id AND (p_previous_session_id IS NOT NULL)
                     AND (t.new_session_id = p_previous_session_id
                          OR t.old_session_id = p_previous_session_id)),
           r.steps,
           r.olds,
           r.news
    FROM projects p,
         LATERAL (SELECT COALESCE(array_agg(t.step ORDER BY t.id), '{}') AS steps,
                         COALESCE(array_agg(t.old_session_id::text ORDER BY t.id), '{}') AS olds,
                         COALESCE(array_agg(t.new_session_id::text ORDER BY t.id), '{}') AS news
                  FROM session_transitions t
                  WHERE t.build_id = p_build_id AND t.step IS NOT NULL
                    AND t.new_session_id IS NOT NULL) r
    WHERE p.project_id = p_project_id;
END;
$$;

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
    p_completes boolean
) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_current text;
    v_fence bigint;
    v_recorded boolean;
    v_outcome text;
BEGIN
    UPDATE projects SET last_ai_session_id = p_new_session_id
        WHERE project_id = p_project_id
          AND (p_old_session_id IS NULL OR last_ai_session_id IS NOT DISTINCT FROM p_old_session_id);
    IF FOUND THEN
        UPDATE builds SET
            step = p_step,
            status = CASE WHEN p_completes THEN 'completed' ELSE status END,
            finished_at = CASE WHEN p_completes THEN now() ELSE finished_at END,
            updated_at = now()
            WHERE build_id = p_build_id AND fencing_token = p_fence;
        IF FOUND THEN
            INSERT INTO session_transitions
                (project_id, version_id, build_id, step, old_session_id, new_session_id, source,
                 fresh_reason, note)
                VALUES (p_project_id, p_version_id, p_build_id, p_step, p_old_session_id,
                        p_new_session_id, p_source, p_fresh_reason, p_note)
                ON CONFLICT (build_id, step) WHERE build_id IS NOT NULL AND step IS NOT NULL
                DO NOTHING;
            IF FOUND THEN
                UPDATE project_versions SET
                    ai_session_created_at = CASE WHEN ai_session_id IS DISTINCT FROM p_new_session_id
                                                 THEN now() ELSE ai_session_created_at END,
                    ai_session_id = p_new_session_id,
                    ai_session_last_used_at = now()
                    WHERE version_id = p_version_id;
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
    ELSE
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
