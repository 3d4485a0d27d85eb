//! Embeds the dashboard's built front end (`web/dist`, made by `npm run build`
//! in `web/`) into the binary, so an installed `hive-c0re` needs no source tree.
//! Without a build the binary still compiles; its dashboard then says what to run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let dist = web.join("dist");
    let files = built_files(&dist);
    // Cargo rescans a directory's files for changes; watch web/ until a build exists.
    let watch = if files.is_empty() { &web } else { &dist };
    println!("cargo:rerun-if-changed={}", watch.display());
    if files.is_empty() {
        println!(
            "cargo:warning=the dashboard's front end is not built ({} is missing): run `cd web && npm ci && npm run build`, then build hive-c0re again",
            dist.join("hive.html").display()
        );
    }
    let mut out = String::from(
        "/// The files of `web/dist`, by name, as built when hive-c0re was compiled.\n",
    );
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 name");
        let path = f.canonicalize().expect("a built file");
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

/// The regular files directly in `dist`, sorted; none unless it holds a build (`hive.html`).
fn built_files(dist: &Path) -> Vec<PathBuf> {
    if !dist.join("hive.html").is_file() {
        return vec![];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dist)
        .expect("web/dist is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some())
        .collect();
    files.sort();
    files
}
