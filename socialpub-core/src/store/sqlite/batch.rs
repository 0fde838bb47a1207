//! The group commit of transitions and commit points: each batch in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Connection;
use uuid::Uuid;

use super::connections::{Kept, Writer};
use super::rows::{Before, select_delivery, write_step};
use super::{SqliteStore, db, immediate};
use crate::error::Result;
use crate::schedule::{Delivery, Fenced};
use crate::store::common::{BatchWrite, OpResult, WriteOp, apply_batch};

impl SqliteStore {
    /// A transition or commit point: through the group-commit task, or directly (a batch of
    /// one) when there is none.
    pub(super) async fn write(&self, op: WriteOp) -> Result<Fenced<Delivery>> {
        let op = match &self.inner.batcher {
            Some(b) => match b.submit(op).await {
                Ok(result) => return result,
                Err(op) => op,
            },
            None => op,
        };
        let writer = BatchWriter {
            writer: self.inner.writer.clone(),
        };
        writer
            .write_batch(vec![op])
            .await?
            .pop()
            .unwrap_or(Ok(Fenced::Stale))
    }
}

/// Writes batches of transitions and commit points, each batch in one `BEGIN IMMEDIATE`
/// transaction run whole on the writer thread.
pub(super) struct BatchWriter {
    pub(super) writer: Arc<Writer>,
}

/// Takes the deliveries `ops` name (as kept, or read), applies the ops in order and writes
/// back what changed, in one transaction; keeps the rows written.
fn write_batch_now(
    conn: &mut Connection,
    kept: &mut Kept,
    ops: &[WriteOp],
) -> Result<Vec<OpResult>> {
    let tx = immediate(conn)?;
    let version = kept.check(&tx)?;
    // In key order: neighbouring reads share B-tree pages.
    let mut ids: Vec<Uuid> = ops.iter().map(WriteOp::id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut by_id = HashMap::with_capacity(ids.len());
    for id in ids {
        // Taken out: should this transaction fail, the row is read afresh next time.
        let d = match kept.rows.remove(&id) {
            Some(d) => Some(d),
            None => select_delivery(&tx, id)?,
        };
        if let Some(d) = d {
            let before = Before::of(&d);
            by_id.insert(id, (d, before));
        }
    }
    let (results, changed) = apply_batch(ops, by_id);
    for c in &changed {
        write_step(&tx, &c.delivery, &c.read_with, &c.history, &c.events)?;
    }
    tx.commit().map_err(db("cannot commit a SQLite write"))?;
    for c in changed {
        kept.keep(version, c.delivery);
    }
    Ok(results)
}

#[async_trait]
impl BatchWrite for BatchWriter {
    async fn write_batch(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
        self.writer
            .run_keeping(move |conn, kept| write_batch_now(conn, kept, &ops))
            .await
    }
}
