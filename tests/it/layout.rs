//! The crate's import structure: every file under `src/` is a module, every path one module names in
//! another (a `use`, `crate::a::f()`, `super::X`, a child module's name) is an edge, and two rules hold:
//!
//! - no import circle: files that import each other, directly or round a loop, cannot be understood,
//!   tested or moved one at a time, so any circle fails CI and the message lists the edges to cut;
//! - imports point down `LAYERS`, the order a request travels: command line, server, HTTP, grant, state,
//!   policy, identity, storage, config, tokens, down to support. A lower unit reaching up fails CI, and
//!   so does a new top-level module until someone decides where it sits.
//!
//! The analysis is textual (comments, strings and `#[cfg(test)]` code removed, then paths read off the
//! tokens), which is enough for a crate that names modules plainly, and needs nothing but std.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level units from top to bottom; an import may only point to a unit further down.
#[rustfmt::skip]
const LAYERS: &[&str] = &[
    "main",
    "lib",
    "cli",
    "server",
    "http",
    "access",
    "grant",
    "authn",
    "app",
    "invalidate",
    "policy_store",
    "policy",
    "identity",
    "store",
    "token",
    "config",
    "scope",
    "telemetry",
    "support",
];

/// How the binary (src/main.rs) names the library: its paths lead into the same module tree.
const CRATE: &str = "tollgate";

/// A module's path below the library root: `["identity", "ldap"]`; the root itself is `[]`, the binary
/// `["main"]`.
type Module = Vec<String>;

struct Graph {
    files: BTreeMap<Module, String>,
    edges: BTreeSet<(Module, Module)>,
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("/")
    }
}

fn unit(m: &Module) -> &str {
    m.first().map_or("lib", String::as_str)
}

fn module_of(file: &str) -> Module {
    let mut m: Module = file.trim_end_matches(".rs").split('/').map(String::from).collect();
    if m.last().is_some_and(|s| s == "mod") || m == ["lib"] {
        m.pop();
    }
    m
}

