-- Durable waits settled in an event push's last round trip (docs/durable.md, "Durable
-- waits"): whether a wait's conditions hold, in SQL (durable_wait_holds, as
-- stoker._core.durable.wait_holds); the one settle statement as a function
-- (settle_durable_entries), so that the timers, children's ends and events share its one
-- definition; and the settlement of the waits an event reached (settle_reached_durable_waits
-- in sql/durable.sql) calls both. And the payload of the filter that let an event's run
-- through moves out of the run's metadata into run_filter_payload.

-- Whether a wait holds once the conditions at the paths p_done are satisfied: every item
-- of its request's `conditions` holds, an or group when any of its conditions does.
CREATE FUNCTION durable_wait_holds(p_request jsonb, p_done text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_request -> 'conditions') IS DISTINCT FROM 'array' THEN false
        WHEN jsonb_array_length(p_request -> 'conditions') = 0 THEN false
        ELSE NOT EXISTS (
            SELECT 1
            FROM jsonb_array_elements(p_request -> 'conditions') WITH ORDINALITY AS c(item, n)
            WHERE CASE
                WHEN jsonb_typeof(c.item) = 'object' AND c.item ->> 'kind' = 'or' THEN
                    NOT EXISTS (
                        SELECT 1
                        FROM generate_series(
                            0,
                            CASE WHEN jsonb_typeof(c.item -> 'items') = 'array'
                                 THEN jsonb_array_length(c.item -> 'items') ELSE 0 END - 1
                        ) AS j
                        WHERE ((c.n - 1) || '.' || j) = ANY(coalesce(p_done, '{}'))
                    )
                ELSE NOT ((c.n - 1)::text = ANY(coalesce(p_done, '{}')))
            END
        )
    END
$$;

