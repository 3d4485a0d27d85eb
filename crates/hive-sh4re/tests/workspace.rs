//! The workspace's manifests: every crate inherits its package fields and its
//! dependencies' versions from the root `Cargo.toml`, so a version or the MSRV
//! is written once.

use std::path::Path;

fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_crate_inherits_the_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ws = manifest(&root.join("Cargo.toml"));
    let ws_deps = ws["workspace"]["dependencies"].as_table().unwrap();
    let rust = ws["workspace"]["package"]["rust-version"].as_str().unwrap();
    assert!(
        rust.split('.').count() >= 2,
        "the workspace names its MSRV: {rust}"
    );
    let mut crates = 0;
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let path = dir.join("Cargo.toml");
        if !path.exists() {
            continue;
        }
        crates += 1;
        let m = manifest(&path);
        let package = m["package"].as_table().unwrap();
        for key in ["version", "edition", "rust-version", "license"] {
            assert_eq!(
                package.get(key).and_then(|v| v.get("workspace")),
                Some(&toml::Value::Boolean(true)),
                "{}: package.{key} should be `{key}.workspace = true`",
                path.display()
            );
        }
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = m.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (name, spec) in deps {
                assert_eq!(
                    spec.get("workspace"),
                    Some(&toml::Value::Boolean(true)),
                    "{}: {section}.{name} should take its version from [workspace.dependencies]",
                    path.display()
                );
                assert!(
                    ws_deps.contains_key(name),
                    "[workspace.dependencies] lacks {name}"
                );
            }
        }
    }
    assert!(crates >= 5, "found {crates} crates");
}
