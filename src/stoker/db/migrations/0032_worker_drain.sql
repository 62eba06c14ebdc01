-- Draining a worker from the dashboard (docs/dashboard.md "Workers"): the worker is paused
-- (assigned nothing new) and told, in its next heartbeat's answer, to stop once what it
-- runs has finished. The request is the worker row's, so any replica answers it.

ALTER TABLE worker ADD COLUMN drain_requested_at timestamptz;
