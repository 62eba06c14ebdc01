-- Concurrency strategies and slots (see docs/scheduler.md).

-- name: upsert_concurrency_strategies
INSERT INTO concurrency_strategy (tenant_id, scope, idx, expression, max_runs, limit_strategy)
SELECT %(tenant_id)s, s.scope, s.idx, s.expression, s.max_runs, s.limit_strategy
FROM unnest(%(scopes)s::text[], %(idx)s::smallint[], %(expressions)s::text[],
            %(max_runs)s::int[], %(limit_strategies)s::text[])
     AS s(scope, idx, expression, max_runs, limit_strategy)
ON CONFLICT (tenant_id, scope, idx) DO UPDATE
SET expression = excluded.expression, max_runs = excluded.max_runs,
    limit_strategy = excluded.limit_strategy
RETURNING id, scope, idx;

-- name: get_concurrency_strategies
SELECT id, scope, idx, expression, max_runs, limit_strategy
FROM concurrency_strategy
WHERE tenant_id = %(tenant_id)s
ORDER BY scope, idx;

-- name: lock_waiting_strategies
-- Locks, in id order, the tenant's strategies that have runs waiting for admission.
SELECT s.id, s.max_runs, s.limit_strategy
FROM concurrency_strategy s
WHERE s.tenant_id = %(tenant_id)s
  AND EXISTS (SELECT 1 FROM concurrency_slot c
              WHERE c.tenant_id = %(tenant_id)s AND c.strategy_id = s.id AND NOT c.admitted)
ORDER BY s.id
FOR UPDATE;

-- name: admission_candidates
-- Waiting slots of the locked strategies whose earlier strategies already admitted them,
-- oldest first within a priority.
SELECT c.task_id, c.strategy_id, c.key
FROM concurrency_slot c
WHERE c.tenant_id = %(tenant_id)s AND c.strategy_id = ANY(%(strategy_ids)s::bigint[])
  AND NOT c.admitted
  AND NOT EXISTS (SELECT 1 FROM concurrency_slot p
                  WHERE p.task_id = c.task_id AND p.idx < c.idx AND NOT p.admitted)
ORDER BY c.priority DESC, c.task_id
LIMIT %(limit)s;

-- name: admitted_slots
-- The runs holding slots of the given (strategy, key) pairs, oldest first.
SELECT c.task_id, c.strategy_id, c.key
FROM concurrency_slot c
JOIN unnest(%(strategy_ids)s::bigint[], %(keys)s::text[]) AS k(strategy_id, key)
  ON c.strategy_id = k.strategy_id AND c.key = k.key
WHERE c.admitted
ORDER BY c.task_id;

-- name: admit_slots
-- Marks slots admitted; returns the tasks now admitted by every strategy they have.
WITH admitted AS (
    UPDATE concurrency_slot c SET admitted = true
    FROM unnest(%(task_ids)s::bigint[], %(strategy_ids)s::bigint[]) AS a(task_id, strategy_id)
    WHERE c.task_id = a.task_id AND c.strategy_id = a.strategy_id
    RETURNING c.task_id
)
SELECT DISTINCT a.task_id
FROM admitted a
WHERE NOT EXISTS (SELECT 1 FROM concurrency_slot c
                  WHERE c.task_id = a.task_id AND NOT c.admitted
                    AND NOT (c.task_id, c.strategy_id) IN (
                        SELECT * FROM unnest(%(task_ids)s::bigint[], %(strategy_ids)s::bigint[])));
