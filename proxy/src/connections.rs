//! Open client connections, counted across workers (an upgraded one while its tunnel
//! lives): the connection cap reads the count and shutdown waits for it to reach zero.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Open connections across all workers (upgraded ones too), so shutdown can wait for them
/// and the connection cap counts them.
#[derive(Default)]
pub(crate) struct Connections {
    open: AtomicUsize,
    all_closed: Notify,
}

impl Connections {
    /// Counts one more open connection until the guard is dropped.
    pub(crate) fn hold(self: &Arc<Self>, metrics: Arc<Metrics>) -> ConnGuard {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        metrics.connections.set(open as i64);
        ConnGuard(self.clone(), metrics)
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits up to `limit` for every connection to close; true if they did.
    pub(crate) async fn wait_closed(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.all_closed.notified();
                if self.open.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

/// An open connection, counted until dropped.
pub(crate) struct ConnGuard(Arc<Connections>, Arc<Metrics>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let left = self.0.open.fetch_sub(1, Ordering::AcqRel) - 1;
        self.1.connections.set(left as i64);
        if left == 0 {
            self.0.all_closed.notify_waiters();
        }
    }
}
