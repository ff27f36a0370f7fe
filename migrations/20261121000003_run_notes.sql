-- A run the job survived without the effect it asked for (a compaction that failed or had nothing
-- to compact) is recorded with what the CLI said.
ALTER TABLE session_transitions ADD COLUMN note text;
