//! What keeps requests in order on replay: a recorded session or connection.

use tapedeck_captures::{Exchange, HttpVersion};

/// What keeps requests in order: a recorded session, else a recorded HTTP/1 connection.
/// HTTP/2 requests without a session, and requests whose connection is unknown (imports),
/// are independent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionKey {
    /// The sampling key's (pseudonymised) value.
    Session(String),
    /// A recorded client connection.
    Connection(u64),
    /// No ordering constraint.
    Single(u64),
}

impl SessionKey {
    /// A hash of the key that is the same in every run (for `--sample` and for spreading
    /// sessions over workers).
    pub fn stable_hash(&self) -> u64 {
        fn mix(mut x: u64) -> u64 {
            // splitmix64's finaliser.
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        }
        match self {
            SessionKey::Session(s) => mix(tapedeck_captures::convert::stable_hash(s.as_bytes())),
            SessionKey::Connection(c) => mix(c ^ 0x5555_5555_5555_5555),
            SessionKey::Single(id) => mix(*id),
        }
    }
}

/// The session `ex` belongs to.
pub fn session_key(ex: &Exchange) -> SessionKey {
    match &ex.session {
        Some(s) => SessionKey::Session(s.clone()),
        None if ex.connection.0 == 0 || ex.request.version == HttpVersion::H2 => SessionKey::Single(ex.id.0),
        None => SessionKey::Connection(ex.connection.0),
    }
}
