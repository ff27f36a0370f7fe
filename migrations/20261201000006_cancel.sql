-- Cancels a build. A queued build ends `cancelled` at once: no worker runs it (one that reads its
-- entry later finds it ended and acknowledges it unrun). A running build is marked: the worker
-- that holds it stops its run at its next heartbeat (or, when that worker died, the next claim
-- ends it) and ends it `cancelled`. Answers what it did: 'cancelled' or 'requested'; 'ended:' and
-- the status of a build that had already ended ('ended:completed', 'ended:failed',
-- 'ended:cancelled'), never to be taken for a cancel just made; NULL for an unknown id.
CREATE FUNCTION baton_cancel_build(p_build_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    SELECT b.status INTO v_status FROM builds b WHERE b.build_id = p_build_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status = 'queued' THEN
        UPDATE builds SET status = 'cancelled', cancel_requested_at = now(), finished_at = now(),
                          last_error = 'cancelled', updated_at = now()
            WHERE build_id = p_build_id;
        RETURN 'cancelled';
    ELSIF v_status = 'running' THEN
        UPDATE builds SET cancel_requested_at = COALESCE(cancel_requested_at, now()), updated_at = now()
            WHERE build_id = p_build_id;
        RETURN 'requested';
    END IF;
    RETURN 'ended:' || v_status;
END;
$$;
