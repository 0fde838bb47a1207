//! The sealed-token half of the store: one row per account.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, Row, params};

use super::rows::get;
use super::{SqliteStore, db};
use crate::auth::{AccountKey, SealedToken, SealedTokenStore};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::store::common::micros;

fn account_from_row(row: &Row<'_>) -> Result<AccountKey> {
    let tenant: String = get(row, 0, "tenant")?;
    let platform: String = get(row, 1, "platform")?;
    let account_id: String = get(row, 2, "account_id")?;
    let platform = Platform::from_str(&platform).map_err(|_| {
        Error::new(
            ErrorKind::Storage,
            format!("a stored token has an unknown platform `{platform}`"),
        )
    })?;
    Ok(AccountKey::new(tenant, platform, account_id))
}

#[async_trait]
impl SealedTokenStore for SqliteStore {
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>> {
        let key = key.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT key_id, ciphertext FROM socialpub_tokens
                 WHERE tenant = ?1 AND platform = ?2 AND account_id = ?3",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![key.tenant, key.platform.as_str(), key.account_id],
                    |r| {
                        Ok(SealedToken {
                            key_id: r.get(0)?,
                            ciphertext: r.get(1)?,
                        })
                    },
                )
                .optional()
            })
            .map_err(db("cannot read a token"))
        })
        .await
    }

    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()> {
        let key = key.clone();
        self.write_with(move |conn| {
            conn.prepare_cached(
                "INSERT INTO socialpub_tokens
                     (tenant, platform, account_id, key_id, ciphertext, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, platform, account_id) DO UPDATE SET
                     key_id = excluded.key_id, ciphertext = excluded.ciphertext,
                     updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.tenant,
                    key.platform.as_str(),
                    key.account_id,
                    sealed.key_id,
                    sealed.ciphertext,
                    micros(Utc::now()),
                ])
            })
            .map_err(db("cannot store a token"))?;
            Ok(())
        })
        .await
    }

    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        let key = key.clone();
        self.write_with(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM socialpub_tokens
                     WHERE tenant = ?1 AND platform = ?2 AND account_id = ?3",
                    params![key.tenant, key.platform.as_str(), key.account_id],
                )
                .map_err(db("cannot delete a token"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT tenant, platform, account_id FROM socialpub_tokens
                     WHERE ?1 IS NULL OR tenant = ?1
                     ORDER BY tenant, platform, account_id",
                )
                .map_err(db("cannot list tokens"))?;
            let mut rows = s.query(params![tenant]).map_err(db("cannot list tokens"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db("cannot list tokens"))? {
                out.push(account_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }
}
