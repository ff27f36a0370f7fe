-- The webhook outbox: one row per delivery of a build's end, written by a trigger in the same
-- transaction as the build's final state, whichever statement writes it (a run's record, a
-- worker's ending, a refusal, a cancel). Workers deliver from it, claiming rows with
-- FOR UPDATE SKIP LOCKED, so any replica can, and a replica that dies mid-delivery leaves its row
-- for another once its lease (next_attempt_at) passes.
CREATE TABLE webhook_deliveries (
    -- `msg_<uuid>`: the `webhook-id` header, the same on every attempt.
    id              text PRIMARY KEY,
    build_id        text NOT NULL,
    -- build.completed, build.failed (it ran and failed), build.cancelled, build.dead_lettered
    -- (refused before it ran).
    event_type      text NOT NULL
                    CHECK (event_type IN ('build.completed', 'build.failed', 'build.cancelled',
                                          'build.dead_lettered')),
    -- The job's own `webhook_url`; NULL for the deployment's BATON_WEBHOOK_URL.
    url             text,
    -- The body as first sent, so every attempt signs and sends the same bytes.
    body            text,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Since when it is being delivered: its creation, or an operator's retry.
    since           timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_build_idx ON webhook_deliveries (build_id);

-- Queues the deliveries of a build that just ended: the deployment's, and the job's own URL's.
CREATE FUNCTION baton_webhook_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_type text;
    v_own text;
BEGIN
    v_type := CASE NEW.status
                  WHEN 'completed' THEN 'build.completed'
                  WHEN 'cancelled' THEN 'build.cancelled'
                  ELSE CASE WHEN NEW.attempt = 0 THEN 'build.dead_lettered' ELSE 'build.failed' END
              END;
    INSERT INTO webhook_deliveries (id, build_id, event_type, url)
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.build_id, v_type, NULL);
    v_own := NEW.payload ->> 'webhook_url';
    IF v_own IS NOT NULL AND v_own <> '' THEN
        INSERT INTO webhook_deliveries (id, build_id, event_type, url)
            VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.build_id, v_type, v_own);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER builds_webhook_outbox_insert
    AFTER INSERT ON builds
    FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION baton_webhook_outbox();

CREATE TRIGGER builds_webhook_outbox_update
    AFTER UPDATE OF status ON builds
    FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
                       AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION baton_webhook_outbox();
