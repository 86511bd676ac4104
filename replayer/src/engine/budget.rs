//! A channel from the workers' event loops to a thread, bounded by bytes rather than
//! count (what is queued may be large responses). A sender waits for room; the receiver
//! gives the room back once an item is dealt with. Waiting delays the request that waits
//! (and the sends behind it, which then show as lag) — nothing is dropped to keep pace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::sync::Semaphore;

/// The sending side (cheap to clone).
pub(crate) struct Sender<T> {
    tx: mpsc::Sender<(T, u32)>,
    budget: Arc<Semaphore>,
    capacity: u32,
    /// Items that had to wait for room.
    pub waited: Arc<AtomicU64>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
            capacity: self.capacity,
            waited: self.waited.clone(),
        }
    }
}

/// The receiving side.
pub(crate) struct Receiver<T> {
    rx: mpsc::Receiver<(T, u32)>,
    budget: Arc<Semaphore>,
}

/// A channel holding at most `kib` KiB of items.
pub(crate) fn channel<T>(kib: u32) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let budget = Arc::new(Semaphore::new(kib as usize));
    (Sender { tx, budget: budget.clone(), capacity: kib.max(1), waited: Arc::default() }, Receiver { rx, budget })
}

impl<T> Sender<T> {
    /// Sends `item`, which holds about `kib` KiB, once there is room. Returns false when
    /// the receiver is gone.
    pub async fn send(&self, item: T, kib: u32) -> bool {
        // An item larger than the whole budget waits for all of it.
        let kib = kib.clamp(1, self.capacity);
        let permit = match self.budget.try_acquire_many(kib) {
            Ok(p) => p,
            Err(_) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                match self.budget.acquire_many(kib).await {
                    Ok(p) => p,
                    Err(_) => return false,
                }
            }
        };
        // The receiver gives the room back once it is done with the item.
        permit.forget();
        if self.tx.send((item, kib)).is_err() {
            self.budget.add_permits(kib as usize);
            return false;
        }
        true
    }
}

impl<T> Sender<T> {
    /// Sends `item` if there is room for it now; gives it back if not (or if the
    /// receiver is gone).
    pub fn try_send(&self, item: T, kib: u32) -> Result<(), T> {
        let kib = kib.clamp(1, self.capacity);
        let Ok(permit) = self.budget.try_acquire_many(kib) else { return Err(item) };
        permit.forget();
        self.tx.send((item, kib)).map_err(|back| {
            self.budget.add_permits(kib as usize);
            back.0 .0
        })
    }

    /// Sends `item` at once, outside the budget (for the few requests a stopped run
    /// records as it ends). Returns false when the receiver is gone.
    pub fn send_now(&self, item: T) -> bool {
        self.tx.send((item, 0)).is_ok()
    }
}

impl<T> Receiver<T> {
    /// The next item and its size; `None` once every sender is gone.
    pub fn recv(&self) -> Option<(T, u32)> {
        self.rx.recv().ok()
    }

    /// The next item and its size, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<(T, u32), mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Gives back the room of an item dealt with.
    pub fn done(&self, kib: u32) {
        self.budget.add_permits(kib as usize);
    }
}

/// `bytes` in the budget's unit (KiB, rounded up).
pub(crate) fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_send_gives_the_item_back_when_full_and_room_returns_when_done() {
        let (tx, rx) = channel::<u32>(10);
        assert!(tx.try_send(1, 6).is_ok());
        assert_eq!(tx.try_send(2, 6), Err(2), "6 + 6 KiB do not fit in 10");
        let (item, kib) = rx.recv().unwrap();
        assert_eq!((item, kib), (1, 6));
        rx.done(kib);
        assert!(tx.try_send(3, 6).is_ok());
        // Outside the budget: always sent, gives nothing back.
        assert!(tx.send_now(4));
        assert_eq!(rx.recv().unwrap(), (3, 6));
        assert_eq!(rx.recv().unwrap(), (4, 0));
    }
}
