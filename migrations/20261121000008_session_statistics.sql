-- Tells the planner that a session id belongs to one project.
--
-- The claim asks whether the job's previous session is in the project's chain: a transition with
-- that session id, new or old, and the project's id (migration 7). Counting the two conditions as
-- independent, the planner expected almost no row to match both and intersected the session's
-- index entries with all of the project's, a cost that grows with the project's history. Knowing
-- that the session id determines the project, it reads the session's index and stops at its first
-- row. Statistics are gathered by ANALYZE (autovacuum), which is also when they start to count.
CREATE STATISTICS session_transitions_session_project (dependencies)
    ON project_id, new_session_id, old_session_id FROM session_transitions;
