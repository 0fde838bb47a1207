-- Fewer index entries and less WAL per state change.
--
-- A delivery changes state three times on its way out (claimed, committing, published). An
-- update that changes no indexed column, and finds room on its page, is a heap-only tuple
-- (HOT) update: no index gets an entry. Any other update adds an entry to every index of the
-- table. So:
--
-- * the lookups by tenant and by post move to `socialpub_delivery_keys`, written once per
--   delivery (and again only on a reschedule), so no state change pays for them;
-- * no index of the deliveries table names `state` or `updated_at`: the commit point changes
--   only those (and `committed_at`) and becomes a HOT update;
-- * the purge finds finished rows by `finished_at`, set once, by the terminal transition;
-- * pages keep a quarter free for the new versions HOT needs;
-- * history rows are found by delivery only (their `seq` still orders them);
-- * the outbox is purged by a scan: a purge runs rarely, an insert with every event.

CREATE TABLE socialpub_delivery_keys (
    id       UUID        NOT NULL,
    tenant   TEXT        NOT NULL,
    due_at   TIMESTAMPTZ NOT NULL,
    post_id  UUID        NOT NULL
);
INSERT INTO socialpub_delivery_keys (id, tenant, due_at, post_id)
    SELECT id, tenant, due_at, post_id FROM socialpub_deliveries;
CREATE UNIQUE INDEX socialpub_delivery_keys_tenant_due
    ON socialpub_delivery_keys (tenant, due_at, id);
CREATE INDEX socialpub_delivery_keys_post ON socialpub_delivery_keys (post_id);
DROP INDEX socialpub_deliveries_tenant_due;
DROP INDEX socialpub_deliveries_post;

ALTER TABLE socialpub_deliveries ADD COLUMN finished_at TIMESTAMPTZ;
UPDATE socialpub_deliveries SET finished_at = updated_at
    WHERE state IN ('published', 'failed', 'cancelled');
DROP INDEX socialpub_deliveries_finished;
CREATE INDEX socialpub_deliveries_finished ON socialpub_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;

-- Only due states have a run time, so the state need not be part of the predicate; claims
-- still check it.
DROP INDEX socialpub_deliveries_due;
CREATE INDEX socialpub_deliveries_due ON socialpub_deliveries (run_at, id)
    WHERE lease_owner IS NULL AND run_at IS NOT NULL;

ALTER TABLE socialpub_deliveries SET (fillfactor = 75);

ALTER TABLE socialpub_history DROP CONSTRAINT socialpub_history_pkey;

DROP INDEX socialpub_outbox_at;
