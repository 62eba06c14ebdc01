-- Rate limits hold in every interval of their duration, not only in windows aligned to the
-- epoch: a limit keeps a log of its recent starts instead of a count per fixed window.
-- `recent` is [[at_us, units], ...], oldest first (microseconds since the epoch; each
-- group counts until at + window); `clock` is the latest instant the limit was consumed
-- at, which later rounds never go below. See docs/scheduler.md.
ALTER TABLE rate_limit ADD COLUMN recent jsonb NOT NULL DEFAULT '[]';
ALTER TABLE rate_limit ADD COLUMN clock timestamptz NOT NULL DEFAULT 'epoch';

-- The units used in a window that has not ended started at some time up to now: counting
-- them as started now never lets more start than the limit allows.
UPDATE rate_limit
SET recent = jsonb_build_array(
        jsonb_build_array(floor(extract(epoch FROM now()) * 1000000)::bigint, used)),
    clock = now()
WHERE used > 0 AND window_start + window_ms * interval '1 millisecond' > now();

ALTER TABLE rate_limit DROP COLUMN window_start, DROP COLUMN used;
