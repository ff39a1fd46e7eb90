//! [`AccessTokenStore`] in Redis, for replicas: a token created, rotated or revoked on one replica is seen
//! by every other at its next request.
//!
//! Key layout (under `state.key_prefix`; every key carries the hash tag `{atok}`, so the pipelines that
//! touch several of them run on one Redis Cluster slot):
//! - `{atok}:rec:<id>`: the record as created (JSON, never the secret), expiring 30 days after the token;
//! - `{atok}:hmac:<hmac>`: the id of the token whose secret has this HMAC, expiring with the record;
//! - `{atok}:ids`: the set of ids (pruned of forgotten ones when listed);
//! - `{atok}:revoked:<id>`: when it was revoked (`SET NX`: the first revocation stays);
//! - `{atok}:end:<id>`: `{"ends":T,"to":"NEWID"}` once rotated;
//! - `{atok}:used:<id>`: the last use (JSON), and `{atok}:used-lock:<id>` held for a minute after each
//!   write (`SET NX EX 60`), which is what keeps every replica together to one write a minute.
//!
//! A record's fixed part and its changing parts live in separate keys, so that revoking, rotating and
//! recording a use never read-modify-write the record, and no two replicas can undo each other's change.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::access_tokens::{AccessTokenStore, TouchFilter, LAST_USED_EVERY};
use super::error::StoreError;
use super::redis::{Redis, RedisError};
use crate::support::time::unix_now;
use crate::support::BoxFuture;
use crate::token::access::{LastUsed, TokenRecord};

fn store_error(e: RedisError) -> StoreError {
    StoreError::AccessTokens(e.to_string())
}

#[derive(Debug, Serialize, Deserialize)]
struct End {
    ends: u64,
    to: String,
}

/// One token's keys as read: record, revoked, end, used.
type Row = (Option<String>, Option<u64>, Option<String>, Option<String>);

/// Access tokens in Redis.
pub struct RedisAccessTokens {
    redis: Arc<Redis>,
    filter: TouchFilter,
}

impl RedisAccessTokens {
    pub fn new(redis: Arc<Redis>) -> Self {
        RedisAccessTokens { redis, filter: TouchFilter::default() }
    }

    fn k(&self, rest: &str) -> String {
        self.redis.key(&format!("{{atok}}:{rest}"))
    }

    /// Add the keys of a new record to `pipe`.
    fn add_insert(&self, pipe: &mut redis::Pipeline, record: &TokenRecord) -> Result<(), StoreError> {
        let mut stored = record.clone();
        stored.last_used = None;
        let json = serde_json::to_string(&stored).map_err(|e| StoreError::AccessTokens(e.to_string()))?;
        let forget = record.forget_at();
        pipe.cmd("SET").arg(self.k(&format!("rec:{}", record.id))).arg(json).arg("EXAT").arg(forget).ignore();
        pipe.cmd("SET").arg(self.k(&format!("hmac:{}", record.hmac))).arg(&record.id).arg("EXAT").arg(forget).ignore();
        pipe.cmd("SADD").arg(self.k("ids")).arg(&record.id).ignore();
        Ok(())
    }

    /// The records of `ids`, their changing parts applied; forgotten ids come back as None.
    async fn load(&self, ids: &[String]) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("MGET")
                .arg(self.k(&format!("rec:{id}")))
                .arg(self.k(&format!("revoked:{id}")))
                .arg(self.k(&format!("end:{id}")))
                .arg(self.k(&format!("used:{id}")));
        }
        let rows: Vec<Row> = self.redis.run_pipe("MGET access token", &pipe).await.map_err(store_error)?;
        rows.into_iter()
            .zip(ids)
            .map(|((rec, revoked, end, used), id)| {
                let Some(rec) = rec else { return Ok(None) };
                let bad = |e: serde_json::Error| StoreError::AccessTokens(format!("token {id}: not valid JSON: {e}"));
                let mut r: TokenRecord = serde_json::from_str(&rec).map_err(bad)?;
                r.revoked = revoked;
                if let Some(end) = end {
                    let end: End = serde_json::from_str(&end).map_err(bad)?;
                    r.expires = r.expires.min(end.ends);
                    r.rotated_to = Some(end.to);
                }
                r.last_used = used.map(|u| serde_json::from_str(&u)).transpose().map_err(bad)?;
                Ok(Some(r))
            })
            .collect()
    }

    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        let n: u64 = self
            .redis
            .run("EXISTS access token", redis::cmd("EXISTS").arg(self.k(&format!("rec:{id}"))))
            .await
            .map_err(store_error)?;
        Ok(n > 0)
    }
}

