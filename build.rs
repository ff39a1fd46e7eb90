//! Puts the git commit into `tollgate --version` (and the build_info metric) when built from a checkout.
//! The variable is not called TOLLGATE_*: cargo also sets it for `cargo run` and `cargo test`, and tollgate reads
//! every TOLLGATE_* variable as a config key.
//! `TG_GIT_COMMIT` is the short commit, with `-dirty` for uncommitted changes, or `unknown` outside git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let commit = if dirty { format!("{commit}-dirty") } else { commit };
    println!("cargo:rustc-env=TG_GIT_COMMIT={commit}");
    // Rebuilt when HEAD moves or the index changes, not on every build. Git names the files: in a worktree
    // `.git` is a file, HEAD and the index are in the worktree's git directory and the branch refs in the
    // common one.
    let git_dir = git(&["rev-parse", "--git-dir"]).unwrap_or_else(|| ".git".into());
    let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_else(|| git_dir.clone());
    let head = std::path::Path::new(&git_dir).join("HEAD");
    let mut watch = vec![head.clone(), std::path::Path::new(&git_dir).join("index")];
    if let Some(reference) =
        std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        watch.push(std::path::Path::new(&common).join(reference));
        watch.push(std::path::Path::new(&common).join("packed-refs"));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
