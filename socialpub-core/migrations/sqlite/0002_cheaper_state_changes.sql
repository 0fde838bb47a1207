-- Cheaper state changes.
--
-- An UPDATE that sets a column a partial index names (in its key or its condition) evaluates
-- that index's condition for the old row and the new one. SQLite evaluates `x IN (a, b, c)`
-- with more than two constants through a temporary table built once per run of the
-- statement, and the hot writes update one row per run: each of them built four such tables.
-- The conditions now leave the state out where it adds nothing, and compare with `=` where
-- it is needed.

-- Only the due states have a run time (the state machine clears it when a delivery leaves
-- them), so the state need not be part of the condition; claims still check it.
DROP INDEX socialpub_deliveries_due;
CREATE INDEX socialpub_deliveries_due ON socialpub_deliveries (run_at, id)
    WHERE lease_owner IS NULL AND run_at IS NOT NULL;

-- Purge of finished rows. The purge names the same condition, word for word: SQLite uses a
-- partial index only for a query whose conditions include the index's.
DROP INDEX socialpub_deliveries_finished;
CREATE INDEX socialpub_deliveries_finished ON socialpub_deliveries (updated_at)
    WHERE (state = 'published' OR state = 'failed' OR state = 'cancelled');

-- The outbox is purged by a scan: a purge runs rarely, an insert with every event (and an
-- application that acknowledges its events keeps the outbox short).
DROP INDEX socialpub_outbox_at;
