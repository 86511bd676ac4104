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

/// Lets the calling thread (and the threads it starts) run only on a CPU that would
/// otherwise be idle (`SCHED_IDLE`; nice 19 where that is refused): work that must never
/// take a moment of CPU from the requests a process serves, such as the live shadow.
pub(crate) fn idle_priority() {
    // SAFETY: plain syscalls on the calling thread (pid 0); failure only leaves the
    // priority as is.
    #[cfg(target_os = "linux")]
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}
