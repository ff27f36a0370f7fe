-- Baton's ledger: the single source of truth for each project's Claude session chain. Table and
-- column names follow existing deployments of the seed design. Nothing was released before these
-- migrations, so each concern has one: the tables here, then the claim, the record, the transcript
-- store and the runs' answers, each function defined once.

CREATE TABLE projects (
    project_id                 text PRIMARY KEY,
    user_id                    text NOT NULL,
    last_ai_session_id         varchar(255),
    last_ai_session_updated_at timestamptz,
    -- An operator's reset asked for while a job of the project ran: the next claim performs it,
    -- so the running job records its runs and the next job starts fresh.
    reset_requested_at         timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- The session timestamp follows the session id whoever writes it.
CREATE FUNCTION projects_touch_session() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.last_ai_session_id IS DISTINCT FROM OLD.last_ai_session_id THEN
        IF NEW.last_ai_session_id IS NOT NULL THEN
            NEW.last_ai_session_updated_at := now();
        END IF;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER projects_touch_session
    BEFORE INSERT OR UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION projects_touch_session();

-- A version belongs to its project: two projects may each have a version `1`.
CREATE TABLE project_versions (
    version_id              text NOT NULL,
    project_id              text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    ai_session_id           varchar(255),
    ai_session_created_at   timestamptz,
    ai_session_last_used_at timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, version_id)
);
CREATE INDEX project_versions_ai_session_id_idx ON project_versions (ai_session_id);

-- Job state. A build row may exist before its project does (the producer records it as queued).
CREATE TABLE builds (
    build_id      text PRIMARY KEY,
    project_id    text NOT NULL,
    version_id    text NOT NULL,
    user_id       text NOT NULL,
    kind          text NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    step          text,
    attempt       integer NOT NULL DEFAULT 0,
    -- Raised by every claim of the job; writes under an older token are refused.
    fencing_token bigint NOT NULL DEFAULT 0,
    last_error    text,
    -- The job stream the build was enqueued on (`baton requeue` puts back only its own stream's)
    -- and its newest entry there.
    stream        text,
    stream_id     text,
    payload       jsonb,
    enqueued_at   timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    -- When someone asked to cancel it (see migrations/*_cancel.sql).
    cancel_requested_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX builds_project_id_idx ON builds (project_id);

-- One link of a project's chain per run, and for every session that ends without a new one (an
-- operator's reset, a resume target the CLI could not find) or comes from outside (an import).
-- A project has its main chain (`thread_id` empty) and one chain per thread (migrations/*_threads.sql).
CREATE TABLE session_transitions (
    id             bigserial PRIMARY KEY,
    project_id     text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    thread_id      text NOT NULL DEFAULT '',
    version_id     text,
    build_id       text,
    step           text,
    old_session_id varchar(255),
    new_session_id varchar(255),
    source         text NOT NULL
                   CHECK (source IN ('build', 'metadata', 'compact', 'chat_plan', 'chat', 'plan_task',
                                     'resume_fallback', 'reset', 'fork', 'import')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Why the run started fresh, when it did.
    fresh_reason   text,
    -- What the job survived in this run (a compaction that failed or had nothing to compact).
    note           text,
    CONSTRAINT session_transitions_new_session_required
        CHECK (new_session_id IS NOT NULL OR source IN ('reset', 'resume_fallback'))
);
CREATE INDEX session_transitions_project_id_idx ON session_transitions (project_id, thread_id, id);
CREATE INDEX session_transitions_new_session_id_idx ON session_transitions (new_session_id);
-- The policy asks whether an id belongs to a project's chain as an old id too.
CREATE INDEX session_transitions_old_session_id_idx ON session_transitions (old_session_id);
-- The claim asks for the chain's last fresh start (or fork): only the rows it is about, whatever
-- the number of projects.
CREATE INDEX session_transitions_fresh_start_idx ON session_transitions (project_id, thread_id, id)
    WHERE old_session_id IS NULL OR source = 'fork';
-- A session id belongs to one project: knowing it, the planner reads the session's rows and stops
-- at the first, instead of intersecting them with all of the project's (statistics come with
-- ANALYZE, that is autovacuum).
CREATE STATISTICS session_transitions_session_project (dependencies)
    ON project_id, new_session_id, old_session_id FROM session_transitions;
-- One transition per run of a build: a replayed run records nothing twice.
CREATE UNIQUE INDEX session_transitions_build_step_key ON session_transitions (build_id, step)
    WHERE build_id IS NOT NULL AND step IS NOT NULL;

-- Session ids whose chain links `baton prune` deleted: a stale `previous_session_id` of a
-- project's own chain is still recognised as its own after the links are gone.
CREATE TABLE pruned_sessions (
    session_id varchar(255) PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    pruned_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project_ai_session_metrics (
    id                          bigserial PRIMARY KEY,
    session_id                  varchar(255) NOT NULL,
    project_id                  text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    build_id                    text,
    step                        text,
    source                      text NOT NULL,
    input_tokens                bigint NOT NULL DEFAULT 0,
    output_tokens               bigint NOT NULL DEFAULT 0,
    cache_read_input_tokens     bigint NOT NULL DEFAULT 0,
    cache_creation_input_tokens bigint NOT NULL DEFAULT 0,
    -- As the CLI reported it; whether that covers one run or the whole session depends on its version.
    cost_usd                    double precision NOT NULL DEFAULT 0,
    duration_ms                 bigint NOT NULL DEFAULT 0,
    num_turns                   integer NOT NULL DEFAULT 0,
    is_resumable                boolean NOT NULL DEFAULT true,
    resume_failure_count        integer NOT NULL DEFAULT 0,
    created_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX project_ai_session_metrics_project_id_idx ON project_ai_session_metrics (project_id);
CREATE INDEX project_ai_session_metrics_session_id_idx ON project_ai_session_metrics (session_id);
CREATE UNIQUE INDEX project_ai_session_metrics_build_step_key ON project_ai_session_metrics (build_id, step)
    WHERE build_id IS NOT NULL AND step IS NOT NULL;
-- The claim asks whether the project's session was marked unresumable: only those rows.
CREATE INDEX project_ai_session_metrics_unresumable_idx
    ON project_ai_session_metrics (project_id, session_id)
    WHERE NOT is_resumable;
