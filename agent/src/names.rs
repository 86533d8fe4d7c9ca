//! The names of everything the agent owns in the kernel, in one place both the renderer and the
//! ipset reconciler read: address families, chain names and prefixes, the rule comment, and the
//! isolation sets. Nothing here depends on either of them.

use std::net::IpAddr;

use palisade_engine::plan::Direction;

/// Every chain we own starts with this; nothing else is ever touched except our hook rules.
pub const CHAIN_PREFIX: &str = "PAL-";
/// Comment prefix carried by every rule we write (including hook rules in kernel chains).
pub const COMMENT_PREFIX: &str = "pal:";

pub const FORWARD_CHAIN: &str = "PAL-FORWARD";
pub const INPUT_CHAIN: &str = "PAL-INPUT";
pub const OUTPUT_CHAIN: &str = "PAL-OUTPUT";
pub const INGRESS_DISPATCH: &str = "PAL-INGRESS";
pub const EGRESS_DISPATCH: &str = "PAL-EGRESS";
/// Goto target of admin-tier Accept: sets the mark and returns to the pod chain.
pub const ACCEPT_CHAIN: &str = "PAL-ACCEPT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// Prefix of every ipset we own in this family.
    pub fn set_prefix(self) -> &'static str {
        match self {
            Family::V4 => "pal4-",
            Family::V6 => "pal6-",
        }
    }

    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    pub(crate) fn icmp_protocol(self) -> &'static str {
        match self {
            Family::V4 => "icmp",
            Family::V6 => "ipv6-icmp",
        }
    }
}

/// Name of the isolation set gating dispatch for one direction.
pub fn isolation_set(family: Family, direction: Direction) -> String {
    let suffix = match direction {
        Direction::Ingress => "iso-in",
        Direction::Egress => "iso-eg",
    };
    format!("{}{suffix}", family.set_prefix())
}