-- Settles pending entries (a timer, an event, a child's end): status 'ok' or 'error',
-- the result or error, which condition fired and the event. Each takes satisfied_seq =
-- ++satisfied_counter of its task, in the order given. An entry no longer pending is left
-- alone and not returned, so a second settlement is a no-op. Run under the logs' locks
-- (claim_due_durable_timers, lock_durable_logs).
--
-- Restore, in the same statement: a task that was evicted (evicted_at set, status
-- EVICTED) is queued again as its next attempt — not a retry: retry_count stays — with a
-- queue item whose id is below every ordinary one (queue_item_ahead_seq), so it goes ahead
-- of ordinary work of its priority. It was admitted before, so it needs no concurrency
-- admission (the ready rule with already_admitted, see make_tasks_ready). evicted_at is
-- cleared under the lock, so a second settlement (or a second restore) queues nothing.
-- `restored` says which rows' tasks were queued (the caller signals their tenants).
--
-- And what follows a settlement, so that it costs no further statement: the conditions of
-- a settled wait that never held are dropped (the satisfied ones stay, as the record of
-- the events the task used); each row says which attempt of which worker runs its task
-- now (`worker_id`, `attempt`: NULL when none does), whom to deliver it to, and whether
-- the task has an execution timeout (`timed`: only then does its deadline need re-arming).
--
-- PL/pgSQL, so that its statement is planned for the arrays it is given (the engine's
-- connections use plan_cache_mode=force_custom_plan).
CREATE FUNCTION settle_durable_entries(
    p_task_ids bigint[], p_created_ats timestamptz[], p_branches integer[],
    p_positions integer[], p_statuses text[], p_results jsonb[], p_errors jsonb[],
    p_fired text[], p_event_ids bigint[])
RETURNS TABLE (task_id bigint, created_at timestamptz, branch integer, "position" integer,
               status text, satisfied_seq bigint, tenant_id bigint, invocation integer,
               evicted_at timestamptz, restored boolean, worker_id bigint, attempt integer,
               timed boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH x AS (
        SELECT *
        FROM unnest(p_task_ids, p_created_ats, p_branches, p_positions, p_statuses, p_results,
                    p_errors, p_fired, p_event_ids)
             WITH ORDINALITY
             AS x(task_id, created_at, branch, position, status, result, error, fired,
                  event_id, ord)
    ),
    pending AS (
        SELECT x.*, row_number() OVER (PARTITION BY x.task_id ORDER BY x.ord) AS n
        FROM x
        JOIN durable_entry e
          ON e.task_id = x.task_id AND e.created_at = x.created_at AND e.branch = x.branch
         AND e.position = x.position
        WHERE e.status = 'pending'
    ),
    logs AS (
        UPDATE durable_log l
        SET satisfied_counter = l.satisfied_counter + c.n, evicted_at = NULL
        FROM (SELECT p.task_id, p.created_at, count(*) AS n, o.evicted_at
              FROM pending p
              JOIN durable_log o ON o.task_id = p.task_id AND o.created_at = p.created_at
              GROUP BY 1, 2, 4) c
        WHERE l.task_id = c.task_id AND l.created_at = c.created_at
        RETURNING l.task_id, l.satisfied_counter - c.n AS base, l.tenant_id, l.invocation,
                  c.evicted_at
    ),
    evicted AS (
        SELECT t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
               t.rate_limits, t.desired_worker_id
        FROM logs
        JOIN task t ON t.id = logs.task_id
        WHERE logs.evicted_at IS NOT NULL AND t.status = 'EVICTED'
    ),
    requeued AS (
        INSERT INTO queue_item (id, tenant_id, task_id, attempt, queue, priority,
                                available_at, schedule_deadline, rate_limits,
                                desired_worker_id)
        OVERRIDING SYSTEM VALUE
        SELECT nextval('queue_item_ahead_seq') - 4611686018427387904, v.tenant_id, v.id,
               v.attempt + 1, v.task_name, v.priority, now(),
               CASE WHEN v.schedule_timeout_ms > 0
                    THEN now() + v.schedule_timeout_ms * interval '1 millisecond'
               END,
               v.rate_limits, v.desired_worker_id
        FROM evicted v
        RETURNING queue_item.task_id
    ),
    restored AS (
        UPDATE task t
        SET status = 'QUEUED', attempt = t.attempt + 1, started_at = NULL, worker_id = NULL
        FROM requeued q
        WHERE t.id = q.task_id
        RETURNING t.id
    ),
    cleared AS (
        DELETE FROM task_wait w
        USING pending p
        WHERE w.task_id = p.task_id AND w.dag_id IS NULL AND w.branch = p.branch
          AND w.position = p.position AND w.satisfied_at IS NULL
    )
    UPDATE durable_entry e
    SET status = p.status, result = p.result, error = p.error, fired = p.fired,
        event_id = p.event_id, satisfied_seq = logs.base + p.n, satisfied_at = now()
    FROM pending p
    JOIN logs ON logs.task_id = p.task_id
    LEFT JOIN task_runtime r ON r.task_id = p.task_id
    WHERE e.task_id = p.task_id AND e.created_at = p.created_at AND e.branch = p.branch
      AND e.position = p.position AND e.status = 'pending'
    RETURNING e.task_id, e.created_at, e.branch, e.position, e.status, e.satisfied_seq,
              logs.tenant_id, logs.invocation, logs.evicted_at,
              EXISTS (SELECT 1 FROM restored WHERE restored.id = e.task_id),
              r.worker_id, r.attempt,
              EXISTS (SELECT 1 FROM task t
                      WHERE t.id = e.task_id AND t.execution_timeout_ms > 0);
END
$$;

-- The payload of the filter that let an event's run through (ctx.filter_payload), kept
-- beside the run, not in its metadata: written in the event push's transaction for each
-- run a filter let through (run_id: the task run's or the workflow run's external id), read
-- by every assignment of its attempts (and of its steps), pruned with the retention like
-- child_run.
CREATE TABLE run_filter_payload (
    run_id     uuid PRIMARY KEY,
    tenant_id  bigint NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX run_filter_payload_created_idx ON run_filter_payload (created_at);
