//! Telling systemd how `serve` is doing: `READY=1` once it serves, `WATCHDOG=1`
//! while it lives, `STOPPING=1` as it shuts down (sd_notify(3)'s protocol: one
//! datagram per message to the unix socket in `NOTIFY_SOCKET`).
//!
//! [`Notifier::take_from_env`] also removes the variables, so the harnesses and
//! systemd-nspawn it starts (nspawn speaks the same protocol) never write to
//! the daemon's socket in its name.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// Where and how often to tell systemd; a no-op outside a `Type=notify` unit.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads and removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    ///
    /// # Safety
    /// Changes the process environment: call it before any other thread starts.
    pub unsafe fn take_from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            // SAFETY: the caller promises no other thread runs yet.
            unsafe { std::env::remove_var(k) };
        }
        Self { socket, watchdog }
    }

    /// How often systemd wants a `WATCHDOG=1`, if it watches.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`KEY=VALUE` lines); a failure is logged, never fatal.
    pub fn notify(&self, message: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = send(socket, message) {
            tracing::warn!("could not notify systemd at {socket}: {e}");
        }
    }

    /// Pings the watchdog at half its interval until `stop`, while this runtime
    /// schedules tasks (spawn it); ends at once when systemd wants no pings.
    pub fn ping_watchdog(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        let (every, me) = (self.watchdog, self.clone());
        async move {
            let Some(every) = every else { return };
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => me.notify("WATCHDOG=1"),
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

fn send(socket: &str, message: &str) -> std::io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        // A socket in the abstract namespace.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(PathBuf::from(socket))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some(path.display().to_string()),
            watchdog: None,
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hive-test-notify-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier {
            socket: Some(format!("@{name}")),
            watchdog: None,
        };
        n.notify("STOPPING=1");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        Notifier::default().notify("READY=1");
    }
}
