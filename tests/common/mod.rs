//! Shared helpers for integration tests: where the third-party tools live.
//!
//! `scripts/test` installs every tool the tests need into `.tools/bin` (helm, kubectl) and
//! `.venv/bin` (kubernetes-validate, moto_server) and puts both on `PATH`. A test that needs a
//! tool the setup did not install fails loudly here; it is never skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Absolute path of a third-party tool installed by `scripts/test`.
///
/// Looks in `.tools/bin` and `.venv/bin` of the repository, then on `PATH`.
/// Panics with instructions when the tool is missing: tests never skip silently.
pub fn tool(name: &str) -> PathBuf {
    let root = repo_root();
    for dir in [root.join(".tools/bin"), root.join(".venv/bin")] {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    panic!(
        "required test tool `{name}` is not installed; run `scripts/test` (it installs helm, kubectl, \
         kubernetes-validate and moto into .tools/ and .venv/)"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
