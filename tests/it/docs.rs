//! Every `tollgate` command shown in README.md and docs/*.md runs as written.
//!
//! The `sh` blocks of each file are read in order, lines continued with `\` joined. Every command whose
//! programs are only `tollgate` (and `printf`/`echo` feeding it) is run with `sh -c`, exactly as written,
//! in a fresh directory made the way the README says a user starts: `tollgate init`, the repository's
//! `policies/`, and a server that ran once (so it has its data and a robot's refresh token to revoke).
//! Commands that also need other programs or a real deployment (kubectl, curl to example.com, sudo) are
//! listed as skipped, with the reason, so the list stays visible. A file's commands share one directory,
//! so a `robot add` early in a file is what a `robot rotate` later in it works on.
//!
//! A worked example that needs other programs (`openssl`, `python3`) and files written with here-documents
//! is written in blocks marked `sh script`: those blocks of a file run in order as ONE `sh -eu` script in an
//! empty directory, with tollgate on the PATH, and must succeed as written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ops::tollgate_bin;

/// Programs a runnable command may use besides `tollgate`.
const HELPERS: [&str; 2] = ["printf", "echo"];

/// The `sh` blocks' commands of a Markdown file, continuation lines joined, comments kept.
pub(crate) fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            in_sh = !in_sh && matches!(t.trim_start_matches('`').trim(), "sh" | "bash" | "shell");
            pending.clear();
            continue;
        }
        if !in_sh {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                if !pending.trim().is_empty() && !pending.trim_start().starts_with('#') {
                    out.push(std::mem::take(&mut pending));
                }
                pending.clear();
            }
        }
    }
    out
}

/// The programs a command line runs: the first word of each pipeline stage (after `sudo`, `VAR=x`).
pub(crate) fn programs(command: &str) -> Vec<String> {
    let code = strip_comment(command);
    code.split(['|', ';'])
        .filter_map(|stage| stage.split_whitespace().find(|w| !w.contains('=')).map(str::to_string))
        .collect()
}

/// The command without a trailing ` # comment` (a `#` inside quotes stays).
fn strip_comment(command: &str) -> String {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in command.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return command[..i].trim_end().to_string(),
            _ => {}
        }
        prev = c;
    }
    command.trim_end().to_string()
}

/// Why a command that calls tollgate is not run here, or None to run it.
fn skip_reason(command: &str) -> Option<String> {
    let progs = programs(command);
    if !progs.iter().any(|p| p == "tollgate") {
        return Some("does not run tollgate".into());
    }
    if let Some(other) = progs.iter().find(|p| *p != "tollgate" && !HELPERS.contains(&p.as_str())) {
        return Some(format!("needs {other}"));
    }
    if strip_comment(command).contains('$') {
        return Some("uses shell variables set by an earlier step outside tollgate".into());
    }
    None
}

