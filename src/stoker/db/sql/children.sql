-- Child runs spawned from inside a task: one per index or key, so a retried parent gets
-- the children it already spawned.

-- name: claim_children
-- Records child runs of a parent task. Children that exist already (same index or same
-- key) are left alone; the caller reads them back with existing_children.
INSERT INTO child_run (parent_task_id, child_index, child_key, tenant_id, external_id,
                       is_workflow)
SELECT %(parent_task_id)s, x.child_index, nullif(x.child_key, ''), %(tenant_id)s,
       x.external_id, x.is_workflow
FROM unnest(%(child_indexes)s::int[], %(child_keys)s::text[], %(external_ids)s::uuid[],
            %(is_workflow)s::bool[]) AS x(child_index, child_key, external_id, is_workflow)
ON CONFLICT DO NOTHING
RETURNING external_id;

-- name: existing_children
SELECT x.n, c.external_id
FROM unnest(%(child_indexes)s::int[], %(child_keys)s::text[]) WITH ORDINALITY
     AS x(child_index, child_key, n)
JOIN child_run c ON c.parent_task_id = %(parent_task_id)s
 AND CASE WHEN x.child_key <> '' THEN c.child_key = x.child_key
          ELSE c.child_index = x.child_index END;

-- name: parent_task
SELECT id, tenant_id, attempt, status, dag_id FROM task
WHERE id = %(task_id)s AND tenant_id = %(tenant_id)s;

-- name: parent_worker
-- The worker running a task now (sticky children prefer it).
SELECT worker_id FROM task_runtime WHERE task_id = %(task_id)s;
