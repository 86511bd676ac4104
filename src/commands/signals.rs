//! Stop signals, caught from the moment they are installed: a SIGINT or SIGTERM that
//! comes a moment later is never the default one, which kills a process without its
//! summary, its drained requests or its sealed segment.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGINT (Ctrl-C) and SIGTERM (a supervisor's stop), either one.
pub(crate) struct Stop {
    int: Option<Signal>,
    term: Option<Signal>,
}

impl Stop {
    /// Installs both handlers now; must run inside a tokio runtime's context.
    pub(crate) fn install() -> Self {
        Stop { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            () = recv(&mut self.int) => {}
            () = recv(&mut self.term) => {}
        }
    }
}

/// Waits for the next delivery of `signal`; forever when it could not be installed.
pub(crate) async fn recv(signal: &mut Option<Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// SIGHUP, installed now (inside a tokio runtime's context).
pub(crate) fn hangup() -> Option<Signal> {
    signal(SignalKind::hangup()).ok()
}
