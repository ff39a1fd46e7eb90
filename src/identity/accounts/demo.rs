//! The demo accounts' published passwords: the embedded demo config (`tollgate serve` without `--config`)
//! ships accounts whose passwords are in the README, so any other config carrying one of their hashes is
//! open to anyone, and is refused.

use std::sync::OnceLock;

use crate::config::accounts::AccountsFile;

/// The password hashes of the embedded demo config's accounts. Their passwords are published (README,
/// `tollgate serve` without `--config`), so an account carrying one is open to anyone: only the embedded
/// demo itself may use them.
pub fn demo_password_hashes() -> &'static [String] {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        // Read from the embedded text itself, so the list cannot drift from what the demo ships.
        crate::config::EMBEDDED_DEFAULT
            .lines()
            .filter_map(|l| l.trim().strip_prefix("password_hash:"))
            .map(|h| h.trim().trim_matches('"').to_string())
            .filter(|h| h.starts_with('$'))
            .collect()
    })
}

/// Problems for every account of `file` whose hash (current or previous) is a demo hash.
pub fn demo_hash_problems(origin: &str, file: &AccountsFile) -> Vec<String> {
    let demo = demo_password_hashes();
    let mut problems = Vec::new();
    for (i, a) in file.accounts.iter().enumerate() {
        for (field, hash) in
            [("password_hash", Some(&a.password_hash)), ("previous_password_hash", a.previous_password_hash.as_ref())]
        {
            if hash.is_some_and(|h| demo.contains(h)) {
                problems.push(format!(
                    "{origin}: accounts[{i}] ({:?}).{field}: the hash of a published demo password; only the \
                     embedded demo config may use it. Set a secret of your own (`tollgate hash-password`, or \
                     `tollgate robot rotate` for a robot)",
                    a.username
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::accounts::AccountEntry;

    fn entry(username: &str, hash: &str) -> AccountEntry {
        AccountEntry::with_hash(username, hash)
    }

    #[test]
    fn the_demo_hashes_are_read_from_the_embedded_config_and_found_in_an_accounts_file() {
        let demo = demo_password_hashes();
        assert_eq!(demo.len(), 4, "alice, bob, admin and the robot: {demo:?}");
        assert!(demo.iter().all(|h| h.starts_with("$argon2id$")), "{demo:?}");
        let mut rotated = entry("ci", "$2b$12$abcdefghijklmnopqrstuu0123456789012345678901234567890");
        rotated.previous_password_hash = Some(demo[3].clone());
        let file = AccountsFile {
            accounts: vec![entry("own", "$argon2id$v=19$m=19456,t=2,p=1$x$y"), entry("alice", &demo[0]), rotated],
        };
        let problems = demo_hash_problems("f.yaml", &file);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("f.yaml: accounts[1] (\"alice\").password_hash: the hash of a published demo password"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("f.yaml: accounts[2] (\"ci\").previous_password_hash:"), "{problems:?}");
    }
}
