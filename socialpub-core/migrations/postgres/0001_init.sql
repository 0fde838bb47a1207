-- socialpub schema for PostgreSQL, created in the store's schema (the search_path).

-- Sealed tokens: only ciphertext and the id of the key that sealed it.
CREATE TABLE socialpub_tokens (
    tenant      TEXT        NOT NULL,
    platform    TEXT        NOT NULL,
    account_id  TEXT        NOT NULL,
    key_id      TEXT        NOT NULL,
    ciphertext  BYTEA       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, platform, account_id)
);

-- One row per post and target.
CREATE TABLE socialpub_deliveries (
    id               UUID        NOT NULL PRIMARY KEY,
    post_id          UUID        NOT NULL,
    tenant           TEXT        NOT NULL,
    platform         TEXT        NOT NULL,
    account_id       TEXT        NOT NULL,
    post             JSONB       NOT NULL,
    state            TEXT        NOT NULL,
    due_at           TIMESTAMPTZ NOT NULL,
    run_at           TIMESTAMPTZ,
    attempt          INTEGER     NOT NULL,
    max_attempts     INTEGER     NOT NULL,
    deadline         TIMESTAMPTZ,
    fence            BIGINT      NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    checkpoint       JSONB,
    committed_at     TIMESTAMPTZ,
    receipt          JSONB,
    last_error       JSONB,
    had_failure      BOOLEAN     NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    -- The run_at the latest claim took it at: orders a claimed batch and measures lag.
    claimed_due_at   TIMESTAMPTZ
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
    seq          BIGSERIAL   PRIMARY KEY,
    delivery_id  UUID        NOT NULL,
    tenant       TEXT        NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    from_state   TEXT,
    to_state     TEXT        NOT NULL,
    attempt      INTEGER     NOT NULL,
    worker       TEXT,
    error_kind   TEXT,
    message      TEXT
);
CREATE INDEX socialpub_history_delivery ON socialpub_history (delivery_id, seq);

-- Events, written in the same transaction as the change they report; read by the
-- application (at least once) and deleted when acknowledged or purged.
CREATE TABLE socialpub_outbox (
    seq          BIGSERIAL   PRIMARY KEY,
    event_id     UUID        NOT NULL,
    tenant       TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    delivery_id  UUID,
    at           TIMESTAMPTZ NOT NULL,
    payload      JSONB       NOT NULL
);
CREATE INDEX socialpub_outbox_tenant ON socialpub_outbox (tenant, seq);
CREATE INDEX socialpub_outbox_at ON socialpub_outbox (at);
