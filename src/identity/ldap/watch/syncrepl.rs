//! RFC 4533 content synchronisation (refreshAndPersist) for the directory watcher: what OpenLDAP's `syncprov`
//! overlay serves.
//!
//! One search per watched base, all on the watcher's connection. The refresh phase brings the client up to
//! date: with a cookie, only what changed since it (changed entries in full, deleted ones by entryUUID, or a
//! present phase listing every entry still there, from which the deletions follow); without one, every
//! entry, compared with what the watcher knew (nothing is reported on the very first load). Then the
//! persist phase sends each change as it happens. Every cookie the server sends is kept, so the next session
//! resumes from it; a server that no longer accepts it (`e-syncRefreshRequired`, 4096) makes the watcher
//! drop it and refresh in full.
//!
//! A deletion is applied only to an entry known under the base whose search reports it: OpenLDAP 2.5's
//! session log replays an entry modified under ANOTHER base as a deletion in this one (seen with two
//! searches on one database: a group edited under the groups base comes back in the users base's
//! refreshDeletes set), which taken literally would report a live group as deleted.
//!
//! ldap3 parses the sync controls and messages with panics on malformed input; each parse runs under
//! `catch_unwind`, so a malformed message ends the session (and the supervisor reconnects) instead of the
//! task.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ldap3::controls::{ControlType, EntryState, MakeCritical as _, RefreshMode, SyncInfo, SyncRequest, SyncState};
use ldap3::{Ldap, ResultEntry, Scope, SearchEntry};

use super::ctx::Ctx;
use super::track::id_of;
use crate::identity::ldap::pool::Op;

/// How often the connection is proved alive with a root DSE read: a persist search on a silent directory
/// would otherwise not notice a connection that died without a reset.
const LIVENESS: Duration = Duration::from_secs(30);