/// A directory set up as a user following the README has it, with a robot's refresh token.
fn demo_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = Command::new(tollgate_bin()).args(args).current_dir(d).env_remove("TOLLGATE_CONFIG").output().unwrap();
        assert!(o.status.success(), "tollgate {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    run(&["init", "."]);
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), &d.join("policies"));
    let secret = run(&["robot", "add", "docs-bot", "--groups", "robots", "--config", "tollgate.yaml"]);
    // The server runs once: its data directory, and a refresh token as `docker login` gets one.
    let (mut child, addr) = crate::ops::serve_in(d, "tollgate.yaml");
    // The starter's service, as `docker login` asks for it.
    let auth = crate::harness::basic("docs-bot", &secret);
    let r = crate::rig::http_get(
        &addr,
        "/token?service=registry.example.com&offline_token=true&client_id=docker",
        &[("Authorization", &auth)],
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{}", r.body));
    let refresh = body["refresh_token"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    (dir, refresh)
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn every_tollgate_command_in_readme_and_docs_runs_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let bin_dir = Path::new(tollgate_bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let (mut ran, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let cmds: Vec<String> = commands(&std::fs::read_to_string(file).unwrap())
            .into_iter()
            .filter(|c| programs(c).iter().any(|p| p == "tollgate") || c.contains("tollgate "))
            .collect();
        if cmds.is_empty() {
            continue;
        }
        let (dir, refresh) = demo_dir();
        for cmd in cmds {
            if let Some(why) = skip_reason(&cmd) {
                skipped.push(format!("{name}: {} ({why})", cmd.trim()));
                continue;
            }
            let mut child = Command::new("sh")
                .args(["-c", &cmd])
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("TOLLGATE_CONFIG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write as _;
                let mut stdin = child.stdin.take().unwrap();
                // `--token -` reads the token to revoke from standard input.
                let _ = writeln!(stdin, "{refresh}");
            }
            let o = child.wait_with_output().unwrap();
            if o.status.success() {
                ran.push(format!("{name}: {}", cmd.trim()));
            } else {
                failed.push(format!(
                    "{name}: {}\n  exit {}: {}{}",
                    cmd.trim(),
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
    }
    println!("ran {} commands from the docs:\n  {}", ran.len(), ran.join("\n  "));
    println!("skipped {}:\n  {}", skipped.len(), skipped.join("\n  "));
    assert!(failed.is_empty(), "commands in the docs that fail as written:\n{}", failed.join("\n"));
    assert!(ran.len() >= 15, "only {} commands ran: is the extraction broken?\n{}", ran.len(), ran.join("\n"));
    for must in ["tollgate robot rotate", "tollgate token revoke", "tollgate policy test", "tollgate hash-password"] {
        assert!(ran.iter().any(|r| r.contains(must)), "no {must:?} among the commands run");
    }
}

/// The `sh script` blocks of a Markdown file, in order.
pub(crate) fn scripts(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            match current.take() {
                Some(block) => out.push(block),
                None if t.trim_start_matches('`').trim() == "sh script" => current = Some(String::new()),
                None => {}
            }
            continue;
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    out
}

#[test]
fn the_script_blocks_of_the_docs_run_in_order_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(tollgate_bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|x| x != "md") {
            continue;
        }
        let blocks = scripts(&std::fs::read_to_string(&file).unwrap());
        if blocks.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("sh")
            .args(["-euc", &blocks.join("\n")])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("TOLLGATE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(o.status.success(), "the sh script blocks of docs/{name} fail as written:\n{out}{err}");
        if name == "workload-identity.md" {
            // What the text around the blocks says they print.
            for want in ["username: gha:acme/app", "result:   granted [push, pull]", "result:   NOTHING GRANTED"] {
                assert!(out.contains(want), "docs/{name}: {want:?} not printed:\n{out}");
            }
            for want in ["the token has expired (exp)", "aud does not contain \"https://registry.example.com\""] {
                assert!(err.contains(want), "docs/{name}: {want:?} not printed:\n{err}");
            }
            assert_eq!(out.matches("exit status 1").count(), 2, "{out}");
        }
        ran.push(name);
    }
    assert!(ran.iter().any(|n| n == "workload-identity.md"), "no script blocks found: {ran:?}");
}

#[test]
fn the_extraction_joins_continuations_and_tells_programs_apart() {
    let md = "text\n```sh\ntollgate a \\\n  --b c   # note\n# comment\nprintf '%s' 'x # y' | tollgate hash-password\nsudo install tollgate /usr/bin/tollgate\n```\n```yaml\ntollgate: no\n```\n";
    let cmds = commands(md);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert_eq!(strip_comment(&cmds[0]).split_whitespace().collect::<Vec<_>>(), ["tollgate", "a", "--b", "c"]);
    assert_eq!(programs(&cmds[1]), ["printf", "tollgate"]);
    assert_eq!(skip_reason(&cmds[1]), None);
    assert_eq!(skip_reason(&cmds[2]), Some("does not run tollgate".into()));
    let md = "```sh script\ncat > a <<'EOF'\nx\nEOF\n```\n```sh\ntollgate man\n```\n```sh script\ntollgate x\n```\n";
    assert_eq!(scripts(md), ["cat > a <<'EOF'\nx\nEOF\n", "tollgate x\n"]);
    assert_eq!(commands(md), ["tollgate man"], "script blocks are not run one command at a time");
}