/// Blanks comments, string and char literals, so that a `"crate::x"` or a `'{'` cannot pose as code.
fn strip(src: &str) -> String {
    let cs: Vec<char> = src.chars().collect();
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| cs.get(i + k) == Some(&c));
    let word = |i: Option<usize>| i.and_then(|i| cs.get(i)).is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let find = |from: usize, pat: &str| (from..cs.len()).find(|&j| at(j, pat)).unwrap_or(cs.len());
    let (mut out, mut i) = (String::new(), 0);
    while i < cs.len() {
        let hashes = cs[i + 1..].iter().take_while(|c| **c == '#').count();
        let raw = cs[i] == 'r'
            && cs.get(i + 1 + hashes) == Some(&'"')
            && (!word(i.checked_sub(1)) || (cs[i - 1] == 'b' && !word(i.checked_sub(2))));
        if at(i, "//") {
            i = find(i, "\n");
        } else if at(i, "/*") {
            // Block comments nest in Rust.
            let mut depth = 0;
            loop {
                let (open, close) = (at(i, "/*"), at(i, "*/"));
                (depth, i) = (depth + open as i32 - close as i32, i + 1 + (open || close) as usize);
                if depth == 0 || i >= cs.len() {
                    break;
                }
            }
            out.push(' ');
        } else if raw {
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            i = find(i + 2 + hashes, &close) + close.len();
            out.push_str("\"\"");
        } else if cs[i] == '"' {
            i += 1;
            while i < cs.len() && cs[i] != '"' {
                i += if cs[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if cs[i] == '\'' && cs.get(i + 1) == Some(&'\\') {
            // An escaped char: '\'' '\\' '\u{7f}'; the closing quote comes after the escaped character.
            i = find(i + 3, "'") + 1;
            out.push_str("' '");
        } else if cs[i] == '\'' && cs.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            // Anything else, including the quote of a lifetime ('a, 'static), is code.
            out.push(cs[i]);
            i += 1;
        }
    }
    out
}

/// Words, `::` and single punctuation characters; from the first `#[cfg(test)]` on, nothing: test
/// modules close the files here, and test code is not structure.
fn tokens(code: &str) -> Vec<String> {
    let cs: Vec<char> = code.chars().collect();
    let (mut out, mut i) = (Vec::<String>::new(), 0);
    while i < cs.len() {
        let start = i;
        if cs[i].is_alphanumeric() || cs[i] == '_' {
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
        } else {
            i += if cs[i] == ':' && cs.get(i + 1) == Some(&':') { 2 } else { 1 };
        }
        if !cs[start].is_whitespace() {
            out.push(cs[start..i].iter().collect());
        }
    }
    let cfg_test = ["#", "[", "cfg", "(", "test", ")", "]"];
    let end = out.windows(cfg_test.len()).position(|w| w == cfg_test).unwrap_or(out.len());
    out.truncate(end);
    out
}

fn is_word(t: &str) -> bool {
    t.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// The module file a path written in module `here` lands in: the longest prefix that is a file.
fn resolve(here: &[String], path: &[String], files: &BTreeMap<Module, String>) -> Option<Module> {
    let (first, rest) = path.split_first()?;
    let mut full: Module = match first.as_str() {
        "crate" | CRATE => rest.to_vec(),
        "self" => [here, rest].concat(),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            let base = here.get(..here.len().checked_sub(supers)?)?;
            [base, &path[supers..]].concat()
        }
        // A child module's name; the binary is no child of the library root.
        child
            if files.contains_key(&[here, &[child.to_string()]].concat()) && !(here.is_empty() && child == "main") =>
        {
            [here, path].concat()
        }
        _ => return None,
    };
    while !full.is_empty() && !files.contains_key(&full) {
        full.pop();
    }
    (!full.is_empty()).then_some(full)
}

/// The module files each file refers to. `mod x { ... }` blocks shift what `self` and `super` mean.
fn references(module: &Module, toks: &[String], files: &BTreeMap<Module, String>) -> BTreeSet<Module> {
    let (mut refs, mut scope, mut depth, mut i) = (BTreeSet::new(), Vec::<(Module, i32)>::new(), 0, 0);
    while i < toks.len() {
        let here = scope.last().map_or(module, |s| &s.0).clone();
        let tok = |k: usize| toks.get(k).map_or("", String::as_str);
        let mut paths = Vec::new();
        match tok(i) {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if scope.last().is_some_and(|s| s.1 == depth) {
                    scope.pop();
                }
            }
            "mod" if tok(i + 2) == "{" => scope.push(([&here[..], &[tok(i + 1).to_string()]].concat(), depth)),
            "use" => {
                // Flatten the tree: `open` holds the prefix length at each `{`; a path is complete at `,` `}` `;`.
                let (mut path, mut open, mut pending) = (Vec::new(), Vec::new(), false);
                while !matches!(tok(i + 1), ";" | "") {
                    i += 1;
                    match tok(i) {
                        "{" => {
                            open.push(path.len());
                            pending = false;
                        }
                        "," | "}" => {
                            if pending {
                                paths.push(path.clone());
                            }
                            if tok(i) == "}" {
                                open.pop();
                            }
                            path.truncate(open.last().copied().unwrap_or(0));
                            pending = false;
                        }
                        "as" => i += 1,
                        "::" => {}
                        "self" if !path.is_empty() => pending = true, // `a::{self, B}` names `a`
                        // Any segment; a `*` is dropped when the path resolves to its longest module prefix.
                        w => {
                            path.push(w.to_string());
                            pending = true;
                        }
                    }
                }
                if pending {
                    paths.push(path);
                }
            }
            // A path: `a::b...` not itself the tail of a longer path, nor a `pub(in a::b)` visibility.
            w if is_word(w)
                && tok(i + 1) == "::"
                && is_word(tok(i + 2))
                && (i == 0 || tok(i - 1) != "::")
                && !(i >= 2 && tok(i - 1) == "in" && tok(i - 2) == "(") =>
            {
                let mut path = vec![w.to_string()];
                while tok(i + 1) == "::" && is_word(tok(i + 2)) {
                    path.push(tok(i + 2).to_string());
                    i += 2;
                }
                paths.push(path);
            }
            _ => {}
        }
        refs.extend(paths.iter().filter_map(|p| resolve(&here, p, files)).filter(|m| m != module));
        i += 1;
    }
    refs
}

/// The graph of `(path below src/, source)` pairs.
fn analyse(sources: &[(&str, &str)]) -> Graph {
    let files: BTreeMap<Module, String> = sources.iter().map(|(f, _)| (module_of(f), f.to_string())).collect();
    let mut edges = BTreeSet::new();
    for (file, src) in sources {
        let from = module_of(file);
        for to in references(&from, &tokens(&strip(src)), &files) {
            edges.insert((from.clone(), to));
        }
    }
    Graph { files, edges }
}

