//! `tollgate init [DIR]`: a commented starter config, an accounts file and the example policy with its
//! tests, then the next steps. Never overwrites: if any of the files exists, nothing is written.

use std::path::{Path, PathBuf};

use crate::support::fs::{create_parent, write_replacing};

const CONFIG: &str = include_str!("starter/tollgate.yaml");
const ACCOUNTS: &str = include_str!("starter/accounts.yaml");

pub fn init(dir: &Path) -> Result<(), String> {
    let files: [(PathBuf, &str); 3] = [
        (dir.join("tollgate.yaml"), CONFIG),
        (dir.join("accounts.yaml"), ACCOUNTS),
        (dir.join("policies").join("default.yaml"), crate::policy::EXAMPLE_POLICY),
    ];
    let existing: Vec<String> =
        files.iter().filter(|(p, _)| p.exists()).map(|(p, _)| p.display().to_string()).collect();
    if !existing.is_empty() {
        return Err(format!("{} already exist(s); nothing was written (init never overwrites)", existing.join(", ")));
    }
    for (path, text) in &files {
        create_parent(path).map_err(|e| e.to_string())?;
        write_replacing(path, text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let config = files[0].0.display();
    println!(
        "wrote {config}, {}, {}

next steps:
  1. set token.services (and token.issuer) in {config} to your registry's auth.token settings
  2. add accounts:   tollgate robot add ci-web --groups robots,ci-web --config {config}
     or connect your directory or IdP: docs/providers.md
  3. adapt the rules and their tests in {}, then: tollgate policy test {}
  4. check it all:   tollgate check-config --config {config}
  5. wire the registry: tollgate registry-config --config {config} --realm https://auth.example.com/token
  6. run it:        tollgate serve --config {config}",
        files[1].0.display(),
        files[2].0.display(),
        files[2].0.display(),
        dir.join("policies").display()
    );
    Ok(())
}
