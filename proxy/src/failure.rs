//! What goes wrong with a client's side of a request: the vocabulary shared by the body
//! wrapper that finds it ([`crate::client_body`]), the answer the client gets
//! ([`crate::forward`]) and the counters ([`crate::metrics`]).

/// What went wrong with a client's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFailure {
    /// It did not arrive in time (`--body-timeout`, `--body-min-rate`).
    TimedOut,
    /// It was not valid HTTP framing (a bad chunk size, an overflow).
    Malformed,
    /// The client closed or reset the connection mid-body.
    Aborted,
}

impl ClientFailure {
    /// Every kind, for metrics.
    pub const ALL: [ClientFailure; 3] = [ClientFailure::TimedOut, ClientFailure::Malformed, ClientFailure::Aborted];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientFailure::TimedOut => "body_timeout",
            ClientFailure::Malformed => "malformed_body",
            ClientFailure::Aborted => "aborted",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            ClientFailure::TimedOut => 1,
            ClientFailure::Malformed => 2,
            ClientFailure::Aborted => 3,
        }
    }

    pub(crate) fn of_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ClientFailure::TimedOut),
            2 => Some(ClientFailure::Malformed),
            3 => Some(ClientFailure::Aborted),
            _ => None,
        }
    }

    pub(crate) fn of_hyper(e: &hyper::Error) -> Self {
        // hyper reports a bad chunk (size line, overflow, missing CRLF) as an I/O error of
        // kind InvalidInput or InvalidData under its body error; a closed connection as an
        // incomplete message or an unexpected EOF.
        let mut source = std::error::Error::source(e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData) {
                    return ClientFailure::Malformed;
                }
            }
            source = err.source();
        }
        if e.is_parse() || e.is_parse_too_large() {
            ClientFailure::Malformed
        } else {
            ClientFailure::Aborted
        }
    }
}