fn reachable<'a>(g: &'a Graph, from: &'a Module) -> BTreeSet<&'a Module> {
    let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
    while let Some(m) = todo.pop() {
        todo.extend(g.edges.iter().filter(|(a, b)| a == m && seen.insert(b)).map(|(_, b)| b));
    }
    seen
}

/// The strongly connected components of more than one file. A few dozen files: mutual reachability is
/// fast enough and plainly right.
fn circles(g: &Graph) -> Vec<Vec<Module>> {
    let reach: BTreeMap<&Module, BTreeSet<&Module>> = g.files.keys().map(|m| (m, reachable(g, m))).collect();
    let mut out: Vec<Vec<Module>> = Vec::new();
    for (m, from_m) in &reach {
        let circle: Vec<Module> = from_m.iter().filter(|o| reach[*o].contains(m)).map(|o| (*o).clone()).collect();
        if circle.len() > 1 && !out.iter().any(|c| c.contains(m)) {
            out.push(circle);
        }
    }
    out
}

fn describe_circle(g: &Graph, circle: &[Module]) -> String {
    let names: Vec<String> = circle.iter().map(name).collect();
    let mut s = format!("import circle of {} files: {}", circle.len(), names.join(", "));
    for (a, b) in g.edges.iter().filter(|(a, b)| circle.contains(a) && circle.contains(b)) {
        s += &format!("\n    {} -> {}", name(a), name(b));
    }
    s
}

/// Units missing from `layers`, then every edge from a unit to one above it.
fn layer_problems(g: &Graph, layers: &[&str]) -> Vec<String> {
    let pos = |u: &str| layers.iter().position(|l| *l == u);
    let mut out = Vec::new();
    let mut unlisted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (m, file) in g.files.iter().filter(|(m, _)| pos(unit(m)).is_none()) {
        unlisted.entry(unit(m)).or_default().push(file);
    }
    for (u, files) in unlisted {
        out.push(format!("unit `{u}` ({}) is not in LAYERS: decide where it sits", files.join(", ")));
    }
    for (a, b) in &g.edges {
        let (ua, ub) = (unit(a), unit(b));
        if let (Some(pa), Some(pb)) = (pos(ua), pos(ub)) {
            if pa > pb {
                out.push(format!("{} -> {} ({ua} is below {ub})", g.files[a], g.files[b]));
            }
        }
    }
    out
}

fn report(g: &Graph, layers: &[&str]) -> String {
    let mut s = format!("layout: {} modules (files), {} edges; what each unit imports:", g.files.len(), g.edges.len());
    for u in layers {
        let imported: BTreeSet<&str> =
            g.edges.iter().filter(|(a, b)| unit(a) == *u && unit(b) != *u).map(|(_, b)| unit(b)).collect();
        let imported: Vec<&str> = layers.iter().copied().filter(|l| imported.contains(l)).collect();
        s += &format!("\n  {u:<13} -> {}", if imported.is_empty() { "(nothing)".into() } else { imported.join(", ") });
    }
    s
}

/// Every `.rs` file below `dir` as `(path relative to dir with '/', source)`.
fn read_tree(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.unwrap().path();
        let name = format!("{rel}{}", path.file_name().unwrap().to_str().unwrap());
        if path.is_dir() {
            read_tree(&path, &format!("{name}/"), out);
        } else if name.ends_with(".rs") {
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn the_crate_has_no_import_circle_and_imports_point_down() {
    let mut sources = Vec::new();
    read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut sources);
    let g = analyse(&sources.iter().map(|(f, s)| (f.as_str(), s.as_str())).collect::<Vec<_>>());
    let mut problems: Vec<String> = circles(&g).iter().map(|c| describe_circle(&g, c)).collect();
    problems.extend(layer_problems(&g, LAYERS));
    assert!(problems.is_empty(), "import structure broken (rules: tests/it/layout.rs):\n{}", problems.join("\n"));
    println!("{}", report(&g, LAYERS));
}

fn edges(g: &Graph) -> Vec<String> {
    let mut v: Vec<String> = g.edges.iter().map(|(a, b)| format!("{} -> {}", name(a), name(b))).collect();
    v.sort();
    v
}

fn circle_names(g: &Graph) -> Vec<Vec<String>> {
    circles(g).iter().map(|c| c.iter().map(name).collect()).collect()
}

#[test]
fn a_circle_through_a_braced_use_is_reported() {
    let g = analyse(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("a.rs", "use crate::{b::B, c::{C, deep::D as Deep}};\npub struct A;"),
        ("b.rs", "pub struct B(pub crate::a::A);"),
        ("c/mod.rs", "pub mod deep; pub struct C;"),
        ("c/deep.rs", "pub struct D;"),
    ]);
    assert_eq!(edges(&g), ["a -> b", "a -> c", "a -> c/deep", "b -> a"]);
    assert_eq!(circle_names(&g), [["a", "b"]]);
    assert!(describe_circle(&g, &circles(&g)[0]).contains("\n    b -> a"));
}

