//! Hand-written OCI image layouts, so tests need no image engine and no network to have something to
//! push.
//!
//! Each image has one uncompressed tar layer holding one file whose content includes a caller-chosen
//! marker: different markers give different layer, config and manifest digests, so a test can tell
//! which image a registry served and two tests never share blobs by accident.

use std::path::{Path, PathBuf};

/// The tag written into `index.json`; use the layout as `oci:DIR:latest`.
pub const TAG: &str = "latest";

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Writes an OCI image layout into a new directory under `dir` and returns that directory (use it as
/// `oci:{path}:latest`). The subdirectory is named after the manifest digest, so several images can be
/// written into the same parent.
///
/// Note that skopeo and podman gzip an uncompressed layer when pushing to a registry (containers/image
/// always compresses for `docker://` destinations), so the digest in the registry differs from
/// [`manifest_digest`] of the layout; the marker still makes them unique.
pub fn oci_image(dir: &Path, marker: &str) -> PathBuf {
    let file = format!("tollgate rig test image\nmarker: {marker}\n");
    layout(dir, marker, vec![tar_one_file("tollgate-marker.txt", file.as_bytes())])
}

/// An image of `count` layers of `size` bytes each (pseudo-random, so gzip cannot shrink them to nothing),
/// unique per `marker`: the many-layer pull of the benchmarks.
pub fn oci_image_layers(dir: &Path, marker: &str, count: usize, size: usize) -> PathBuf {
    let mut seed =
        marker.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let layers = (0..count)
        .map(|i| {
            let content: Vec<u8> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            tar_one_file(&format!("layer-{i}.bin"), &content)
        })
        .collect();
    layout(dir, marker, layers)
}

/// Write an OCI layout holding one image made of `layers` (uncompressed tars).
fn layout(dir: &Path, marker: &str, layers: Vec<Vec<u8>>) -> PathBuf {
    let digests: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "org.tollgate.rig.marker": marker } },
        "rootfs": { "type": "layers", "diff_ids": &digests },
        "history": [{ "created_by": "tollgate rig oci_image()" }],
    });
    let config = serde_json::to_vec(&config).expect("serialize config");
    let config_digest = sha256(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": &config_digest, "size": config.len() },
        "layers": layers.iter().zip(&digests).map(|(l, d)| serde_json::json!({ "mediaType": LAYER_TYPE, "digest": d, "size": l.len() })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).expect("serialize manifest");
    let manifest_digest = sha256(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": &manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": TAG },
            "platform": { "architecture": "amd64", "os": "linux" },
        }],
    });

    let hex = manifest_digest.trim_start_matches("sha256:");
    let root = dir.join(format!("oci-{}", &hex[..16]));
    let blobs = root.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("create OCI layout dirs");
    for (digest, bytes) in digests.iter().zip(&layers).chain([(&config_digest, &config), (&manifest_digest, &manifest)])
    {
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).expect("write blob");
    }
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).expect("serialize index"))
        .expect("write index.json");
    root
}

/// The manifest digest (`sha256:…`) recorded in a layout's `index.json`.
pub fn manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    index["manifests"][0]["digest"].as_str().expect("index.json has a manifest digest").to_string()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A POSIX ustar archive holding one regular file: a 512-byte header, the content padded to 512 bytes,
/// and the two zero blocks that end an archive.
fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name must fit the 100-byte field");
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut h, 0, name.as_bytes()); // name
    put(&mut h, 100, b"0000644\0"); // mode
    put(&mut h, 108, b"0000000\0"); // uid
    put(&mut h, 116, b"0000000\0"); // gid
    put(&mut h, 124, format!("{:011o}\0", content.len()).as_bytes()); // size
                                                                      // A fixed mtime keeps the digest a function of the marker alone.
    put(&mut h, 136, format!("{:011o}\0", 1_700_000_000u64).as_bytes()); // mtime
    put(&mut h, 148, b"        "); // checksum: computed over the header with this field as spaces
    h[156] = b'0'; // typeflag: regular file
    put(&mut h, 257, b"ustar\0"); // magic
    put(&mut h, 263, b"00"); // version
    put(&mut h, 265, b"root"); // uname
    put(&mut h, 297, b"root"); // gname
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    // Six octal digits, NUL, space: the traditional layout every tar reader accepts.
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());

    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}
