//! Where the directory watchers' changes go in a running server: the invalidation path of the state in
//! force, on this replica and, through it, on every other.
//!
//! A watcher names an account whose entry changed (membership, disabled, locked, expired, deleted) or a
//! group whose members changed. Neither ends the account's refresh tokens by itself: its cached identity is
//! dropped everywhere ([`Subject::Membership`]), so the next login or refresh re-reads the directory and is
//! refused there if the account may no longer log in, or granted what its groups give it now. A group
//! change drops every cached identity in the group (the members just removed are among them) and the
//! members it has now (those just added).

use std::sync::Arc;

use crate::identity::watch::{Change, ChangeSink, LogSink};
use crate::invalidate::{Invalidator, Source, Subject};

/// The invalidation path of the state in force (a reload brings a new one); None once the server is gone.
pub type CurrentInvalidator = Box<dyn Fn() -> Option<Arc<Invalidator>> + Send + Sync>;

/// Hands each change to [`Invalidator::invalidate`] of the state in force.
pub struct InvalidatingSink {
    pub current: CurrentInvalidator,
}

/// The invalidations one change stands for.
pub fn subjects(change: Change) -> Vec<Subject> {
    match change {
        Change::Account { provider, username } => vec![Subject::Membership { provider: Some(provider), username }],
        Change::Group { provider, group, members } => {
            let mut out = vec![Subject::Group { name: group }];
            out.extend(
                members.into_iter().map(|username| Subject::Membership { provider: Some(provider.clone()), username }),
            );
            out
        }
    }
}

impl ChangeSink for InvalidatingSink {
    fn changed(&self, change: Change, at_ms: u64) {
        LogSink.changed(change.clone(), at_ms);
        let Some(invalidator) = (self.current)() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("a directory change arrived outside the runtime: not applied");
            return;
        };
        runtime.spawn(async move {
            for subject in subjects(change) {
                // The invalidation writes its own audit line and metric, failures included.
                let _ = invalidator.invalidate(subject, Some(at_ms), Source::LdapWatch).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_change_rereads_the_account_and_a_group_change_its_old_and_new_members() {
        let account = Change::Account { provider: "corp".into(), username: "alice".into() };
        assert_eq!(
            subjects(account),
            vec![Subject::Membership { provider: Some("corp".into()), username: "alice".into() }]
        );
        let group = Change::Group { provider: "corp".into(), group: "payments".into(), members: vec!["bob".into()] };
        assert_eq!(
            subjects(group),
            vec![
                Subject::Group { name: "payments".into() },
                Subject::Membership { provider: Some("corp".into()), username: "bob".into() },
            ]
        );
    }
}
