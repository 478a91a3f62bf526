//! The source revision `secret-inject --version` prints (`SECRET_INJECT_REVISION` at compile
//! time): the environment variable of the same name when set (a release build from a source
//! tarball, the Dockerfile, whose build context has no `.git`), else `git rev-parse HEAD` when
//! this package is the top of a git checkout, else `unknown`.
//!
//! Cargo reruns this script only when the variable, this file or what `HEAD` resolves through
//! changes (the worktree's `HEAD` and reflog, the branch's loose ref, `packed-refs`), never for
//! an edit of the work tree: a new commit or checkout recompiles this crate alone, not its
//! dependencies, and the same commit always gives the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

const VARIABLE: &str = "SECRET_INJECT_REVISION";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={VARIABLE}");
    let revision = match std::env::var(VARIABLE) {
        Ok(value) => {
            if !valid(&value) {
                panic!(
                    "{VARIABLE}={value:?}: a revision is 1 to 64 letters, digits, '.', '_' or '-' \
                     (a commit id such as `git rev-parse HEAD` prints)"
                );
            }
            value
        }
        Err(_) => git_revision().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo::rustc-env={VARIABLE}={revision}");
}

fn valid(revision: &str) -> bool {
    (1..=64).contains(&revision.len())
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `HEAD`'s commit id, with the files that say where `HEAD` points watched; `None` outside a
/// git checkout of this package (a crate unpacked inside some other repository is not ours).
fn git_revision() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let output = Command::new("git")
        .arg("-C")
        .arg(&manifest_dir)
        .args([
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-dir",
            "--git-common-dir",
            "HEAD",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let stdout = String::from_utf8(output.stdout).ok()?;
    let [top, git_dir, common_dir, head] = stdout.lines().collect::<Vec<_>>()[..] else {
        return None;
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(top), &manifest_dir) || !valid(head) {
        return None;
    }
    let (git_dir, common_dir) = (Path::new(git_dir), Path::new(common_dir));
    let mut watched = vec![git_dir.join("HEAD"), git_dir.join("logs/HEAD")];
    if let Ok(text) = std::fs::read_to_string(git_dir.join("HEAD"))
        && let Some(reference) = text.trim().strip_prefix("ref: ")
    {
        watched.push(common_dir.join(reference));
    }
    watched.push(common_dir.join("packed-refs"));
    watched.push(common_dir.join("reftable"));
    // A path that does not exist would make Cargo rerun this script on every build.
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    Some(head.to_owned())
}
