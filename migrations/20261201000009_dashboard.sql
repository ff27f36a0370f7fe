-- What the dashboard asks of the ledger, answered from indexes whatever the number of builds:
-- builds newest first (paged by created_at and build id), the builds that ended in the last hour,
-- and the usage of the last day.

CREATE INDEX builds_created_at_idx ON builds (created_at DESC, build_id DESC);
CREATE INDEX builds_finished_at_idx ON builds (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX project_ai_session_metrics_created_at_idx ON project_ai_session_metrics (created_at);
-- The overview counts the queued and running builds: the unfinished ones only, a few among many.
CREATE INDEX builds_unfinished_idx ON builds (status) WHERE status IN ('queued', 'running');
