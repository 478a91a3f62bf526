//! What the rotation sidecar does after a change: signal a named process of the pod (its
//! process namespace is shared for this), and/or POST to a loopback URL. Failures are logged;
//! the files are in place either way.

use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::spec::{Refresh, loopback_url};

/// Run the reload actions of `refresh`.
pub async fn after_change(refresh: &Refresh) {
    if let Some(target) = &refresh.signal {
        match signal_processes(&target.process, &target.signal) {
            Ok(signalled) => {
                for error in &signalled.errors {
                    warn!(process = %target.process, %error, "cannot signal");
                }
                match signalled.count {
                    0 if signalled.errors.is_empty() => warn!(
                        process = %target.process,
                        "no process of that name to signal; is shareProcessNamespace on?"
                    ),
                    0 => {}
                    count => {
                        info!(process = %target.process, signal = %target.signal, count, "signalled")
                    }
                }
            }
            Err(error) => warn!(process = %target.process, %error, "cannot signal"),
        }
    }
    if let Some(url) = &refresh.url {
        match tokio::time::timeout(Duration::from_secs(5), post(url)).await {
            Ok(Ok(status)) => info!(url = %url, status, "reload requested"),
            Ok(Err(error)) => warn!(url = %url, %error, "reload request failed"),
            Err(_) => warn!(url = %url, "reload request timed out after 5s"),
        }
    }
}

fn signal_of(name: &str) -> Option<Signal> {
    Some(match name {
        "HUP" => Signal::HUP,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "TERM" => Signal::TERM,
        "WINCH" => Signal::WINCH,
        _ => return None,
    })
}

/// What [`signal_processes`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Signalled {
    /// Processes that got the signal.
    pub count: usize,
    /// Processes of that name that could not be signalled (e.g. not permitted), one line each.
    pub errors: Vec<String>,
}

/// Send `signal` to every process named `name` (`/proc/PID/comm`) but ourselves.
///
/// One process's failure never stops the others from being signalled, and a process that
/// exits between the read of its name and the signal (ESRCH) is simply gone: not an error.
pub fn signal_processes(name: &str, signal: &str) -> Result<Signalled, String> {
    let signal = signal_of(signal).ok_or_else(|| format!("unknown signal {signal}"))?;
    signal_named(Path::new("/proc"), name, std::process::id(), |pid| {
        rustix::process::kill_process(pid, signal)
    })
}

/// [`signal_processes`] over the process directory `proc`, signalling with `kill`.
fn signal_named(
    proc: &Path,
    name: &str,
    own: u32,
    mut kill: impl FnMut(Pid) -> rustix::io::Result<()>,
) -> Result<Signalled, String> {
    let mut signalled = Signalled::default();
    let entries = std::fs::read_dir(proc).map_err(|e| format!("{}: {e}", proc.display()))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == own {
            continue;
        }
        // Gone already, or not readable: not a process to signal.
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim_end_matches('\n') != name {
            continue;
        }
        let Some(pid) = Pid::from_raw(pid) else {
            continue;
        };
        match kill(pid) {
            Ok(()) => signalled.count += 1,
            // It exited after its name was read (a short-lived child, say): nothing to signal.
            Err(rustix::io::Errno::SRCH) => {}
            Err(error) => signalled
                .errors
                .push(format!("pid {}: {error}", pid.as_raw_nonzero())),
        }
    }
    Ok(signalled)
}

/// POST an empty body to a loopback `http://` URL; the status code.
async fn post(url: &str) -> Result<u16, String> {
    let (host, port, path) = loopback_url(url).ok_or("not a loopback http URL")?;
    let address = match host {
        "[::1]" => format!("[::1]:{port}"),
        "localhost" => format!("127.0.0.1:{port}"),
        other => format!("{other}:{port}"),
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\nUser-Agent: \
         secret-inject/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process directory with these `(pid, comm)` entries, plus what `/proc` also holds.
    fn fake_proc(processes: &[(i32, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, comm) in processes {
            let entry = dir.path().join(pid.to_string());
            std::fs::create_dir(&entry).unwrap();
            std::fs::write(entry.join("comm"), format!("{comm}\n")).unwrap();
        }
        std::fs::create_dir(dir.path().join("self")).unwrap();
        std::fs::create_dir(dir.path().join("77")).unwrap(); // exited: no comm to read
        dir
    }

    fn pids(signalled: &[Pid]) -> Vec<i32> {
        let mut pids: Vec<i32> = signalled.iter().map(|p| p.as_raw_nonzero().get()).collect();
        pids.sort();
        pids
    }

    #[test]
    fn a_process_that_exits_before_its_signal_does_not_stop_the_others() {
        // Three processes of that name; the middle one exits between the read of its name and
        // the signal (a shell's forked child before it execs carries the shell's name).
        let proc = fake_proc(&[
            (10, "reloadme"),
            (11, "reloadme"),
            (12, "reloadme"),
            (13, "sh"),
        ]);
        let mut sent = Vec::new();
        let signalled = signal_named(proc.path(), "reloadme", 1, |pid| {
            if pid.as_raw_nonzero().get() == 11 {
                return Err(rustix::io::Errno::SRCH);
            }
            sent.push(pid);
            Ok(())
        })
        .unwrap();
        assert_eq!(pids(&sent), [10, 12], "every live process gets the signal");
        assert_eq!(
            signalled,
            Signalled {
                count: 2,
                errors: vec![]
            },
            "a process that is gone is not an error"
        );
    }

    #[test]
    fn a_process_that_cannot_be_signalled_is_reported_and_the_others_still_get_it() {
        let proc = fake_proc(&[(20, "nginx"), (21, "nginx"), (22, "nginx")]);
        let mut sent = Vec::new();
        let signalled = signal_named(proc.path(), "nginx", 22, |pid| {
            if pid.as_raw_nonzero().get() == 20 {
                return Err(rustix::io::Errno::PERM);
            }
            sent.push(pid);
            Ok(())
        })
        .unwrap();
        assert_eq!(pids(&sent), [21], "not ourselves (22), and 21 despite 20");
        assert_eq!(signalled.count, 1);
        assert_eq!(signalled.errors.len(), 1, "{:?}", signalled.errors);
        assert!(
            signalled.errors[0].starts_with("pid 20: "),
            "{:?}",
            signalled.errors
        );
    }

    #[test]
    fn a_real_process_is_signalled_by_its_name() {
        // A child of ours named by its executable: `sleep`, ended by TERM.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_child(&child);
        // The kernel wakes a vfork parent (posix_spawn) during execve, before it renames the
        // child: wait until /proc shows the new name (liveness only, 10 s).
        let comm = format!("/proc/{}/comm", pid.as_raw_nonzero());
        let named = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&comm)
            .unwrap_or_default()
            .trim_end()
            != "sleep"
        {
            assert!(std::time::Instant::now() < named, "{comm} never read sleep");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut sent = Vec::new();
        let signalled = signal_named(Path::new("/proc"), "sleep", std::process::id(), |p| {
            if p != pid {
                return Ok(()); // other tests' processes of that name are left alone
            }
            sent.push(p);
            rustix::process::kill_process(p, Signal::TERM)
        })
        .unwrap();
        assert_eq!(sent, [pid]);
        assert!(signalled.count >= 1);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(15));
    }
}
