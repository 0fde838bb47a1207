//! The sealed-token half of the store: one row per account.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;

use super::PostgresStore;
use crate::auth::{AccountKey, SealedToken, SealedTokenStore};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::store::common::db;

fn account_from_row(row: &sqlx::postgres::PgRow) -> Result<AccountKey> {
    let tenant: String = row.try_get(0).map_err(db("cannot read a token row"))?;
    let platform: String = row.try_get(1).map_err(db("cannot read a token row"))?;
    let account_id: String = row.try_get(2).map_err(db("cannot read a token row"))?;
    let platform = Platform::from_str(&platform).map_err(|_| {
        Error::new(
            ErrorKind::Storage,
            format!("a stored token has an unknown platform `{platform}`"),
        )
    })?;
    Ok(AccountKey::new(tenant, platform, account_id))
}

#[async_trait]
impl SealedTokenStore for PostgresStore {
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>> {
        let row = sqlx::query(
            "SELECT key_id, ciphertext FROM socialpub_tokens
             WHERE tenant = $1 AND platform = $2 AND account_id = $3",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db("cannot read a token"))?;
        row.map(|r| {
            Ok(SealedToken {
                key_id: r.try_get(0).map_err(db("cannot read a token"))?,
                ciphertext: r.try_get(1).map_err(db("cannot read a token"))?,
            })
        })
        .transpose()
    }

    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO socialpub_tokens
                 (tenant, platform, account_id, key_id, ciphertext, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, platform, account_id) DO UPDATE SET
                 key_id = excluded.key_id, ciphertext = excluded.ciphertext,
                 updated_at = excluded.updated_at",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .bind(&sealed.key_id)
        .bind(&sealed.ciphertext)
        .bind(Utc::now())
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot store a token"))?;
        Ok(())
    }

    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM socialpub_tokens WHERE tenant = $1 AND platform = $2 AND account_id = $3",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot delete a token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        let rows = sqlx::query(
            "SELECT tenant, platform, account_id FROM socialpub_tokens
             WHERE $1::TEXT IS NULL OR tenant = $1
             ORDER BY tenant, platform, account_id",
        )
        .bind(tenant)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("cannot list tokens"))?;
        rows.iter().map(account_from_row).collect()
    }
}
