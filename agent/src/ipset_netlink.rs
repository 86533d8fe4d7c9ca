//! Set member changes over the kernel's ipset netlink protocol (nfnetlink subsystem 6), with no
//! process: on a loaded node, forking `ipset restore` costs milliseconds, most of a pod-churn
//! sync, while a netlink batch costs microseconds.
//!
//! Only what [`crate::ipset::plan_changes`] writes as `add`/`del` lines of `hash:ip`, `hash:net`
//! and `hash:ip,port` sets goes this way ([`member_ops`] reads those lines; the restore text
//! stays the one description of a change). Creating, swapping and destroying sets, `list:set`
//! members and ICMP ports stay with `ipset restore`. Semantics are `ipset restore -exist`'s:
//! adding a present member (which updates its `nomatch` flag) and deleting an absent one are not
//! errors. One difference: the kernel goes on after a refused message, where restore stops. Every
//! line of a batch is safe on its own in that batch's phase (see [`crate::apply`]), and a refusal
//! fails the sync, so the next one reads the kernel and converges.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use palisade_engine::model::Protocol;

use crate::ipset::Member;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_IPSET: u16 = 6;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
/// The oldest protocol revision the kernel accepts for these commands.
const IPSET_PROTOCOL: u8 = 6;

const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_DATA: u16 = 7;
// Inside IPSET_ATTR_DATA:
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_CIDR: u16 = 3;
const IPSET_ATTR_PORT: u16 = 4;
const IPSET_ATTR_PROTO: u16 = 7;
const IPSET_ATTR_CADT_FLAGS: u16 = 8;
// Inside IPSET_ATTR_IP:
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
const IPSET_ATTR_IPADDR_IPV6: u16 = 2;
const IPSET_FLAG_NOMATCH: u32 = 1 << 2;

const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HEADER: usize = 16;
/// Messages per send: each answer is its own skb in the socket's receive buffer, so a batch is
/// sent in chunks whose acknowledgements fit there.
const CHUNK: usize = 128;
/// A set name is at most 31 bytes (IPSET_MAXNAMELEN 32 with the NUL).
const MAX_SET_NAME: usize = 31;

/// One member added to or removed from one set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberOp {
    pub add: bool,
    pub set: String,
    pub member: Member,
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkIpsetError {
    /// The socket failed: no answer is known for the batch; fall back to `ipset restore`.
    #[error("ipset netlink socket: {0}")]
    Socket(#[from] io::Error),
    /// The kernel refused operation `index` of the batch (0-based).
    #[error("the kernel refused operation {} of the batch: {}", index + 1, describe(*errno))]
    Refused { index: usize, errno: i32 },
}

/// The operations of an `ipset restore` batch made only of `add`/`del` lines this module can
/// send; `None` when any line is something else (then the whole batch goes to `ipset restore`).
pub fn member_ops(text: &str) -> Option<Vec<MemberOp>> {
    let mut ops = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (add, set, member, rest) = match words.as_slice() {
            ["add", set, member, rest @ ..] => (true, *set, *member, rest),
            ["del", set, member, rest @ ..] => (false, *set, *member, rest),
            _ => return None,
        };
        if set.len() > MAX_SET_NAME {
            return None;
        }
        let member = parse_member(member, rest)?;
        ops.push(MemberOp { add, set: set.to_owned(), member });
    }
    Some(ops)
}

/// The member of a restore line, read by the set type its syntax implies (see [`Member`]'s
/// `Display`: `ip`, `net/len [nomatch]`, `ip,proto:port`), with the parser that reads
/// `ipset save`. Anything else after the member (a timeout, say), a `list:set` member (a set
/// name) and ICMP are not read.
fn parse_member(text: &str, rest: &[&str]) -> Option<Member> {
    let set_type = if text.contains(',') {
        "hash:ip,port"
    } else if text.contains('/') {
        "hash:net"
    } else {
        "hash:ip"
    };
    let nomatch_allowed = set_type == "hash:net" && rest == ["nomatch"];
    if !rest.is_empty() && !nomatch_allowed {
        return None;
    }
    let words: Vec<&str> = std::iter::once(text).chain(rest.iter().copied()).collect();
    crate::ipset::parse_member(set_type, &words)
}

/// A netlink socket bound to one network namespace's ipset subsystem.
pub struct IpsetSocket {
    fd: OwnedFd,
    seq: u32,
}

