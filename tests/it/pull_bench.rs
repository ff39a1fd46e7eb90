//! The end-to-end comparison against the usual alternative: pulling the same 20-layer image with skopeo from
//! registry 2.8 behind tollgate (token auth) and from registry 2.8 with its own `auth: htpasswd:` (a bcrypt
//! htpasswd file), alternating runs on the same machine. Run by `scripts/bench.sh`; ignored in the suite
//! (the normal tests already prove both set-ups work; this one prints figures).

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::rig::oci::oci_image_layers;
use crate::rig::*;

const LAYERS: usize = 20;
const LAYER_BYTES: usize = 256 * 1024;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Pull `image` with skopeo into a fresh directory; returns the wall time (skopeo start to exit).
fn pull(skopeo: &Skopeo, image: &str, creds: (&str, &str), scratch: &std::path::Path, i: usize) -> Duration {
    let dest = scratch.join(format!("pull-{i}"));
    let t = Instant::now();
    skopeo.copy(image, &format!("dir:{}", dest.display()), Some(creds)).assert_ok();
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(&dest);
    took
}

#[test]
#[ignore = "benchmark: run scripts/bench.sh"]
fn bench_pull_20_layers_token_against_htpasswd() {
    let rounds: usize = std::env::var("BENCH_PULLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let cost: u32 = std::env::var("BENCH_BCRYPT_COST").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let layout = oci_image_layers(tmp.path(), "pull-bench", LAYERS, LAYER_BYTES);
    let image = format!("oci:{}:latest", layout.display());
    let skopeo = Skopeo::new();

    // tollgate in token mode (warm identity cache after the push), static account alice.
    let env = TestEnv::new();
    let tg = env.start();
    let token_reg = env.registry(&tg);
    skopeo.copy(&image, &token_reg.docker_ref("payments/api:1"), Some(ALICE)).assert_ok();

    // The same registry binary with htpasswd: bcrypt at `cost` (htpasswd -B uses 5 unless told otherwise).
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{}:{}\n", ALICE.0, bcrypt::hash(ALICE.1, cost).unwrap())).unwrap();
    let basic_reg = Registry::start(RegistryOptions { htpasswd: Some(htpasswd), ..Default::default() });
    skopeo.copy(&image, &basic_reg.docker_ref("payments/api:1"), Some(ALICE)).assert_ok();

    println!(
        "\n## Pull of a {LAYERS}-layer image ({} KiB per layer) with skopeo, {rounds} alternating rounds",
        LAYER_BYTES / 1024
    );
    println!("{:<6} {:>16} {:>16}", "round", "tollgate token", format!("htpasswd bcrypt {cost}"));
    let (mut token, mut basic) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first, so a drift in background load hits both equally.
        let (a, b) = if i % 2 == 0 {
            let a = pull(&skopeo, &token_reg.docker_ref("payments/api:1"), ALICE, tmp.path(), i);
            (a, pull(&skopeo, &basic_reg.docker_ref("payments/api:1"), ALICE, tmp.path(), i))
        } else {
            let b = pull(&skopeo, &basic_reg.docker_ref("payments/api:1"), ALICE, tmp.path(), i);
            (pull(&skopeo, &token_reg.docker_ref("payments/api:1"), ALICE, tmp.path(), i), b)
        };
        println!("{i:<6} {a:>16.1?} {b:>16.1?}");
        token.push(a);
        basic.push(b);
    }
    let (t, b) = (median(token.clone()), median(basic.clone()));
    println!(
        "HEADLINE pull median: tollgate token {t:.1?}, htpasswd {b:.1?}: token/htpasswd {:.2}x (min/max token {:.1?}/{:.1?}, htpasswd {:.1?}/{:.1?})",
        t.as_secs_f64() / b.as_secs_f64(),
        token.iter().min().unwrap(),
        token.iter().max().unwrap(),
        basic.iter().min().unwrap(),
        basic.iter().max().unwrap()
    );
}
