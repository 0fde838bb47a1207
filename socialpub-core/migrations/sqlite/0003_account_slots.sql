-- One publish per account at a time across every process sharing the database: the delivery
-- publishing to an account holds its slot, renewed with its lease.
CREATE TABLE socialpub_account_slots (
    tenant     TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    account_id TEXT    NOT NULL,
    holder     BLOB    NOT NULL,
    held_until INTEGER NOT NULL,
    PRIMARY KEY (tenant, platform, account_id)
) WITHOUT ROWID;
