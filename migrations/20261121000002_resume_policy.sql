-- The resume policy: transitions that end a session without starting one (an operator's reset, a
-- resume target the CLI could not find) have no new session, and a fresh start records its reason.

ALTER TABLE session_transitions ALTER COLUMN new_session_id DROP NOT NULL;
ALTER TABLE session_transitions ADD CONSTRAINT session_transitions_new_session_required
    CHECK (new_session_id IS NOT NULL OR source IN ('reset', 'resume_fallback'));
ALTER TABLE session_transitions ADD COLUMN fresh_reason text;

-- The policy asks whether an id belongs to a project's chain as an old id too.
CREATE INDEX session_transitions_old_session_id_idx ON session_transitions (old_session_id);
