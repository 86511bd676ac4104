//! Header fields that belong to one connection, not to the message (RFC 9110 §7.6.1,
//! RFC 9112 §6.1, RFC 9113 §8.2.2): never forwarded, recorded or replayed as they were.

/// The fields every hop removes (lower case). The proxy adds the hop's own credentials
/// (`Proxy-Authorization`, `Proxy-Authenticate`); a replay adds the framing it sets itself
/// (`Content-Length`, `Expect`, `Host`).
pub const CONNECTION_SPECIFIC: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// True for a field of [`CONNECTION_SPECIFIC`], in any case.
pub fn is_connection_specific(name: &str) -> bool {
    CONNECTION_SPECIFIC.iter().any(|n| name.eq_ignore_ascii_case(n))
}
