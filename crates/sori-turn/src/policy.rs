//! Where the relay may send: the rule that keeps Sori's TURN server from being an open proxy
//! into the operator's own network.
//!
//! A peer is allowed when its address is public, when it is one of the server's own relay or
//! media addresses (so two participants relayed by this server reach each other and the SFU),
//! or when an operator-listed prefix contains it. Everything else — loopback, private
//! (RFC 1918, ULA), shared (CGNAT), link-local, multicast, unspecified, documentation and
//! reserved ranges — is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An IP prefix such as `10.0.0.0/8`, `fd00::/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Whether `ip` lies in this prefix (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or prefix (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(l) if l <= max => l,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(IpPrefix {
            addr: addr.to_canonical(),
            len: if addr.is_ipv6() && addr.to_canonical().is_ipv4() {
                len.saturating_sub(96)
            } else {
                len
            },
        })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The relay's rule for peer addresses.
#[derive(Debug, Clone, Default)]
pub struct RelayPolicy {
    /// Non-public prefixes the relay may still reach (the operator's `[turn] allow`).
    pub allow: Vec<IpPrefix>,
    /// The server's own addresses: its relay IP with the relay port range, its media ports.
    pub own: Vec<(IpAddr, RangeInclusive<u16>)>,
}

impl RelayPolicy {
    /// Whether the relay may exchange data with `peer`.
    pub fn permits(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        is_public(ip)
            || self.allow.iter().any(|p| p.contains(ip))
            || self
                .own
                .iter()
                .any(|(own, ports)| own.to_canonical() == ip && ports.contains(&peer.port()))
    }
}

/// Whether `ip` is reachable on the public internet (not private, local or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const NOT_PUBLIC: [(u32, u8); 15] = [
        (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
        (0x0a00_0000, 8),  // 10.0.0.0/8 private
        (0x6440_0000, 10), // 100.64.0.0/10 shared (CGNAT)
        (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
        (0xa9fe_0000, 16), // 169.254.0.0/16 link-local
        (0xac10_0000, 12), // 172.16.0.0/12 private
        (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
        (0xc000_0200, 24), // 192.0.2.0/24 documentation
        (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast
        (0xc0a8_0000, 16), // 192.168.0.0/16 private
        (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
        (0xc633_6400, 24), // 198.51.100.0/24 documentation
        (0xcb00_7100, 24), // 203.0.113.0/24 documentation
        (0xe000_0000, 4),  // 224.0.0.0/4 multicast
        (0xf000_0000, 4),  // 240.0.0.0/4 reserved, and the broadcast address
    ];
    let ip = u32::from(ip);
    !NOT_PUBLIC
        .iter()
        .any(|&(net, len)| ip >> (32 - len) == net >> (32 - len))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let within = |net: u128, len: u32| bits >> (128 - len) == net >> (128 - len);
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // Prefixes that embed an IPv4 address follow that address.
    if within(0x0064_ff9b << 96, 96) {
        return is_public_v4(Ipv4Addr::from(bits as u32)); // NAT64
    }
    if within(0x2002 << 112, 16) {
        return is_public_v4(Ipv4Addr::from((bits >> 80) as u32)); // 6to4
    }
    const NOT_PUBLIC: [(u128, u32); 7] = [
        (0, 96),                 // IPv4-compatible (deprecated)
        (0x0100 << 112, 64),     // 100::/64 discard
        (0x2001 << 112, 32),     // 2001::/32 Teredo
        (0x2001_0db8 << 96, 32), // 2001:db8::/32 documentation
        (0xfc00 << 112, 7),      // fc00::/7 unique local
        (0xfe80 << 112, 10),     // fe80::/10 link-local
        (0xfec0 << 112, 10),     // fec0::/10 site-local (deprecated)
    ];
    !ip.is_multicast() && !NOT_PUBLIC.iter().any(|&(net, len)| within(net, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "2001::1",
            "fec0::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p: IpPrefix = "10.0.0.0/8".parse().unwrap();
        assert!(p.contains("10.255.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        let one: IpPrefix = "192.168.1.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6: IpPrefix = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("127.0.0.1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "example.org",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_allows_public_listed_and_own_addresses_only() {
        let policy = RelayPolicy {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            own: vec![("192.168.1.5".parse().unwrap(), 49152..=65535)],
        };
        assert!(policy.permits(addr("8.8.8.8:53")));
        assert!(policy.permits(addr("10.9.8.7:5000")));
        assert!(policy.permits(addr("192.168.1.5:50000")));
        assert!(!policy.permits(addr("192.168.1.5:22")));
        assert!(!policy.permits(addr("192.168.1.6:50000")));
        assert!(!policy.permits(addr("127.0.0.1:50000")));
        assert!(!policy.permits(addr("169.254.169.254:80")));
        assert!(!policy.permits(addr("[::1]:50000")));
        assert!(RelayPolicy::default().permits(addr("1.1.1.1:443")));
    }
}
