//! An image registry on loopback for one test: the CNCF distribution `registry` that
//! `scripts/build-node` builds into `.tools/node/current/bin`, serving plain HTTP on
//! `127.0.0.1:<free port>` with filesystem storage in a temporary directory. Stopped (and its
//! storage removed) when dropped.
//!
//! `Registry::start_with_login` asks for a login as a registry on the internet does: its htpasswd
//! access controller (a bcrypt hash of the one user's password) answers every unauthenticated
//! request 401 with a `Basic` challenge. (Its documentation asks for TLS against replay; the
//! controller itself does not enforce it, and loopback traffic stays on the machine.)

use std::time::{Duration, Instant};

use super::controlplane::Guarded;
use super::node::bin;

pub struct Registry {
    /// `127.0.0.1:PORT`: the host part of image references (`127.0.0.1:PORT/secret-inject:tag`).
    pub address: String,
    /// Stopped first (fields drop in order), then its storage removed.
    _process: Guarded,
    /// Storage, configuration and the registry's log (`registry.log`).
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Start a registry and wait until it listens.
    pub fn start() -> Registry {
        Registry::serve(None)
    }

    /// Start a registry that serves only `user` with `password` (HTTP Basic, htpasswd).
    pub fn start_with_login(user: &str, password: &str) -> Registry {
        Registry::serve(Some((user, password)))
    }

    fn serve(login: Option<(&str, &str)>) -> Registry {
        let binary = bin("registry");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("registry.yml");
        let auth = match login {
            None => String::new(),
            Some((user, password)) => {
                // The lowest bcrypt cost: the registry checks the hash on every request.
                let hash = bcrypt::hash(password, 4).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth: {{htpasswd: {{realm: secret-inject-tests, path: {}}}}}\n",
                    htpasswd.display()
                )
            }
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, \
                 delete: {{enabled: true}}}}\nhttp: {{addr: \"{address}\", secret: secret-inject-tests}}\n{auth}",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let mut process = Guarded::start(
            &binary,
            &["serve".to_owned(), config.display().to_string()],
            dir.path().join("registry.log"),
            &[],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                !process.exited() && Instant::now() < deadline,
                "the registry did not listen at {address} within 30 s:\n{}",
                std::fs::read_to_string(&process.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            address,
            _process: process,
            _dir: dir,
        }
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self._process.log).unwrap_or_default()
    }
}
