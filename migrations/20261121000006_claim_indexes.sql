-- Indexes that keep a claim's cost flat as projects and sessions grow.
--
-- The claim asks for the project's last fresh start (its newest transition with no old session).
-- Without an index on exactly that, Postgres combined the index of every null `old_session_id`
-- across all projects with the project's own transitions: a cost that grew with the number of
-- projects. The claim also asks whether the project's session was marked unresumable; that read
-- every metrics row of the session, one per run, so it grew with the session's length.
-- Both indexes are partial, so they hold only the rows those questions are about.

CREATE INDEX session_transitions_fresh_start_idx ON session_transitions (project_id, id)
    WHERE old_session_id IS NULL;

CREATE INDEX project_ai_session_metrics_unresumable_idx
    ON project_ai_session_metrics (project_id, session_id)
    WHERE NOT is_resumable;