impl IpsetSocket {
    /// Opens the socket in `netns` (a name under `/run/netns`, as `ip netns` keeps them) or in
    /// this process's namespace. A socket stays in the namespace it was created in.
    pub fn open(netns: Option<&str>) -> io::Result<IpsetSocket> {
        let Some(netns) = netns else { return open_here() };
        let path = format!("/run/netns/{netns}");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let namespace = File::open(&path)?;
                    // SAFETY: setns on a namespace fd we own; it changes this short-lived thread only.
                    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    open_here()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the thread entering the namespace panicked")))
        })
    }

    /// Sends every operation (acknowledged one by one) and returns the first refusal, if any.
    /// Blocking, microseconds per operation: callers on an async runtime use `spawn_blocking`.
    pub fn apply(&mut self, ops: &[MemberOp]) -> Result<(), NetlinkIpsetError> {
        let mut first_refusal: Option<(usize, i32)> = None;
        for (chunk_index, chunk) in ops.chunks(CHUNK).enumerate() {
            let first_seq = self.seq.wrapping_add(1);
            let mut buffer = Vec::with_capacity(chunk.len() * 64);
            for op in chunk {
                self.seq = self.seq.wrapping_add(1);
                encode(op, self.seq, &mut buffer);
            }
            self.send(&buffer)?;
            let mut answered = 0;
            let mut reply = vec![0u8; 65536];
            while answered < chunk.len() {
                let length = self.receive(&mut reply)?;
                for (seq, errno) in acknowledgements(&reply[..length]) {
                    let offset = seq.wrapping_sub(first_seq) as usize;
                    if offset >= chunk.len() {
                        continue; // an answer to an earlier, abandoned batch
                    }
                    answered += 1;
                    if errno != 0 {
                        let index = chunk_index * CHUNK + offset;
                        if first_refusal.is_none_or(|(earlier, _)| index < earlier) {
                            first_refusal = Some((index, errno));
                        }
                    }
                }
            }
        }
        match first_refusal {
            Some((index, errno)) => Err(NetlinkIpsetError::Refused { index, errno }),
            None => Ok(()),
        }
    }

    fn send(&self, buffer: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and the address outlive the call; their lengths are passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buffer.as_ptr().cast(),
                buffer.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        match sent {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != buffer.len() => Err(io::Error::other("netlink sent part of a batch")),
            _ => Ok(()),
        }
    }

    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length.
        let received = unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }
}

fn open_here() -> io::Result<IpsetSocket> {
    // SAFETY: plain socket creation; the fd is owned at once.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl lets the kernel pick our port id.
    let mut local: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    local.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the address outlives the call; its length is passed.
    let bound = unsafe {
        libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&local).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32)
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    // An answer never takes long; a stuck kernel must not hang the agent.
    let timeout = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: the option value outlives the call; its length is passed.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&timeout).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(IpsetSocket { fd, seq: 0 })
}

/// Appends one request (`nlmsghdr`, `nfgenmsg`, attributes) for `op`.
fn encode(op: &MemberOp, seq: u32, out: &mut Vec<u8>) {
    let start = out.len();
    let command = if op.add { IPSET_CMD_ADD } else { IPSET_CMD_DEL };
    let ipv4 = match &op.member {
        Member::Ip(ip) | Member::IpPort { ip, .. } => ip.is_ipv4(),
        Member::Net { net, .. } => net.addr().is_ipv4(),
        Member::Set(_) => true,
    };
    let family = if ipv4 { libc::AF_INET } else { libc::AF_INET6 } as u8;
    out.extend_from_slice(&0u32.to_ne_bytes()); // length, patched below
    out.extend_from_slice(&((NFNL_SUBSYS_IPSET << 8) | command).to_ne_bytes());
    // No NLM_F_EXCL: `-exist` semantics.
    out.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
    attribute(out, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    let mut name = op.set.as_bytes().to_vec();
    name.push(0);
    attribute(out, IPSET_ATTR_SETNAME, &name);
    let mut data = Vec::new();
    let address = |ip: &IpAddr| {
        let mut nested = Vec::new();
        match ip {
            IpAddr::V4(v4) => attribute(&mut nested, IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &v4.octets()),
            IpAddr::V6(v6) => attribute(&mut nested, IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &v6.octets()),
        }
        nested
    };
    match &op.member {
        Member::Ip(ip) => attribute(&mut data, IPSET_ATTR_IP | NLA_F_NESTED, &address(ip)),
        Member::Net { net, nomatch } => {
            attribute(&mut data, IPSET_ATTR_IP | NLA_F_NESTED, &address(&net.addr()));
            attribute(&mut data, IPSET_ATTR_CIDR, &[net.prefix_len()]);
            if *nomatch {
                attribute(&mut data, IPSET_ATTR_CADT_FLAGS | NLA_F_NET_BYTEORDER, &IPSET_FLAG_NOMATCH.to_be_bytes());
            }
        }
        Member::IpPort { ip, protocol, port } => {
            attribute(&mut data, IPSET_ATTR_IP | NLA_F_NESTED, &address(ip));
            attribute(&mut data, IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER, &port.to_be_bytes());
            let number: u8 = match protocol {
                Protocol::Tcp => 6,
                Protocol::Udp => 17,
                Protocol::Sctp => 132,
                Protocol::Icmp => 1,
            };
            attribute(&mut data, IPSET_ATTR_PROTO, &[number]);
        }
        // Never produced by `member_ops`; an empty element makes the kernel refuse it.
        Member::Set(_) => {}
    }
    attribute(out, IPSET_ATTR_DATA | NLA_F_NESTED, &data);
    let length = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&length.to_ne_bytes());
}

