//! Inserts of new deliveries with their first history entries and events.

use rusqlite::{Connection, params};

use super::rows::{insert_event, insert_history};
use super::{db, immediate};
use crate::error::{Error, Result};
use crate::schedule::{Delivery, Event};
use crate::store::common::{micros, to_json, to_json_opt};

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// Inserts new deliveries with their first history entries, and `events`, in one transaction.
pub(super) fn insert_now(
    conn: &mut Connection,
    deliveries: &[Delivery],
    events: &[Event],
) -> Result<()> {
    let tx = immediate(conn)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                     post, state, due_at, run_at, attempt, max_attempts, deadline, fence,
                     lease_owner, lease_expires_at, checkpoint, committed_at, receipt,
                     last_error, had_failure, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )
            .map_err(db("cannot insert deliveries"))?;
        for d in deliveries {
            stmt.execute(params![
                d.id,
                d.post_id,
                d.tenant,
                d.target.platform.as_str(),
                d.target.account_id,
                to_json(&d.post)?,
                d.state.as_str(),
                micros(d.due_at),
                d.run_at.map(micros),
                i64::from(d.attempt),
                i64::from(d.max_attempts),
                d.deadline.map(micros),
                d.fence,
                d.lease.as_ref().map(|l| l.owner.as_str()),
                d.lease.as_ref().map(|l| micros(l.expires_at)),
                to_json_opt(d.checkpoint.as_ref())?,
                d.committed_at.map(micros),
                to_json_opt(d.receipt.as_ref())?,
                to_json_opt(d.last_error.as_ref())?,
                d.had_failure,
                micros(d.created_at),
                micros(d.updated_at),
            ])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::invalid_input("a delivery with one of these ids already exists")
                } else {
                    Error::storage(format!("cannot insert deliveries: {e}"), e)
                }
            })?;
        }
    }
    for d in deliveries {
        insert_history(&tx, &d.tenant, &d.inserted_entry())?;
    }
    for e in events {
        insert_event(&tx, e)?;
    }
    tx.commit().map_err(db("cannot commit new deliveries"))
}
