//! Active Directory's change feed for the directory watcher: `uSNChanged` polling, optionally woken by the
//! change notification control.
//!
//! Every object a DC writes gets the DC's next update sequence number in `uSNChanged`, and the root DSE's
//! `highestCommittedUSN` is the highest one committed. Each round reads that number first (one base search,
//! which is all an idle directory costs); when it moved past the last one looked at, the watched bases are
//! searched for `(uSNChanged>=LAST+1)` and the naming context for deleted objects in that range (show-deleted
//! control), and LAST becomes the number read at the start of the round, so an object committed during the
//! round is read again next time (the tracker reports an entry seen twice only once). LAST is persisted, so
//! a restarted watcher catches up on what changed while it was down.
//!
//! The first start ever reads the bases in full (paged) to learn the groups' members, and reports nothing.
//!
//! With `ad_notify`, a persistent search with LDAP_SERVER_NOTIFICATION_OID on the naming context wakes the
//! round as soon as the DC reports a write, instead of waiting for the next `poll_interval`.

use std::sync::Arc;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry};

use super::ctx::{track_attr, Ctx};
use super::track::id_of;
use crate::identity::ldap::pool::Op;

/// Active Directory's LDAP_SERVER_SHOW_DELETED_OID: deleted objects (tombstones) are returned too.
const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";
/// LDAP_SERVER_SHOW_RECYCLED_OID: tombstones that are "recycled" (Samba marks deleted objects so when the
/// recycle bin is off) are returned too.
const SHOW_RECYCLED_OID: &str = "1.2.840.113556.1.4.2064";

fn guid(entry: &SearchEntry) -> Option<String> {
    let name = "objectGUID";
    if let Some((_, v)) = entry.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        return v.first().map(|g| id_of(g));
    }
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|g| id_of(g.as_bytes()))
}

/// Run the feed on `ldap` until it fails; returns why. `root` is the root DSE read by the session.
pub async fn run(ctx: &Arc<Ctx>, mut ldap: Ldap, root: &SearchEntry, notify: bool) -> String {
    let naming_context = track_attr(root, "defaultNamingContext").into_iter().next().unwrap_or_default();
    let mut attrs = ctx.naming.attributes();
    attrs.push("objectGUID".into());
    attrs.push("uSNChanged".into());
    let last = ctx.tracker.lock().map(|t| t.usn).unwrap_or(None);
    if last.is_none() {
        let highest = match highest(ctx, &mut ldap).await {
            Ok(h) => h,
            Err(e) => return e,
        };
        for base in &ctx.bases {
            if let Err(e) = load(ctx, &mut ldap, base, &attrs).await {
                return e;
            }
        }
        if let Ok(mut t) = ctx.tracker.lock() {
            t.usn = Some(highest);
            tracing::info!(provider = %ctx.name, entries = t.len(), usn = highest, "directory watcher: first full read done");
        }
        ctx.touched();
    }
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    let _notifier = if notify && !naming_context.is_empty() {
        Some(Notifier(tokio::spawn(notifications(ctx.clone(), ldap.clone(), naming_context.clone(), wake_tx))))
    } else {
        drop(wake_tx);
        None
    };
    let mut first = true;
    loop {
        if let Err(e) = round(ctx, &mut ldap, &naming_context, &attrs).await {
            return e;
        }
        if first {
            first = false;
            ctx.in_sync();
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.settings.poll_interval) => {}
            Some(()) = wake.recv() => {}
        }
    }
}

/// The notification search; aborted when the session ends.
struct Notifier(tokio::task::JoinHandle<()>);

