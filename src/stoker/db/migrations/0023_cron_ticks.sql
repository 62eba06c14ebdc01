-- Crons: the run that counts as a cron's previous one is kept on the cron (the overlap
-- policies read it), and the ticks that made a run are kept for the backfill horizon.

-- last_run_id: the newest run the cron started on a tick or with trigger_now; overlap
-- policies look at its status.
ALTER TABLE cron ADD COLUMN last_run_id uuid;
UPDATE cron c SET last_run_id = (
    SELECT f.run_id FROM cron_fire f
    WHERE f.cron_id = c.id AND f.run_id IS NOT NULL AND f.outcome <> 'backfill'
    ORDER BY f.created_at DESC LIMIT 1);

-- A tick that made a run stays recorded until it is older than the retention (the horizon
-- of backfill), so a backfill of any range it accepts finds the runs made before and
-- creates no duplicate; ticks that made none are trimmed to each cron's newest 20.
CREATE INDEX cron_fire_tick_idx ON cron_fire (tick);