/// Run the feed on `ldap` until it fails; returns why.
pub async fn run(ctx: &Arc<Ctx>, ldap: Ldap) -> String {
    let refreshed = Arc::new(AtomicUsize::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for base in ctx.bases.clone() {
        let (ctx, ldap, refreshed) = (ctx.clone(), ldap.clone(), refreshed.clone());
        streams.spawn(async move { follow(&ctx, ldap, &base, &refreshed).await });
    }
    let mut probe = ldap;
    let mut tick = tokio::time::interval(LIVENESS);
    tick.tick().await;
    loop {
        tokio::select! {
            ended = streams.join_next() => {
                return match ended {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => format!("sync search task: {e}"),
                    None => "no base to watch".into(),
                };
            }
            _ = tick.tick() => {
                if let Err(e) = ctx.root_dse(&mut probe, &["1.1"]).await {
                    return format!("liveness: {e}");
                }
            }
        }
    }
}

fn cookie_b64(c: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(c)
}

/// Follow one base: refresh, then persist, until the search ends or fails.
async fn follow(ctx: &Ctx, mut ldap: Ldap, base: &str, refreshed: &AtomicUsize) -> String {
    let (cookie, report_refresh) = match ctx.tracker.lock() {
        Ok(t) => (
            t.cookies.get(base).and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok()),
            t.knows_under(base),
        ),
        Err(_) => return "tracker poisoned".into(),
    };
    let had_cookie = cookie.is_some();
    let request = SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie, reload_hint: false };
    ctx.connector.count(Op::Search);
    let attrs = ctx.naming.attributes();
    let stream =
        ldap.with_controls(request.critical()).streaming_search(base, Scope::Subtree, "(objectClass=*)", attrs);
    let mut stream = match stream.await {
        Ok(s) => s,
        Err(e) => return format!("sync search on {base}: {e}"),
    };
    let mut refreshing = true;
    // Without a cookie the refresh sends every entry: what is not sent is gone.
    let mut present_phase = !had_cookie;
    let mut seen: HashSet<String> = HashSet::new();
    let set_cookie = |c: &Option<Vec<u8>>| {
        if let (Some(c), Ok(mut t)) = (c, ctx.tracker.lock()) {
            t.cookies.insert(base.to_string(), cookie_b64(c));
            ctx.touched();
        }
    };
    loop {
        let item = match stream.next().await {
            Ok(Some(item)) => item,
            Ok(None) => {
                let res = stream.finish().await;
                // e-syncRefreshRequired, or a cookie from the directory's future (it was restored from a
                // backup, or lost its last writes in a crash): the cookie is useless. Drop it; the next
                // session refreshes in full and reports what differs from what the watcher knew.
                if res.rc == 4096 || (res.rc == 53 && res.text.contains("newer than provider")) {
                    if let Ok(mut t) = ctx.tracker.lock() {
                        t.cookies.remove(base);
                    }
                    ctx.touched();
                    return format!(
                        "the directory refused the cookie of {base} (rc={} {}); refreshing in full",
                        res.rc,
                        res.text.trim()
                    );
                }
                return format!("the sync search on {base} ended: rc={} {}", res.rc, res.text.trim());
            }
            Err(e) => return format!("sync search on {base}: {e}"),
        };
        if item.is_intermediate() {
            let info = match catch_unwind(AssertUnwindSafe(|| ldap3::controls::parse_syncinfo(item))) {
                Ok(i) => i,
                Err(_) => return "a malformed Sync Info message".into(),
            };
            let mut done = false;
            match info {
                SyncInfo::NewCookie(c) => set_cookie(&Some(c)),
                SyncInfo::RefreshDelete { cookie, refresh_done } => {
                    set_cookie(&cookie);
                    done = refresh_done;
                }
                SyncInfo::RefreshPresent { cookie, refresh_done } => {
                    set_cookie(&cookie);
                    present_phase = true;
                    done = refresh_done;
                }
                SyncInfo::SyncIdSet { cookie, refresh_deletes, sync_uuids } => {
                    set_cookie(&cookie);
                    if refresh_deletes {
                        let changes = match ctx.tracker.lock() {
                            Ok(mut t) => sync_uuids
                                .iter()
                                .flat_map(|u| t.remove_under(&ctx.naming, &id_of(u), base, true))
                                .collect(),
                            Err(_) => Vec::new(),
                        };
                        ctx.touched();
                        ctx.report(changes);
                    } else {
                        present_phase = true;
                        seen.extend(sync_uuids.iter().map(|u| id_of(u)));
                    }
                }
            }
            if done && refreshing {
                refreshing = false;
                end_refresh(ctx, base, present_phase, report_refresh, &seen);
                seen.clear();
                if refreshed.fetch_add(1, Ordering::Relaxed) + 1 == ctx.bases.len() {
                    ctx.in_sync();
                }
            }
            continue;
        }
        if item.is_ref() {
            continue;
        }
        let Some(state) = sync_state(&item) else { continue };
        let state = match state {
            Ok(s) => s,
            Err(()) => return "a malformed Sync State control".into(),
        };
        set_cookie(&state.cookie);
        let id = id_of(&state.entry_uuid);
        let entry = SearchEntry::construct(item);
        let changes = match ctx.tracker.lock() {
            Ok(mut t) => match state.state {
                EntryState::Present => {
                    seen.insert(id);
                    Vec::new()
                }
                EntryState::Add | EntryState::Modify => {
                    seen.insert(id.clone());
                    t.observe(&ctx.naming, id, &entry, !refreshing || report_refresh)
                }
                EntryState::Delete => t.remove_under(&ctx.naming, &id, base, true),
            },
            Err(_) => Vec::new(),
        };
        ctx.touched();
        if !changes.is_empty() {
            tracing::debug!(provider = %ctx.name, dn = %entry.dn, changes = changes.len(), "sync: entry changed");
        }
        ctx.report(changes);
    }
}

/// The Sync State control of an entry: None when it has none, Err when it does not parse.
fn sync_state(item: &ResultEntry) -> Option<Result<SyncState, ()>> {
    let control = item.1.iter().find(|c| matches!(c.0, Some(ControlType::SyncState)))?;
    Some(catch_unwind(AssertUnwindSafe(|| control.1.parse::<SyncState>())).map_err(|_| ()))
}

/// The refresh phase of `base` is over: with a present phase, whatever was known and not seen is gone.
fn end_refresh(ctx: &Ctx, base: &str, present_phase: bool, report: bool, seen: &HashSet<String>) {
    let changes = match ctx.tracker.lock() {
        Ok(mut t) if present_phase => {
            let gone: Vec<String> = t.ids_under(base).into_iter().filter(|id| !seen.contains(id)).collect();
            gone.iter().flat_map(|id| t.remove(&ctx.naming, id, report)).collect()
        }
        _ => Vec::new(),
    };
    ctx.touched();
    ctx.report(changes);
}
