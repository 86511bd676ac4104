//! Live counters of a replay (for a progress display and the report's error causes), and
//! what a TLS failure means. Shared by the client, the workers and the dispatcher.

use std::sync::atomic::{AtomicI64, AtomicU64};

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests started.
    pub sent: AtomicU64,
    /// Requests finished (answered or failed).
    pub done: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicI64,
    /// Sends more than 10 ms late.
    pub late: AtomicU64,
    /// Largest lag so far, µs.
    pub max_lag_us: AtomicU64,
    /// Exchanges the tapes hold, when known from their footers (0 if not).
    pub total_hint: AtomicU64,
    /// Requests the target answered (any status).
    pub answered: AtomicU64,
    /// Requests whose connection the target refused (or whose address did not resolve).
    pub unreachable: AtomicU64,
    /// When the schedule starts more than a second after the replay was set up
    /// (`--start-at`): its wall-clock time, ns since the epoch; else 0. Set once the tapes
    /// and settings have been checked, before the wait.
    pub starts_at_unix_ns: AtomicI64,
    /// The first cause of each error kind that has one ([`Progress::note_cause`]).
    pub causes: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Progress {
    /// Keeps the first cause of an error of `kind` (later ones are mostly the same).
    pub fn note_cause(&self, kind: tapedeck_captures::ErrorKind, cause: impl FnOnce() -> String) {
        let mut causes = self.causes.lock().unwrap_or_else(|p| p.into_inner());
        if causes.len() < 16 && !causes.contains_key(kind.as_str()) {
            causes.insert(kind.as_str().to_string(), cause());
        }
    }
}

/// What a TLS handshake failure means and what to do about it, from rustls' error text.
pub fn explain_tls(error: &str, host: &str) -> String {
    let advice = if error.contains("UnknownIssuer") {
        "the target's certificate is signed by a CA this machine does not trust: give that CA with --ca FILE (PEM), or --insecure for a test target".to_string()
    } else if error.contains("CaUsedAsEndEntity") {
        "the target presents a CA certificate (CA:TRUE) as its own: it needs a server certificate signed by that CA; --ca with the CA then trusts it".to_string()
    } else if error.contains("NotValidForName") {
        format!("the certificate is not issued for {host}: target a name it covers (--target), give a matching certificate, or --insecure for a test target")
    } else if error.contains("Expired") {
        "the target's certificate has expired (or this machine's clock is wrong)".to_string()
    } else if error.contains("NotValidYet") {
        "the target's certificate is not valid yet (or this machine's clock is wrong)".to_string()
    } else if error.contains("InvalidContentType") || error.contains("CorruptMessage") {
        "the target does not speak TLS on that port: use http:// in --target".to_string()
    } else {
        "check the target's certificate; --ca FILE trusts a private CA, --insecure skips verification for a test target"
            .to_string()
    };
    format!("{error} — {advice}")
}

/// A target that refused this many connections and answered nothing is not there: the
/// run stops instead of playing the whole schedule into it.
pub const DEAD_TARGET_AFTER: u64 = 20;