/// Appends one attribute (`nlattr` and its payload, padded to 4 bytes).
fn attribute(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// `(sequence number, errno)` of every acknowledgement in one datagram (errno 0 = done).
fn acknowledgements(mut datagram: &[u8]) -> Vec<(u32, i32)> {
    let mut acks = Vec::new();
    while datagram.len() >= NLMSG_HEADER {
        let field =
            |at: usize| u32::from_ne_bytes([datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]]);
        let length = field(0) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        let seq = field(8);
        if length < NLMSG_HEADER || length > datagram.len() {
            break;
        }
        if kind == NLMSG_ERROR && length >= NLMSG_HEADER + 4 {
            let error = i32::from_ne_bytes([datagram[16], datagram[17], datagram[18], datagram[19]]);
            acks.push((seq, -error));
        }
        datagram = &datagram[length.next_multiple_of(4).min(datagram.len())..];
    }
    acks
}

/// The kernel's ipset error numbers (`ipset/ip_set.h`), or the system's message.
fn describe(errno: i32) -> String {
    let ipset = match errno {
        4097 => Some("protocol mismatch"),
        4102 => Some("the set is of another type"),
        4103 => Some("the element exists already / is missing"),
        4104 => Some("invalid CIDR"),
        4106 => Some("address family mismatch"),
        4109 => Some("an IPv4 address was expected"),
        4110 => Some("an IPv6 address was expected"),
        4352 => Some("the set is full"),
        4354 => Some("invalid protocol"),
        4355 => Some("missing protocol"),
        _ => None,
    };
    match ipset {
        Some(text) => format!("{text} (ipset error {errno})"),
        None if errno == libc::ENOENT => "no such set".to_owned(),
        None => io::Error::from_raw_os_error(errno).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_member_lines_of_hash_sets_are_read_as_operations() {
        let ops = member_ops("add s1 198.18.0.1\ndel s2 10.0.0.0/8 nomatch\nadd s3 fd00:198::1,tcp:80\n").expect("ops");
        assert_eq!(
            ops,
            vec![
                MemberOp { add: true, set: "s1".into(), member: Member::Ip("198.18.0.1".parse().expect("ip")) },
                MemberOp {
                    add: false,
                    set: "s2".into(),
                    member: Member::Net { net: "10.0.0.0/8".parse().expect("net"), nomatch: true }
                },
                MemberOp {
                    add: true,
                    set: "s3".into(),
                    member: Member::IpPort {
                        ip: "fd00:198::1".parse().expect("ip"),
                        protocol: Protocol::Tcp,
                        port: 80
                    }
                },
            ]
        );
        for other in [
            "create s1 hash:ip family inet\n",
            "swap a b\n",
            "destroy s1\n",
            "add list1 pal4-a-0000\n",
            "add s1 198.18.0.1,icmp:8/0\n",
            "add s1 198.18.0.1 timeout 5\n",
        ] {
            assert_eq!(member_ops(&format!("add s0 198.18.0.9\n{other}")), None, "{other:?} goes to ipset restore");
        }
    }

    #[test]
    fn a_request_is_framed_as_the_kernel_reads_it() {
        let op = MemberOp { add: true, set: "s".into(), member: Member::Ip("198.18.0.1".parse().expect("ip")) };
        let mut buffer = Vec::new();
        encode(&op, 7, &mut buffer);
        let length = u32::from_ne_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
        assert_eq!(length, buffer.len());
        assert_eq!(buffer.len() % 4, 0);
        assert_eq!(u16::from_ne_bytes([buffer[4], buffer[5]]), (6 << 8) | 9, "ipset subsystem, ADD");
        assert_eq!(u32::from_ne_bytes([buffer[8], buffer[9], buffer[10], buffer[11]]), 7);
        assert_eq!(buffer[16], libc::AF_INET as u8);
        assert!(buffer.windows(4).any(|w| w == [198, 18, 0, 1]), "the address in network order");

        let ack = |seq: u32, error: i32| {
            let mut message = Vec::new();
            message.extend_from_slice(&36u32.to_ne_bytes());
            message.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            message.extend_from_slice(&0u16.to_ne_bytes());
            message.extend_from_slice(&seq.to_ne_bytes());
            message.extend_from_slice(&0u32.to_ne_bytes());
            message.extend_from_slice(&error.to_ne_bytes());
            message.extend_from_slice(&[0; 16]);
            message
        };
        let mut datagram = ack(1, 0);
        datagram.extend(ack(2, -libc::ENOENT));
        assert_eq!(acknowledgements(&datagram), vec![(1, 0), (2, libc::ENOENT)]);
        assert_eq!(describe(libc::ENOENT), "no such set");
    }
}
