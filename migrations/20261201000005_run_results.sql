-- What each run answered, kept with its record: a backend reads the agent's answer from the ledger
-- (`baton status --json`), and a run the permissions left with nothing done shows as such.
-- Usage, cost and turns stay in project_ai_session_metrics, beside which these rows sit.

CREATE TABLE run_results (
    build_id           text NOT NULL,
    step               text NOT NULL,
    project_id         text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    -- The result's text, at most BATON_MAX_RESULT_BYTES, cut with a marker.
    result             text,
    subtype            text,
    stop_reason        text,
    terminal_reason    text,
    is_error           boolean NOT NULL DEFAULT false,
    permission_denials jsonb NOT NULL DEFAULT '[]',
    -- Every file-writing tool call of the run was refused.
    nothing_done       boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, step)
);
CREATE INDEX run_results_project_id_idx ON run_results (project_id);

-- Keeps a run's answer; a replayed record keeps the first. Returns whether it wrote.
CREATE FUNCTION baton_store_result(
    p_project_id text,
    p_build_id text,
    p_step text,
    p_result text,
    p_subtype text,
    p_stop_reason text,
    p_terminal_reason text,
    p_is_error boolean,
    p_permission_denials jsonb,
    p_nothing_done boolean
) RETURNS boolean
LANGUAGE sql AS $$
    INSERT INTO run_results (build_id, step, project_id, result, subtype, stop_reason,
                             terminal_reason, is_error, permission_denials, nothing_done)
    VALUES (p_build_id, p_step, p_project_id, p_result, p_subtype, p_stop_reason,
            p_terminal_reason, p_is_error, coalesce(p_permission_denials, '[]'), p_nothing_done)
    ON CONFLICT (build_id, step) DO NOTHING
    RETURNING true;
$$;
