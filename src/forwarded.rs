//! Whom to believe about a request's origin (`server.trusted_proxies`). Pure: addresses
//! and header values in, decisions out.
//!
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` are taken
//! from a client only when its TCP peer is a trusted proxy. Then the forwarding chain is
//! kept and appended to, and the client is the right-most address of the chain that is
//! not itself a trusted proxy. From anyone else the headers are replaced by what the
//! gateway sees itself, so a client cannot pick its own address (for `client_ip` rate
//! limits, or for what the upstream believes).

use std::net::IpAddr;

/// One CIDR block: `10.0.0.0/8`, `::1/128`; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/len` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.prefix),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

/// The trusted proxies of the config in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses every entry; the config was validated, so a bad one is skipped.
    pub fn new(entries: &[String]) -> Self {
        TrustedProxies(entries.iter().filter_map(|e| Cidr::parse(e).ok()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the peer's own, unless the peer is trusted, then the
    /// right-most address of `x_forwarded_for` that is not trusted (or the left-most, if
    /// every one is).
    pub fn client(&self, peer: IpAddr, x_forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let Some(chain) = x_forwarded_for else {
            return peer;
        };
        let mut hops = chain
            .split(',')
            .filter_map(|h| parse_hop(h.trim()))
            .collect::<Vec<_>>();
        let leftmost = hops.first().copied();
        while let Some(hop) = hops.pop() {
            if !self.trusts(hop) {
                return hop;
            }
        }
        leftmost.unwrap_or(peer)
    }
}

/// An `X-Forwarded-For` element: an address, possibly `[v6]` or with a port.
fn parse_hop(h: &str) -> Option<IpAddr> {
    if let Ok(ip) = h.parse() {
        return Some(ip);
    }
    if let Ok(sa) = h.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    h.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.9.9.9")));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
    }

    #[test]
    fn bad_blocks_are_refused() {
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/-1", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(t.client(ip("192.0.2.7"), Some("1.2.3.4")), ip("192.0.2.7"));
    }

    #[test]
    fn a_trusted_peer_names_the_client_right_most_untrusted_first() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        assert_eq!(
            t.client(ip("127.0.0.1"), Some("6.6.6.6, 1.2.3.4, 10.0.0.2")),
            ip("1.2.3.4")
        );
        assert_eq!(t.client(ip("127.0.0.1"), Some("10.0.0.3")), ip("10.0.0.3"));
        assert_eq!(t.client(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(t.client(ip("127.0.0.1"), Some("garbage")), ip("127.0.0.1"));
        assert_eq!(
            t.client(ip("127.0.0.1"), Some("[2001:db8::1]:443, 1.2.3.4:80")),
            ip("1.2.3.4")
        );
    }
}
