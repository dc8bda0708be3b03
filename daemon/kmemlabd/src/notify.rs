//! systemd's readiness protocol (`sd_notify(3)`) without libsystemd: datagrams such as
//! `READY=1`, `STATUS=...` and `STOPPING=1` sent over a unix datagram socket to
//! `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract name.
//!
//! Sending never fails the daemon: a lost notification is logged (stderr) and ignored,
//! as libsystemd's callers do.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` and `notify-reload` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, if anywhere.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier that sends nothing (not run by systemd).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// From `$NOTIFY_SOCKET`; disabled when it is unset, empty or unusable.
    pub fn from_env() -> Self {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(value) if !value.is_empty() => Self::new(&value).unwrap_or_else(|e| {
                tracing::warn!("ignoring {NOTIFY_SOCKET}={value:?}: {e}");
                Self::disabled()
            }),
            _ => Self::disabled(),
        }
    }

    /// Sends to the socket named by `value` (`/path` or `@abstract`).
    pub fn new(value: &OsStr) -> io::Result<Self> {
        let bytes = value.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(value)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract name",
                ))
            }
        };
        let sock = UnixDatagram::unbound()?;
        Ok(Self {
            target: Some((sock, addr)),
        })
    }

    /// Whether notifications are sent.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn notify(&self, state: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        loop {
            match sock.send_to_addr(state.as_bytes(), addr) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("sd_notify {:?} failed: {e}", state.lines().next());
                    return;
                }
            }
        }
    }

    /// `READY=1`, with a status.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC, µs) in one datagram, as
    /// `Type=notify-reload` wants when a reload starts; `READY=1` ([`Notifier::ready`])
    /// ends it.
    pub fn reloading(&self, monotonic_usec: u64) {
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading"
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.ready("ok");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");

        let name = format!("kmemlab-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.stopping();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn bad_values_and_disabled() {
        assert!(Notifier::new(OsStr::new("relative")).is_err());
        assert!(!Notifier::disabled().enabled());
        // A socket that is not there (yet): the send is logged and dropped, not fatal,
        // and the notifier stays usable: once the socket exists, the next status arrives
        // alone (the lost one is not queued or resent).
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let n = Notifier::new(path.as_os_str()).unwrap();
        assert!(n.enabled());
        n.status("lost");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_nonblocking(true).unwrap();
        n.status("after");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=after");
        assert_eq!(
            rx.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
