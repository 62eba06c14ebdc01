-- The SDK's one statement for transactional enqueue, run on the application's own
-- connection inside its transaction (stoker/_sdk/transactional.py fills {schema}, quoted,
-- and {param}, the driver's placeholder). enqueue_runs() is in db/schema.sql.
SELECT {schema}.enqueue_runs({param}) AS enqueued
