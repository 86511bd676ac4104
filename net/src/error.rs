//! Why a request to another service failed: the kind it is counted under, what was being
//! done, and the cause kept as the error's [`source`](std::error::Error::source) (a DNS
//! resolver's, the socket's, rustls' or hyper's error), so logs and reports can say why
//! and not only what.

use std::error::Error as StdError;
use std::fmt;

use tapedeck_captures::ErrorKind;

/// A failed connect, handshake or exchange.
#[derive(Debug)]
pub struct NetError {
    /// What kind of failure (the label it is counted under).
    pub kind: ErrorKind,
    /// What was being done (`connecting to 10.0.0.7:443`); the cause is the source.
    what: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl NetError {
    /// A failure of `kind` while doing `what`, caused by `source`.
    pub fn new(kind: ErrorKind, what: impl Into<String>, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        NetError { kind, what: what.into(), source: Some(source.into()) }
    }

    /// A failure with no underlying error (a timeout, a name with no addresses).
    pub fn bare(kind: ErrorKind, what: impl Into<String>) -> Self {
        NetError { kind, what: what.into(), source: None }
    }

    /// A request that hyper failed (see [`request_kind`]).
    pub fn request(e: hyper::Error) -> Self {
        NetError::new(request_kind(&e), "the exchange", e)
    }

    /// What was being done and every cause, on one line (for logs and reports).
    pub fn detail(&self) -> String {
        let mut line = self.what.clone();
        let mut cause: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        line
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.what, self.kind)
    }
}

impl StdError for NetError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The kind of a request hyper failed before a response head: a timeout, a malformed
/// answer (the protocol's), else a connection closed, reset or cancelled.
pub fn request_kind(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::ResponseTimeout
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Reset
    }
}

/// Why a response body broke off: cut short of its announced length (the connection
/// closed early), malformed framing (a bad chunk size), or a reset.
pub fn body_kind(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::ResponseTimeout;
    }
    if e.is_parse() {
        return ErrorKind::Protocol;
    }
    let mut source = StdError::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::UnexpectedEof => ErrorKind::IncompleteBody,
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => ErrorKind::Protocol,
                _ => ErrorKind::Reset,
            };
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            // A stream reset by the server, or a connection gone: reset; framing errors are
            // the protocol's.
            return if h2.reason() == Some(h2::Reason::NO_ERROR) {
                // Ended "gracefully" before the body was whole.
                ErrorKind::IncompleteBody
            } else if h2.is_go_away() || h2.is_reset() || h2.is_io() {
                ErrorKind::Reset
            } else {
                ErrorKind::Protocol
            };
        }
        source = cause.source();
    }
    if e.is_incomplete_message() {
        ErrorKind::IncompleteBody
    } else {
        ErrorKind::Reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_as_the_source_and_said_once_in_the_detail() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let e = NetError::new(ErrorKind::ConnectRefused, "connecting to 127.0.0.1:9", io);
        assert_eq!(e.to_string(), "connecting to 127.0.0.1:9 (connect_refused)");
        let source = e.source().expect("the cause is the source");
        assert_eq!(source.downcast_ref::<std::io::Error>().unwrap().kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(e.detail(), "connecting to 127.0.0.1:9: Connection refused (os error 111)");
        let bare = NetError::bare(ErrorKind::ConnectTimeout, "connecting to 10.0.0.1:443: timed out");
        assert!(bare.source().is_none());
        assert_eq!(bare.detail(), "connecting to 10.0.0.1:443: timed out");
    }
}
