//! The probe protocol, shared by the `palisade-probe` binary (servers in pod namespaces, and a
//! command-line client for debugging) and the library's in-process client.
//!
//! TCP: the server writes `<identity>\n` and closes. UDP: the server answers a datagram `<nonce>`
//! with `<identity> <nonce>`. The identity (`namespace/pod`) tells a test which backend answered,
//! e.g. behind a ClusterIP DNAT.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

/// Default time a probe waits: long enough for a veth round trip with neighbour resolution, short
/// enough that a 9x9 matrix of drops finishes in seconds.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lowercase, as iptables and the probe CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Uppercase, as Kubernetes spells it.
    pub fn k8s_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one probe saw. Only `Connected` counts as allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The server answered; `peer` is its identity (empty if the TCP greeting did not arrive).
    Connected { peer: String },
    /// Actively refused: TCP RST or ICMP port unreachable (also what iptables REJECT sends by default).
    Refused,
    /// No answer before the timeout: dropped somewhere.
    Dropped,
    /// ICMP host/net unreachable or administratively prohibited, or no route.
    Unreachable,
    /// Anything else (e.g. a socket error); the text says what.
    Error(String),
}

impl ProbeOutcome {
    pub fn is_connected(&self) -> bool {
        matches!(self, ProbeOutcome::Connected { .. })
    }

    /// One character for matrix grids: `.` connected, `X` dropped, `R` refused, `U` unreachable,
    /// `E` error.
    pub fn symbol(&self) -> char {
        match self {
            ProbeOutcome::Connected { .. } => '.',
            ProbeOutcome::Dropped => 'X',
            ProbeOutcome::Refused => 'R',
            ProbeOutcome::Unreachable => 'U',
            ProbeOutcome::Error(_) => 'E',
        }
    }

    fn from_io(error: &std::io::Error) -> Self {
        match error.kind() {
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => ProbeOutcome::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => ProbeOutcome::Dropped,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ProbeOutcome::Unreachable,
            _ => match error.raw_os_error() {
                Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) | Some(libc::EACCES) | Some(libc::EPERM) => {
                    ProbeOutcome::Unreachable
                }
                _ => ProbeOutcome::Error(error.to_string()),
            },
        }
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Connected { peer } if peer.is_empty() => f.write_str("connected"),
            ProbeOutcome::Connected { peer } => write!(f, "connected to {peer}"),
            ProbeOutcome::Refused => f.write_str("refused"),
            ProbeOutcome::Dropped => f.write_str("dropped (timeout)"),
            ProbeOutcome::Unreachable => f.write_str("unreachable"),
            ProbeOutcome::Error(text) => write!(f, "error: {text}"),
        }
    }
}

/// Probes `target` from the calling thread's network namespace, blocking up to about `timeout`.
/// New TCP connections made back to back for `run` (connect, read the probe server's greeting
/// to EOF, close), from the calling thread's namespace: `(completed, failed, elapsed)`. Blocking;
/// the benches measure new-connection rates with it.
pub fn connection_rate_blocking(target: SocketAddr, run: Duration) -> (u64, u64, Duration) {
    let (mut completed, mut failed) = (0u64, 0u64);
    let mut greeting = Vec::with_capacity(64);
    let start = Instant::now();
    while start.elapsed() < run {
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(mut stream) => {
                greeting.clear();
                if stream.read_to_end(&mut greeting).is_ok() {
                    completed += 1;
                } else {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    (completed, failed, start.elapsed())
}

pub fn probe_blocking(target: SocketAddr, protocol: Protocol, timeout: Duration) -> ProbeOutcome {
    match protocol {
        Protocol::Tcp => probe_tcp(target, timeout),
        Protocol::Udp => probe_udp(target, timeout),
    }
}

fn probe_tcp(target: SocketAddr, timeout: Duration) -> ProbeOutcome {
    let started = Instant::now();
    let stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(stream) => stream,
        Err(error) => return ProbeOutcome::from_io(&error),
    };
    let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(50));
    let _ = stream.set_read_timeout(Some(remaining));
    let mut greeting = Vec::new();
    let _ = stream.take(256).read_to_end(&mut greeting);
    ProbeOutcome::Connected { peer: String::from_utf8_lossy(&greeting).trim().to_string() }
}

fn probe_udp(target: SocketAddr, timeout: Duration) -> ProbeOutcome {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (IpAddr::from([0, 0, 0, 0]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into(),
    };
    let socket = match UdpSocket::bind(bind).and_then(|s| s.connect(target).map(|()| s)) {
        Ok(socket) => socket,
        Err(error) => return ProbeOutcome::from_io(&error),
    };
    let nonce = unique_nonce();
    let started = Instant::now();
    let mut buffer = [0u8; 512];
    // Two sends (now and at half the timeout) so one lost datagram during neighbour resolution
    // does not read as a policy drop.
    let mut sends_left = 2;
    while started.elapsed() < timeout {
        if sends_left > 0 {
            if let Err(error) = socket.send(nonce.as_bytes()) {
                return ProbeOutcome::from_io(&error);
            }
            sends_left -= 1;
        }
        let wait = if sends_left > 0 { timeout / 2 } else { timeout.saturating_sub(started.elapsed()) };
        let _ = socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match socket.recv(&mut buffer) {
            Ok(len) => {
                let reply = String::from_utf8_lossy(&buffer[..len]).into_owned();
                if let Some(peer) = reply.strip_suffix(nonce.as_str()) {
                    return ProbeOutcome::Connected { peer: peer.trim().to_string() };
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => return ProbeOutcome::from_io(&error),
        }
    }
    ProbeOutcome::Dropped
}

fn unique_nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}-{}-{}", nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A dual-stack (`[::]`, v6only off) listening socket, so one server covers IPv4 and IPv6.
pub fn dual_stack_socket(protocol: Protocol, port: u16) -> std::io::Result<Socket> {
    let (kind, proto) = match protocol {
        Protocol::Tcp => (Type::STREAM, SockProtocol::TCP),
        Protocol::Udp => (Type::DGRAM, SockProtocol::UDP),
    };
    let socket = Socket::new(Domain::IPV6, kind, Some(proto))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    let address: SocketAddr = (IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into();
    socket.bind(&address.into())?;
    if protocol == Protocol::Tcp {
        socket.listen(128)?;
    }
    Ok(socket)
}
