//! secret-inject: AWS Secrets Manager secrets in Kubernetes pods, without Kubernetes Secrets.
//!
//! One binary: the mutating admission webhook (`webhook`), the offline injector (`inject`), and
//! the agent the webhook injects. The layout shows the architecture:
//!
//! - [`spec`]: the annotation grammar, parsed once into typed values (pure).
//! - [`contract`]: the plan the webhook renders into the injected container and the agent
//!   parses (pure).
//! - [`mutate`]: the JSON Patch builder shared by the webhook and `inject` (pure).
//! - [`webhook`]: HTTPS server, TLS, router, one module per endpoint, admin and metrics.
//! - [`agent`]: the injected container: plan, fetching, failures and exit codes, writing.
//! - [`offline`]: `inject` on manifests on disk, and its YAML writer.
//! - [`aws`]: the one place AWS clients are built.
//! - [`cli`]: the command line, one module per subcommand.

pub mod agent;
pub mod aws;
pub mod cli;
pub mod contract;
pub mod duration;
pub mod errors;
pub mod mutate;
pub mod offline;
pub mod plain_http;
pub mod signal;
pub mod spec;
pub mod webhook;

/// The crate's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision this binary was built from: `SECRET_INJECT_REVISION` at build time, else
/// `git rev-parse HEAD` of the checkout, else `unknown` (build.rs). `scripts/build-image` reads
/// it back from the binary for the image's `org.opencontainers.image.revision` label.
pub const REVISION: &str = env!("SECRET_INJECT_REVISION");
/// What `secret-inject --version` prints after the program's name: `0.1.0 (rev 1a2b3c4d...)`.
pub const VERSION_AND_REVISION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("SECRET_INJECT_REVISION"),
    ")"
);

#[cfg(test)]
mod tests {
    /// The crate's errors follow one pattern: a message never repeats its cause. The cause is
    /// the error's `source()` (a field named `source`, `#[source]` or `#[from]`), which anyhow's
    /// `{:#}` and [`errors::error_chain`] print after the message; a message that also
    /// holds it says it twice (`cannot read /nope.crt: No such file ... (os error 2): No such
    /// file ... (os error 2)`, issue 19 item 6).
    #[test]
    fn no_error_message_repeats_its_source() {
        fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut all = Vec::new();
        files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut all,
        );
        let mut checked = 0;
        let mut repeated = Vec::new();
        for path in all {
            if path.ends_with("lib.rs") {
                continue; // this test
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let attributes: Vec<usize> = text.match_indices("#[error(").map(|(i, _)| i).collect();
            for (n, &at) in attributes.iter().enumerate() {
                let end = attributes.get(n + 1).copied().unwrap_or(text.len());
                let item = &text[at..end];
                let Some(close) = item.find(")]") else {
                    continue;
                };
                let (message, rest) = item.split_at(close);
                // The variant: up to the end of its fields.
                let variant = &rest[..rest
                    .find("\n    }")
                    .or(rest.find("),"))
                    .unwrap_or(rest.len())];
                let by_name = message.contains("{source") && variant.contains("source:");
                let by_index = message.contains("{0")
                    && (variant.contains("(#[from]") || variant.contains("(#[source]"));
                checked += 1;
                if by_name || by_index {
                    repeated.push(format!("{}: {}", path.display(), message.trim()));
                }
            }
        }
        assert!(checked > 20, "{checked}");
        assert!(repeated.is_empty(), "{repeated:#?}");
    }

    /// Every exit code the agent can end with has its row in the README's exit-code table,
    /// including 42, the rotation sidecar's restart request (issue 19 item 6).
    #[test]
    fn every_exit_code_of_the_agent_is_in_the_readmes_table() {
        use crate::agent::failure::exit;
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        )
        .unwrap();
        let table = &readme[readme.find("| Exit code | Meaning |").unwrap()..];
        let table = &table[..table.find("\n\n").unwrap_or(table.len())];
        let codes = [
            exit::OK,
            exit::INTERNAL,
            exit::CONFIG,
            exit::CREDENTIALS,
            exit::ACCESS_DENIED,
            exit::NOT_FOUND,
            exit::UNUSABLE,
            exit::UNAVAILABLE,
            exit::WRITE,
            exit::NO_IDENTITY,
            exit::INTERRUPTED,
        ]
        .map(i32::from);
        for code in codes
            .into_iter()
            .chain([crate::contract::RESTART_EXIT_CODE])
        {
            assert!(
                table.contains(&format!("\n| {code} |")),
                "exit code {code} is not in the README's table:\n{table}"
            );
        }
    }
}
