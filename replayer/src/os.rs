//! What the replayer asks of the operating system, best effort: on Linux, precise timers
//! for the dispatcher and a lower priority for background threads; elsewhere nothing (the
//! replay runs, its sends a little later than scheduled on a busy machine).

/// Lets the calling thread sleep precisely: asks the kernel for a 1 µs timer slack (the
/// default 50 µs would make every sleep late by that much).
pub fn precise_timers() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000);
    }
}

/// Lowers the calling thread's CPU priority (nice 10): a thread that digests what the
/// workers hand it yields the CPU to them, so that on a busy machine request timing, not
/// background work, comes first.
pub(crate) fn background_priority() {
    // SAFETY: plain syscalls on the calling thread; failure only leaves the priority as is.
    #[cfg(target_os = "linux")]
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
