//! `TRUST_PROXY`: which hops in front of agentd are trusted, and so which address in
//! `X-Forwarded-For` is the client's (the key of the rate limit, the address in its
//! 429 message).
//!
//! The forms are Fastify's `trustProxy` (its `proxy-addr` rules): `false` (the peer is
//! the client), `true` (every hop is trusted: the leftmost entry), a hop count `N` (the
//! peer and the `N - 1` nearest forwarded entries are trusted), or a comma list of
//! addresses and CIDR ranges (and the names `loopback`, `linklocal`, `uniquelocal`).
//! The addresses are walked from the peer leftwards through `X-Forwarded-For`; the
//! client is the first one that is not trusted, or the leftmost when all are. The peer
//! itself must be trusted for the header to be read at all.
//!
//! It must never take the leftmost entry unless every hop is trusted (the client
//! writes that entry, so it would let anyone pick their rate-limit key), never
//! allocate per request, and never read further left than the first untrusted hop.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;

/// Most entries a `TRUST_PROXY` list may hold (each request may compare the address
/// of every hop against each entry).
pub const MAX_TRUSTED_ENTRIES: usize = 64;

/// A trusted range: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The parsed `TRUST_PROXY`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TrustProxy {
    /// `false`: `X-Forwarded-For` is ignored (the default).
    #[default]
    None,
    /// `true`: every hop is trusted; the client is the leftmost entry.
    All,
    /// `N`: the peer and the `N - 1` nearest forwarded entries are proxies.
    Hops(u32),
    /// Addresses and ranges of the trusted proxies.
    List(Vec<Cidr>),
}

impl TrustProxy {
    /// Parses `TRUST_PROXY` (for clap; the message names the accepted forms).
    pub fn parse(s: &str) -> Result<TrustProxy, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("false") || t.is_empty() {
            return Ok(TrustProxy::None);
        }
        if t.eq_ignore_ascii_case("true") {
            return Ok(TrustProxy::All);
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            let n: u32 = t
                .parse()
                .map_err(|_| format!("hop count {t} is too large"))?;
            return Ok(if n == 0 {
                TrustProxy::None
            } else {
                TrustProxy::Hops(n)
            });
        }
        let mut list = Vec::new();
        for item in t.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "loopback" => list.extend(cidrs(&["127.0.0.1/8", "::1/128"])),
                "linklocal" => list.extend(cidrs(&["169.254.0.0/16", "fe80::/10"])),
                "uniquelocal" => list.extend(cidrs(&[
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "fc00::/7",
                ])),
                _ => list.push(parse_cidr(item).ok_or_else(|| {
                    format!(
                        "'{item}' is not an address, a CIDR range or loopback/linklocal/\
                         uniquelocal (TRUST_PROXY takes true, false, a hop count, or a comma \
                         list of those)"
                    )
                })?),
            }
        }
        if list.is_empty() {
            return Ok(TrustProxy::None);
        }
        if list.len() > MAX_TRUSTED_ENTRIES {
            return Err(format!("at most {MAX_TRUSTED_ENTRIES} addresses or ranges"));
        }
        Ok(TrustProxy::List(list))
    }

    /// Whether the hop at `index` (0: the peer, then `X-Forwarded-For` from the right)
    /// with address `ip` is a trusted proxy.
    fn trusts(&self, ip: IpAddr, index: usize) -> bool {
        match self {
            TrustProxy::None => false,
            TrustProxy::All => true,
            TrustProxy::Hops(n) => index < *n as usize,
            TrustProxy::List(list) => list.iter().any(|c| c.contains(ip)),
        }
    }

    /// The client's address for a request from `peer` with these headers. An entry
    /// that is not an IP address ends the walk: the hop that forwarded it (trusted, or
    /// it would not have been read) is taken as the client.
    pub fn client_ip(&self, h: &HeaderMap, peer: IpAddr) -> IpAddr {
        if matches!(self, TrustProxy::None) || !self.trusts(peer, 0) {
            return peer;
        }
        let mut current = peer;
        let mut index = 0;
        // Several header lines are one list, in order: walk the lines from the last.
        for line in h.get_all("x-forwarded-for").iter().rev() {
            let Ok(line) = line.to_str() else {
                return current;
            };
            for entry in line.rsplit(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let Ok(ip) = entry.parse::<IpAddr>() else {
                    return current;
                };
                index += 1;
                current = ip;
                if !self.trusts(ip, index) {
                    return ip;
                }
            }
        }
        current
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().filter_map(|s| parse_cidr(s)).collect()
}

/// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address, or one with `/n`.
fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().ok()?;
    let addr = addr.to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
    };
    Some(Cidr { addr, prefix })
}

/// The rate limit's key for a client: IPv4 (an IPv4-mapped IPv6 address is its IPv4
/// client) as is, IPv6 by its /64, since one subscriber usually holds a whole /64 and
/// could otherwise take a fresh budget with each of its addresses.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "10.0.0.2";

    fn client(spec: &str, lines: &[&str]) -> IpAddr {
        TrustProxy::parse(spec)
            .unwrap()
            .client_ip(&headers(lines), ip(PEER))
    }

    #[test]
    fn parses_the_fastify_forms() {
        assert_eq!(TrustProxy::parse("false"), Ok(TrustProxy::None));
        assert_eq!(TrustProxy::parse("TRUE"), Ok(TrustProxy::All));
        assert_eq!(TrustProxy::parse("0"), Ok(TrustProxy::None));
        assert_eq!(TrustProxy::parse("2"), Ok(TrustProxy::Hops(2)));
        let TrustProxy::List(l) = TrustProxy::parse("10.0.0.0/8, ::1, loopback").unwrap() else {
            panic!()
        };
        assert_eq!(l.len(), 4);
        for bad in ["yes", "10.0.0.0/33", "::1/129", "1.2.3", "99999999999"] {
            assert!(TrustProxy::parse(bad).is_err(), "{bad}");
        }
        let many = vec!["10.0.0.1"; MAX_TRUSTED_ENTRIES + 1].join(",");
        assert!(TrustProxy::parse(&many).is_err());
    }

    #[test]
    fn false_ignores_the_header() {
        assert_eq!(client("false", &["203.0.113.7"]), ip(PEER));
    }

    #[test]
    fn true_takes_the_leftmost() {
        assert_eq!(
            client("true", &["1.1.1.1, 2.2.2.2", "3.3.3.3"]),
            ip("1.1.1.1")
        );
        assert_eq!(client("true", &[]), ip(PEER));
    }

    #[test]
    fn a_hop_count_takes_the_entry_that_many_hops_away() {
        // One proxy (the peer): the client is what it appended, the rightmost entry;
        // whatever the client wrote further left is ignored.
        assert_eq!(client("1", &["6.6.6.6, 203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(
            client("2", &["6.6.6.6, 203.0.113.7, 10.0.0.9"]),
            ip("203.0.113.7")
        );
        assert_eq!(client("5", &["203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn a_list_takes_the_rightmost_untrusted() {
        let spec = "10.0.0.0/8";
        assert_eq!(
            client(spec, &["6.6.6.6, 203.0.113.7, 10.1.1.1"]),
            ip("203.0.113.7")
        );
        // Every entry trusted: the leftmost.
        assert_eq!(client(spec, &["10.3.3.3, 10.1.1.1"]), ip("10.3.3.3"));
        // An untrusted peer: the header is not read.
        let h = headers(&["10.1.1.1"]);
        assert_eq!(
            TrustProxy::parse(spec)
                .unwrap()
                .client_ip(&h, ip("198.51.100.1")),
            ip("198.51.100.1")
        );
        // Garbage from a trusted hop's left: the hop is the client.
        assert_eq!(client(spec, &["nonsense, 10.1.1.1"]), ip("10.1.1.1"));
        // IPv6 ranges and IPv4-mapped peers.
        let t = TrustProxy::parse("2001:db8::/32").unwrap();
        let h = headers(&["2001:db9::1, 2001:db8::7"]);
        assert_eq!(t.client_ip(&h, ip("2001:db8::1")), ip("2001:db9::1"));
        let t = TrustProxy::parse("loopback").unwrap();
        let h = headers(&["203.0.113.7"]);
        assert_eq!(t.client_ip(&h, ip("::ffff:127.0.0.1")), ip("203.0.113.7"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            rate_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            rate_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:3::1")),
            rate_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(rate_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(rate_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