impl Drop for Notifier {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wake the poll on every change the DC notifies. Ends (and polling goes on alone) when the search fails.
async fn notifications(ctx: Arc<Ctx>, mut ldap: Ldap, base: String, wake: tokio::sync::mpsc::Sender<()>) {
    let control = RawControl { ctype: super::ctx::NOTIFY_OID.into(), crit: true, val: None };
    ctx.connector.count(Op::Search);
    let stream = ldap.with_controls(control).streaming_search(&base, Scope::Subtree, "(objectClass=*)", vec!["1.1"]);
    let mut stream = match stream.await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(provider = %ctx.name, error = %e, "change notification refused; polling uSNChanged only");
            return;
        }
    };
    loop {
        match stream.next().await {
            Ok(Some(_)) => {
                ctx.status.notifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = wake.try_send(());
            }
            Ok(None) => {
                let res = stream.finish().await;
                tracing::warn!(provider = %ctx.name, rc = res.rc, text = %res.text.trim(),
                    "change notification ended; polling uSNChanged only");
                return;
            }
            Err(e) => {
                tracing::warn!(provider = %ctx.name, error = %e, "change notification failed; polling uSNChanged only");
                return;
            }
        }
    }
}

async fn highest(ctx: &Ctx, ldap: &mut Ldap) -> Result<u64, String> {
    let root = ctx.root_dse(ldap, &["highestCommittedUSN"]).await?;
    track_attr(&root, "highestCommittedUSN")
        .first()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "the root DSE has no highestCommittedUSN: not Active Directory? (set watch.mode)".into())
}

/// Search `base` paged (Active Directory returns at most MaxPageSize entries, 1000 by default, per page),
/// with `controls`, handing each entry to `each`.
async fn paged(
    ctx: &Ctx,
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    attrs: &[String],
    controls: Vec<RawControl>,
    mut each: impl FnMut(SearchEntry),
) -> Result<(), String> {
    ctx.connector.count(Op::Search);
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(500))];
    if !controls.is_empty() {
        ldap.with_controls(controls);
    }
    let mut stream = ldap
        .with_timeout(ctx.connector.op_timeout)
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs.to_vec())
        .await
        .map_err(|e| format!("search of {base} for {filter}: {e}"))?;
    loop {
        match stream.next().await {
            Ok(Some(item)) => each(SearchEntry::construct(item)),
            Ok(None) => break,
            Err(e) => return Err(format!("search of {base} for {filter}: {e}")),
        }
    }
    stream.finish().await.success().map_err(|e| format!("search of {base} for {filter}: {e}"))?;
    Ok(())
}

/// Read `base` in full, reporting nothing: the first start's picture of users and groups.
async fn load(ctx: &Ctx, ldap: &mut Ldap, base: &str, attrs: &[String]) -> Result<(), String> {
    paged(ctx, ldap, base, "(|(objectClass=user)(objectClass=group))", attrs, Vec::new(), |entry| {
        if let (Some(id), Ok(mut t)) = (guid(&entry), ctx.tracker.lock()) {
            t.observe(&ctx.naming, id, &entry, false);
        }
    })
    .await
}

/// One poll: nothing but the root DSE when nothing was committed since the last.
async fn round(ctx: &Ctx, ldap: &mut Ldap, naming_context: &str, attrs: &[String]) -> Result<(), String> {
    let highest = highest(ctx, ldap).await?;
    let last = ctx.tracker.lock().map(|t| t.usn.unwrap_or(highest)).unwrap_or(highest);
    if highest <= last {
        return Ok(());
    }
    let filter = format!("(uSNChanged>={})", last + 1);
    let mut changes = Vec::new();
    for base in &ctx.bases {
        paged(ctx, ldap, base, &filter, attrs, Vec::new(), |entry| {
            if let (Some(id), Ok(mut t)) = (guid(&entry), ctx.tracker.lock()) {
                changes.extend(t.observe(&ctx.naming, id, &entry, true));
            }
        })
        .await?;
    }
    if !naming_context.is_empty() {
        let show_deleted = vec![
            RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None },
            RawControl { ctype: SHOW_RECYCLED_OID.into(), crit: false, val: None },
        ];
        let deleted = format!("(&(isDeleted=TRUE){filter})");
        paged(ctx, ldap, naming_context, &deleted, &["objectGUID".to_string()], show_deleted, |entry| {
            if let (Some(id), Ok(mut t)) = (guid(&entry), ctx.tracker.lock()) {
                changes.extend(t.remove(&ctx.naming, &id, true));
            }
        })
        .await?;
    }
    if let Ok(mut t) = ctx.tracker.lock() {
        t.usn = Some(highest);
    }
    ctx.touched();
    ctx.report(changes);
    Ok(())
}
