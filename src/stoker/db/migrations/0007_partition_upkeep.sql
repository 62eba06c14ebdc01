-- Partition upkeep is safe when engine replicas do it at once, and never holds up writers:
-- one caller at a time creates or drops day partitions (an advisory lock; a caller that
-- finds it taken leaves the work to the one holding it: two replicas starting together both
-- create today's partitions), and the locks they need on the DEFAULT partition or the
-- parent table are waited for at most 2 s; a partition that could not get them is left for
-- the next round.

CREATE OR REPLACE FUNCTION ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    -- One caller at a time (two replicas starting together both create today's
    -- partitions): while another is at it, there is nothing to do here.
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema() || '.partitions')) THEN
        RETURN false;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE created_at >= %L AND created_at < %L '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       parent || '_default', lo, hi, part);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, part, lo, hi);
    EXCEPTION WHEN lock_not_available THEN
        -- The DEFAULT partition is busy for longer than lock_timeout: the rows stay in it
        -- and the next round (hourly) tries again, rather than holding up its writers.
        RETURN false;
    END;
    RETURN true;
END;
$$;

-- Drops the day partitions of ``parent`` that end on or before ``before`` (and deletes the
-- DEFAULT partition's rows older than it). Returns the partitions dropped. A partition whose
-- parent stays busy past lock_timeout is left for the next round.
CREATE OR REPLACE FUNCTION drop_partitions_before(parent text, before date) RETURNS SETOF text
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    part text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema() || '.partitions')) THEN
        RETURN;
    END IF;
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(parent)
          AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= before
        ORDER BY c.relname
    LOOP
        BEGIN
            EXECUTE format('DROP TABLE %I', part);
            RETURN NEXT part;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- the parent stays busy: this partition waits for the next round
        END;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE created_at < %L',
                   parent || '_default', before::timestamp AT TIME ZONE 'UTC');
END;
$$;