#[test]
fn a_circle_through_super_is_reported() {
    let g = analyse(&[
        ("lib.rs", "mod net; mod util;"),
        ("util.rs", "pub fn helper() {}"),
        ("net/mod.rs", "mod conn; mod wire; pub struct Limits;"),
        ("net/conn.rs", "use super::{wire::Frame, Limits};\npub struct Conn;\nfn f() { super::super::util::helper() }"),
        ("net/wire.rs", "pub struct Frame;\nfn g(c: super::conn::Conn) {}"),
    ]);
    assert_eq!(edges(&g), ["net/conn -> net", "net/conn -> net/wire", "net/conn -> util", "net/wire -> net/conn"]);
    assert_eq!(circle_names(&g), [["net/conn", "net/wire"]]);
}

#[test]
fn a_circle_through_a_child_module_path_is_reported() {
    let g = analyse(&[
        ("lib.rs", "pub mod identity;"),
        (
            "identity/mod.rs",
            "pub mod accounts;\npub struct Kind;\nfn f(s: &S) -> accounts::AccountEntry { s.accounts.get() }",
        ),
        ("identity/accounts.rs", "pub struct AccountEntry(crate::identity::Kind);"),
    ]);
    assert_eq!(edges(&g), ["identity -> identity/accounts", "identity/accounts -> identity"]);
    assert_eq!(circle_names(&g), [["identity", "identity/accounts"]]);
}

#[test]
fn an_upward_import_and_an_unlisted_unit_are_reported() {
    let g = analyse(&[
        ("lib.rs", "pub mod app; pub mod store; pub mod extra;"),
        ("app.rs", "pub struct State(crate::store::Db);"),
        ("store.rs", "pub struct Db;\npub(crate) fn open(s: &crate::app::State) {}"),
        ("extra.rs", "use crate::app::State;"),
    ]);
    assert_eq!(edges(&g), ["app -> store", "extra -> app", "store -> app"]);
    assert_eq!(
        layer_problems(&g, &["lib", "app", "store"]),
        ["unit `extra` (extra.rs) is not in LAYERS: decide where it sits", "store.rs -> app.rs (store is below app)"]
    );
}

#[test]
fn comments_strings_chars_and_test_code_make_no_edge() {
    let a = r##"
        //! Uses crate::x for everything.
        /* crate::x::y /* nested */ crate::x */
        fn f<'a>(s: &'a str) -> bool {
            let _ = ("crate::x::y", r#"crate::x "quoted""#, b"crate::x", '"', '{', '\'', b'\\');
            s == "}" && crate::y::go()
        }
        #[cfg(test)]
        mod tests { use crate::x::Thing; }
    "##;
    let g = analyse(&[("lib.rs", ""), ("a.rs", a), ("x.rs", ""), ("y.rs", "")]);
    assert_eq!(edges(&g), ["a -> y"]);
}

#[test]
fn a_clean_tree_passes() {
    let g = analyse(&[
        ("lib.rs", "pub mod app; pub mod store;\npub use app::run;"),
        ("main.rs", "use tollgate::app;\nfn main() { app::run() }"),
        (
            "app.rs",
            "pub(crate) use crate::store::Db as Storage;\nuse self::inner::X;\npub fn run() {}
            mod inner { use super::super::store::*; pub struct X; }",
        ),
        ("store.rs", "pub struct Db;"),
    ]);
    assert_eq!(edges(&g), ["app -> store", "lib -> app", "main -> app"]);
    assert!(circles(&g).is_empty());
    assert!(layer_problems(&g, &["main", "lib", "app", "store"]).is_empty());
    assert!(report(&g, &["main", "lib", "app", "store"]).contains("\n  app           -> store"));
}
