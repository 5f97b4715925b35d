//! Which client a request comes from: the TCP peer, or, behind a trusted
//! proxy, the address it reports in `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use ipnet::IpNet;

/// The client a request came from (the TCP peer, or behind a trusted proxy
/// the address it reported), in the request's extensions so that every
/// step uses the same address (the proxy's `X-Real-IP`, the access log).
/// An outer middleware may put it there first (the server's does); when it
/// has not, the auth layer resolves it and puts it in the response's
/// extensions too, for what runs around the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Resolves the client address of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    /// Believes `X-Forwarded-For` only from peers inside `trusted`.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    /// Whether any proxy is trusted.
    pub fn has_trusted(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client: `peer` itself unless `peer` is a trusted proxy; then the
    /// hops of `X-Forwarded-For` are walked from the right (each proxy
    /// appends the address it saw, so everything left of the first
    /// untrusted hop could have been written by the client), and the first
    /// untrusted one is the client. The walk stops at the first hop that
    /// does not parse: what stands left of it cannot be read, and the key is
    /// then [`UNREADABLE_CLIENT`]. If every hop is readable and trusted, the
    /// left-most stands in. The trusted peer's own address
    /// is used only when the header is missing: a client that sent the
    /// header must never share the proxy's key (it would lock out everyone
    /// behind it, and escape its own lockout).
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return canonical(peer);
        }
        if !headers.contains_key("x-forwarded-for") {
            return canonical(peer);
        }
        self.walk(headers)
    }

    /// The client of a request from `peer`, whose extensions say whether it
    /// came over a Unix socket ([`UnixPeer`]: [`resolve_unix`](Self::resolve_unix))
    /// or not ([`resolve`](Self::resolve)).
    pub fn resolve_request(
        &self,
        peer: IpAddr,
        extensions: &http::Extensions,
        headers: &HeaderMap,
    ) -> IpAddr {
        if extensions.get::<UnixPeer>().is_some() {
            self.resolve_unix(headers)
        } else {
            self.resolve(peer, headers)
        }
    }

    /// The client of a request that came over a Unix socket ([`UnixPeer`]):
    /// its peer is a local proxy, trusted without a list, so
    /// `X-Forwarded-For` is walked as from a trusted proxy. Without the
    /// header the client cannot be told: [`UNREADABLE_CLIENT`] (the
    /// binary's Unix socket answers forward-auth decisions only, and those
    /// are refused when the client cannot be told).
    pub fn resolve_unix(&self, headers: &HeaderMap) -> IpAddr {
        self.walk(headers)
    }

    /// `X-Forwarded-For` from the right: the first hop not in the list;
    /// no header at all, [`UNREADABLE_CLIENT`].
    fn walk(&self, headers: &HeaderMap) -> IpAddr {
        let mut last_good = None;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            for part in value.as_bytes().rsplit(|&b| b == b',') {
                let Some(ip) = std::str::from_utf8(part)
                    .ok()
                    .and_then(|text| parse_hop(text.trim()))
                    .map(canonical)
                else {
                    // No untrusted hop stands to its right (it would have
                    // been returned): the client cannot be told.
                    return UNREADABLE_CLIENT;
                };
                if !self.is_trusted(ip) {
                    return ip;
                }
                last_good = Some(ip);
            }
        }
        last_good.unwrap_or(UNREADABLE_CLIENT)
    }
}

/// In a request's extensions when it came over a Unix socket (the server
/// puts it beside a `ConnectInfo` of `0.0.0.0:0`): the peer is a local
/// process the socket file's permissions let in, trusted as a proxy. A
/// marker, not an address, so that no TCP peer and no stand-in address
/// (the layer's `OneClient` uses 0.0.0.0 too) can ever pass for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPeer;

/// The key for a client behind a trusted proxy whose `X-Forwarded-For`
/// names no readable address: such clients share one key of their own
/// (never the proxy's).
pub const UNREADABLE_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// An address as `X-Forwarded-For` may carry it: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key limits and lockouts are kept under: the IPv4 address, or the
/// IPv6 /64 (one subscriber usually has a whole /64, so keying by full
/// address would hand an attacker 2^64 fresh identities).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let r = ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            r.resolve(ip("203.0.113.9"), &headers(&["1.2.3.4"])),
            ip("203.0.113.9")
        );
        let none = ClientIpResolver::default();
        assert_eq!(
            none.resolve(ip("10.0.0.1"), &headers(&["1.2.3.4"])),
            ip("10.0.0.1")
        );
    }

    /// Only the marker makes a peer a local proxy: 0.0.0.0 (the layer's
    /// `OneClient` stand-in) or a mapped form of it is an address like any.
    #[test]
    fn a_unix_socket_peer_is_trusted_by_its_marker_not_an_address() {
        let none = ClientIpResolver::default();
        for peer in ["0.0.0.0", "::ffff:0.0.0.0", "::"] {
            assert_eq!(
                none.resolve(ip(peer), &headers(&["1.2.3.4"])),
                canonical(ip(peer)),
                "{peer}"
            );
        }
        // Over a Unix socket the right-most hop not in the list is the
        // client; no header: the shared "cannot tell" key.
        assert_eq!(
            none.resolve_unix(&headers(&["6.6.6.6, 198.51.100.7"])),
            ip("198.51.100.7")
        );
        assert_eq!(none.resolve_unix(&HeaderMap::new()), UNREADABLE_CLIENT);
        let listed = ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            listed.resolve_unix(&headers(&["198.51.100.7, 10.2.2.2"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_peer_right_most_untrusted_hop() {
        let r = ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        // The client forged "6.6.6.6"; the proxy appended the real address.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &headers(&["10.9.9.9, 10.8.8.8"])),
            ip("10.9.9.9")
        );
        assert_eq!(r.resolve(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &headers(&["garbage"])),
            UNREADABLE_CLIENT
        );
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            r.resolve(ip("::ffff:10.0.0.2"), &headers(&["1.2.3.4:80"])),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn garbage_hops_never_fall_back_to_the_proxy() {
        let r = ClientIpResolver::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let proxy = ip("127.0.0.1");
        // Garbage left of the real client: the client is still found.
        let h = headers(&["garbage, 203.0.113.66"]);
        assert_eq!(r.resolve(proxy, &h), ip("203.0.113.66"));
        // Garbage right of it: nothing readable to its right.
        let h = headers(&["203.0.113.66, garbage"]);
        assert_eq!(r.resolve(proxy, &h), UNREADABLE_CLIENT);
        // Garbage behind trusted hops: still not the proxy.
        let h = headers(&["garbage, 127.0.0.1"]);
        assert_eq!(r.resolve(proxy, &h), UNREADABLE_CLIENT);
        let h = headers(&["", "203.0.113.9"]);
        assert_eq!(r.resolve(proxy, &h), ip("203.0.113.9"));
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff, 198.51.100.1").unwrap(),
        );
        assert_eq!(r.resolve(proxy, &h), ip("198.51.100.1"));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(ip_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
