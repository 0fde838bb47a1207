-- socialpub schema for SQLite. Times are integer microseconds since the Unix epoch (UTC),
-- ids are 16-byte UUIDs, JSON is stored as text.

-- Sealed tokens: only ciphertext and the id of the key that sealed it.
CREATE TABLE socialpub_tokens (
    tenant      TEXT    NOT NULL,
    platform    TEXT    NOT NULL,
    account_id  TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, platform, account_id)
) WITHOUT ROWID;

-- One row per post and target.
CREATE TABLE socialpub_deliveries (
    id               BLOB    NOT NULL PRIMARY KEY,
    post_id          BLOB    NOT NULL,
    tenant           TEXT    NOT NULL,
    platform         TEXT    NOT NULL,
    account_id       TEXT    NOT NULL,
    post             TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    due_at           INTEGER NOT NULL,
    run_at           INTEGER,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    deadline         INTEGER,
    fence            INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    checkpoint       TEXT,
    committed_at     INTEGER,
    receipt          TEXT,
    last_error       TEXT,
    had_failure      INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    -- The run_at the latest claim took it at: orders a claimed batch and measures lag.
    claimed_due_at   INTEGER
);

-- Every index is paid for on each state change (the due, lease and finished indexes only
-- by rows they hold): keep them few.
-- Claiming reads only due, unleased rows: the index holds nothing else, so its cost does not
-- grow with finished rows, and future rows sit after the first due one.
CREATE INDEX socialpub_deliveries_due ON socialpub_deliveries (run_at, id)
    WHERE lease_owner IS NULL AND run_at IS NOT NULL
      AND state IN ('scheduled', 'retry_waiting', 'processing', 'unconfirmed');
-- Rescue of expired leases.
CREATE INDEX socialpub_deliveries_leased ON socialpub_deliveries (lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX socialpub_deliveries_tenant_due ON socialpub_deliveries (tenant, due_at, id);
CREATE INDEX socialpub_deliveries_post ON socialpub_deliveries (post_id);
-- Purge of finished rows.
CREATE INDEX socialpub_deliveries_finished ON socialpub_deliveries (updated_at)
    WHERE state IN ('published', 'failed', 'cancelled');

-- Every transition of every delivery.
CREATE TABLE socialpub_history (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  BLOB    NOT NULL,
    tenant       TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    from_state   TEXT,
    to_state     TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    worker       TEXT,
    error_kind   TEXT,
    message      TEXT
);
CREATE INDEX socialpub_history_delivery ON socialpub_history (delivery_id, seq);

-- Events, written in the same transaction as the change they report; read by the
-- application (at least once) and deleted when acknowledged or purged.
CREATE TABLE socialpub_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB    NOT NULL,
    tenant       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    delivery_id  BLOB,
    at           INTEGER NOT NULL,
    payload      TEXT    NOT NULL
);
CREATE INDEX socialpub_outbox_tenant ON socialpub_outbox (tenant, seq);
CREATE INDEX socialpub_outbox_at ON socialpub_outbox (at);

-- A claim is one UPDATE (the fence grows only there); this trigger writes the history row of
-- each delivery it moved to `claimed`, inside that statement.
CREATE TRIGGER socialpub_claim_history AFTER UPDATE OF fence ON socialpub_deliveries
WHEN NEW.state <> OLD.state
BEGIN
    INSERT INTO socialpub_history (delivery_id, tenant, at, from_state, to_state, attempt, worker)
    VALUES (NEW.id, NEW.tenant, NEW.updated_at, OLD.state, NEW.state, NEW.attempt, NEW.lease_owner);
END;
