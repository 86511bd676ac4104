//! Why a replay could not run.

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The tapes cannot be read.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The target's TLS settings cannot be used (`--ca`, its host as a server name).
    #[error("{what}: {source}")]
    Tls {
        /// Which setting (`--ca`, `--target`).
        what: &'static str,
        /// Why.
        #[source]
        source: tapedeck_net::tls::TlsError,
    },
    /// The target is the service the tapes were recorded from.
    #[error(
        "the target is the service these tapes were recorded from ({0}); replaying there would send \
         recorded traffic to production. Point --target at staging, or pass --allow-production-target"
    )]
    ProductionTarget(String),
    /// The run was to start at `--start-at`, which had passed.
    #[error(
        "this host is {late:.1?} past --start-at {at}: the shards would not be in step. Start every host \
         before that time (a minute ahead is usual), or pass --late-ok to join the schedule late (requests \
         already due are sent at once, and counted as late)"
    )]
    Late {
        /// The start time asked for.
        at: String,
        /// How late this host is.
        late: std::time::Duration,
    },
    /// The results tape cannot be written.
    #[error("results: {0}")]
    Results(#[source] tapedeck_captures::TapeError),
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread of the replay stopped unexpectedly (a bug): its numbers are missing, so no
    /// report is made rather than one that looks cleaner than the run.
    #[error(
        "the replay's {thread} thread stopped unexpectedly ({why}); the numbers it held are \
         missing, so no report is made. This is a bug in tapedeck: please report it with the \
         command line"
    )]
    Crashed {
        /// The thread's name.
        thread: String,
        /// Its panic message.
        why: String,
    },
}
