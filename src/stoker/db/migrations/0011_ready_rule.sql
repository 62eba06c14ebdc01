-- The ready rule, defined once. A task that becomes ready to run — created QUEUED, a
-- workflow step whose parents and conditions are satisfied, a replayed run, a retried
-- attempt, a run that concurrency admission let through — either waits for admission (it
-- has concurrency keys and was not admitted yet: one concurrency_slot row per strategy) or
-- gets the queue item of its attempt, due at `available_at`, whose schedule deadline counts
-- from then. Every statement that readies tasks calls make_tasks_ready with the tasks'
-- values; it returns the tenants whose tasks now wait for admission (the scheduler must
-- run admission for them), NULL when none do.
CREATE TYPE ready_task AS (
    task_id             bigint,
    tenant_id           bigint,
    attempt             integer,
    queue               text,
    priority            smallint,
    available_at        timestamptz,
    schedule_timeout_ms bigint,
    rate_limits         jsonb,
    desired_worker_id   bigint,
    concurrency_keys    jsonb
);

CREATE FUNCTION make_tasks_ready(tasks ready_task[], already_admitted boolean)
RETURNS bigint[] LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    gated_tenants bigint[];
BEGIN
    WITH r AS (
        SELECT * FROM unnest(tasks)
    ),
    gated AS (
        INSERT INTO concurrency_slot (task_id, strategy_id, tenant_id, idx, key, priority)
        SELECT r.task_id, (k->>'strategy_id')::bigint, r.tenant_id, (k->>'idx')::smallint,
               k->>'key', r.priority
        FROM r CROSS JOIN LATERAL jsonb_array_elements(r.concurrency_keys) k
        WHERE NOT already_admitted AND r.concurrency_keys IS NOT NULL
        ON CONFLICT (task_id, strategy_id) DO NOTHING
        RETURNING concurrency_slot.tenant_id
    ),
    queued AS (
        INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority, available_at,
                                schedule_deadline, rate_limits, desired_worker_id)
        SELECT r.tenant_id, r.task_id, r.attempt, r.queue, r.priority, r.available_at,
               CASE WHEN r.schedule_timeout_ms > 0
                    THEN r.available_at + r.schedule_timeout_ms * interval '1 millisecond'
               END,
               r.rate_limits, r.desired_worker_id
        FROM r
        WHERE already_admitted OR r.concurrency_keys IS NULL
    )
    SELECT array_agg(DISTINCT g.tenant_id ORDER BY g.tenant_id) INTO gated_tenants FROM gated g;
    RETURN gated_tenants;
END;
$$;