impl AccessTokenStore for RedisAccessTokens {
    fn insert<'a>(&'a self, record: TokenRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            self.add_insert(&mut pipe, &record)?;
            self.redis.run_pipe::<()>("insert access token", &pipe).await.map_err(store_error)
        })
    }

    fn find<'a>(&'a self, hmac: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let id: Option<String> = self
                .redis
                .run("GET access token", redis::cmd("GET").arg(self.k(&format!("hmac:{hmac}"))))
                .await
                .map_err(store_error)?;
            let Some(id) = id else { return Ok(None) };
            Ok(self.load(&[id]).await?.pop().flatten())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let ids: Vec<String> = self
                .redis
                .run("SMEMBERS access tokens", redis::cmd("SMEMBERS").arg(self.k("ids")))
                .await
                .map_err(store_error)?;
            let loaded = self.load(&ids).await?;
            let gone: Vec<&String> = ids.iter().zip(&loaded).filter(|(_, r)| r.is_none()).map(|(id, _)| id).collect();
            if !gone.is_empty() {
                let mut cmd = redis::cmd("SREM");
                cmd.arg(self.k("ids")).arg(gone);
                self.redis.run::<()>("SREM access tokens", &cmd).await.map_err(store_error)?;
            }
            let mut out: Vec<TokenRecord> = loaded.into_iter().flatten().collect();
            out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            Ok(out)
        })
    }

    fn revoke<'a>(&'a self, id: &'a str, at: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if !self.exists(id).await? {
                return Ok(false);
            }
            let mut cmd = redis::cmd("SET");
            let forget = at.saturating_add(TokenRecord::KEPT_AFTER_END);
            cmd.arg(self.k(&format!("revoked:{id}"))).arg(at).arg("NX").arg("EXAT").arg(forget);
            self.redis.run::<Option<String>>("revoke access token", &cmd).await.map_err(store_error)?;
            Ok(true)
        })
    }

    fn rotate<'a>(&'a self, old: &'a str, ends: u64, new: TokenRecord) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(current) = self.load(&[old.to_string()]).await?.pop().flatten() else { return Ok(false) };
            let end = End { ends: current.expires.min(ends), to: new.id.clone() };
            let json = serde_json::to_string(&end).map_err(|e| StoreError::AccessTokens(e.to_string()))?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("SET")
                .arg(self.k(&format!("end:{old}")))
                .arg(json)
                .arg("EXAT")
                .arg(current.forget_at().max(unix_now() + 1))
                .ignore();
            self.add_insert(&mut pipe, &new)?;
            self.redis.run_pipe::<()>("rotate access token", &pipe).await.map_err(store_error)?;
            Ok(true)
        })
    }

    fn touch<'a>(&'a self, id: &'a str, used: LastUsed) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if !self.filter.admit(id, used.at) {
                return Ok(false);
            }
            let mut lock = redis::cmd("SET");
            lock.arg(self.k(&format!("used-lock:{id}"))).arg(1).arg("NX").arg("EX").arg(LAST_USED_EVERY);
            let won: Option<String> = self.redis.run("SET NX last used", &lock).await.map_err(store_error)?;
            if won.is_none() {
                return Ok(false);
            }
            let json = serde_json::to_string(&used).map_err(|e| StoreError::AccessTokens(e.to_string()))?;
            let mut set = redis::cmd("SET");
            let keep = used.at.saturating_add(TokenRecord::KEPT_AFTER_END + 366 * 24 * 3600);
            set.arg(self.k(&format!("used:{id}"))).arg(json).arg("EXAT").arg(keep);
            self.redis.run::<()>("SET last used", &set).await.map_err(store_error)?;
            Ok(true)
        })
    }
}
