//! What the rotation sidecar does after a change: signal a named process of the pod (its
//! process namespace is shared for this), and/or POST to a loopback URL. Failures are logged;
//! the files are in place either way.

use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::spec::{Refresh, loopback_url};

/// Run the reload actions of `refresh`.
pub async fn after_change(refresh: &Refresh) {
    if let Some(target) = &refresh.signal {
        match signal_processes(&target.process, &target.signal) {
            Ok(0) => warn!(
                process = %target.process,
                "no process of that name to signal; is shareProcessNamespace on?"
            ),
            Ok(count) => {
                info!(process = %target.process, signal = %target.signal, count, "signalled")
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

/// Send `signal` to every process named `name` (`/proc/PID/comm`) but ourselves; how many.
pub fn signal_processes(name: &str, signal: &str) -> Result<usize, String> {
    let signal = signal_of(signal).ok_or_else(|| format!("unknown signal {signal}"))?;
    let own = std::process::id();
    let mut count = 0;
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
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
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim_end_matches('\n') != name {
            continue;
        }
        let Some(pid) = Pid::from_raw(pid) else {
            continue;
        };
        rustix::process::kill_process(pid, signal).map_err(|e| format!("pid {pid:?}: {e}"))?;
        count += 1;
    }
    Ok(count)
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
