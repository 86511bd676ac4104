//! A reverse proxy's header rules: hop-by-hop fields dropped (RFC 9110 §7.6.1), trailers,
//! gRPC and upgrades recognised, `Host` and authorities checked, and the forwarding
//! headers (`X-Forwarded-*`, RFC 7239 `Forwarded`) written from what the proxy saw.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

use crate::config::Forwarding;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Hop-by-hop fields (RFC 9110 §7.6.1), never forwarded: the connection's own
/// ([`tapedeck_net::headers::CONNECTION_SPECIFIC`]) and this hop's credentials.
const HOP_BY_HOP: [HeaderName; 9] = {
    let c = tapedeck_net::headers::CONNECTION_SPECIFIC;
    [
        HeaderName::from_static(c[0]),
        HeaderName::from_static(c[1]),
        HeaderName::from_static(c[2]),
        HeaderName::from_static(c[3]),
        HeaderName::from_static(c[4]),
        HeaderName::from_static(c[5]),
        HeaderName::from_static(c[6]),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
};

/// gRPC over HTTP/2 (`application/grpc`, `+proto`, `+json`…); gRPC-Web, made for
/// HTTP/1.1, is not.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| tapedeck_captures::wire::is_grpc_content_type(v.as_bytes()))
}

/// The client accepts trailers (`TE: trailers`).
pub(crate) fn wants_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

pub(crate) fn is_upgrade(headers: &HeaderMap, version: Version) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Removes hop-by-hop fields, including those named in `Connection`. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = if upgrade { headers.get(header::UPGRADE).cloned() } else { None };
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(u) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// A `Host` or authority a proxy may pass on: `host[:port]` with a real port, no user
/// information, nothing a header parser downstream could split differently (quotes,
/// commas, spaces).
pub(crate) fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && !h.contains(['@', ',', ';', '"', ' '])
        && h.parse::<http::uri::Authority>().is_ok()
        // A port, if any, is a real one (`a:99999999` parses as an authority).
        && (h.ends_with(']') || h.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_ok()))
}

/// Writes the forwarding headers of a request from `peer` (over TLS or not) that named
/// `original_host`. A client's own claims about where the request came from are kept only
/// from a trusted proxy (`--trust-forwarded`), so the upstream's last element is always
/// what this proxy saw.
pub(crate) fn add_forwarding(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    client_ip: &HeaderValue,
    tls: bool,
    original_host: Option<&HeaderValue>,
    rules: &Forwarding,
) {
    let proto = if tls { "https" } else { "http" };
    // A client's own claims about where the request came from are believed only from
    // a trusted proxy (`--trust-forwarded`); anyone else's are dropped, so the
    // upstream's last, trusted element is always what this proxy saw.
    if !rules.trust.trusts(peer.ip()) {
        // Every spelling an upstream might believe (True-Client-IP, CF-Connecting-IP,
        // X-Cluster-Client-IP …), not only the three this proxy writes.
        let claims: Vec<HeaderName> = headers
            .keys()
            .filter(|n| tapedeck_captures::scrub::is_client_address_header(n.as_str()))
            .cloned()
            .collect();
        for name in claims.into_iter().chain([X_FORWARDED_FOR, header::FORWARDED, X_REAL_IP]) {
            headers.remove(name);
        }
    }
    if rules.x_forwarded {
        let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", peer.ip())).ok(),
            None => Some(client_ip.clone()),
        };
        if let Some(v) = xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        // What this proxy saw, whoever says otherwise.
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        match original_host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    if rules.forwarded {
        let ip = peer.ip();
        let node = if peer.is_ipv6() { format!("\"[{ip}]\"") } else { ip.to_string() };
        let mut element = format!("for={node};proto={proto}");
        if let Some(h) = original_host.and_then(|h| h.to_str().ok()) {
            element.push_str(&format!(";host=\"{h}\""));
        }
        let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {element}"),
            None => element,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header::FORWARDED, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Trust;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_go_and_so_do_the_ones_connection_names() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
        // An upgrade keeps what it needs.
        let mut h = map(&[("connection", "Upgrade, keep-alive"), ("upgrade", "websocket"), ("keep-alive", "1")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            (h.get("connection").unwrap(), h.get("upgrade").unwrap()),
            (&HeaderValue::from_static("upgrade"), &HeaderValue::from_static("websocket"))
        );
        assert!(h.get("keep-alive").is_none());
    }

    #[test]
    fn trailers_grpc_and_upgrades_are_recognised_by_their_tokens() {
        assert!(wants_trailers(&map(&[("te", "gzip;q=0.5, Trailers")])));
        assert!(!wants_trailers(&map(&[("te", "trailersx")])));
        assert!(is_grpc(&map(&[("content-type", "application/grpc+proto")])));
        assert!(!is_grpc(&map(&[("content-type", "application/grpc-web")])));
        let ws = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&ws, Version::HTTP_11));
        assert!(!is_upgrade(&ws, Version::HTTP_2), "HTTP/2 has no Upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")]), Version::HTTP_11), "Connection must name it");
    }

    #[test]
    fn hosts_with_userinfo_lists_quotes_or_impossible_ports_are_refused() {
        for ok in ["example.com", "example.com:8080", "[::1]:443", "10.0.0.1"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "user@example.com", "a,b", "a;b", "\"a\"", "a b", "a:99999999", "a:port"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn forwarding_headers_say_what_the_proxy_saw_unless_the_client_is_trusted() {
        let peer: SocketAddr = "203.0.113.9:5555".parse().unwrap();
        let ip = HeaderValue::from_static("203.0.113.9");
        let host = HeaderValue::from_static("shop.example.com");
        let rules = Forwarding { forwarded: true, ..Forwarding::default() };
        let claims = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4"), ("true-client-ip", "1.2.3.4")];
        // An untrusted client's claims are replaced.
        let mut h = map(&claims);
        add_forwarding(&mut h, peer, &ip, true, Some(&host), &rules);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example.com");
        assert_eq!(h.get("forwarded").unwrap(), "for=203.0.113.9;proto=https;host=\"shop.example.com\"");
        assert!(h.get("true-client-ip").is_none());
        // A trusted proxy's are appended to.
        let trusted = Forwarding { trust: Trust::All, ..rules.clone() };
        let mut h = map(&claims);
        add_forwarding(&mut h, peer, &ip, false, None, &trusted);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 203.0.113.9");
        assert_eq!(h.get("forwarded").unwrap(), "for=1.2.3.4, for=203.0.113.9;proto=http");
        assert!(h.get("x-forwarded-host").is_none());
        // IPv6 nodes are quoted (RFC 7239 §6).
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, "[2001:db8::1]:1".parse().unwrap(), &ip, false, None, &rules);
        assert_eq!(h.get("forwarded").unwrap(), "for=\"[2001:db8::1]\";proto=http");
    }
}
