//! The job's buffer budget: what the host may hold for a plugin at once, whatever it
//! asks for. Query rows not yet read, a response body on its way, a program's output
//! not yet read: each holds part of one budget (`limits.buffers`, default 64 MiB)
//! until it is handed over or dropped. Program output waits for room (the program
//! blocks on its pipe); a query or a response that does not fit fails, naming the
//! limit.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Notify,
}

/// Bytes held from a budget, given back when dropped.
pub struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.budget.used.lock().unwrap() -= self.bytes;
        self.budget.freed.notify_waiters();
    }
}

impl Held {
    /// Gives back `bytes` of what is held (rows handed over one batch at a time).
    pub fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        *self.budget.used.lock().unwrap() -= bytes;
        self.budget.freed.notify_waiters();
    }
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: Mutex::new(0),
            freed: Notify::new(),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// What is left now.
    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(*self.used.lock().unwrap())
    }

    /// Holds `bytes` now, or says why not.
    pub fn try_hold(self: &Arc<Self>, bytes: u64) -> Result<Held, String> {
        let mut used = self.used.lock().unwrap();
        if *used + bytes > self.limit {
            return Err(format!(
                "the job's buffers would hold {} bytes, over their limit of {} \
                 (limits.buffers in the policy)",
                *used + bytes,
                self.limit
            ));
        }
        *used += bytes;
        Ok(Held {
            budget: self.clone(),
            bytes,
        })
    }

    /// Holds `bytes`, waiting until there is room; `None` if `bytes` alone is over
    /// the limit.
    pub async fn hold(self: &Arc<Self>, bytes: u64) -> Option<Held> {
        if bytes > self.limit {
            return None;
        }
        loop {
            let freed = self.freed.notified();
            if let Ok(h) = self.try_hold(bytes) {
                return Some(h);
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holders_wait_for_room_and_refusals_name_the_limit() {
        let b = Budget::new(100);
        let a = b.try_hold(60).unwrap();
        let e = b.try_hold(50).err().unwrap();
        assert!(e.contains("limits.buffers"), "{e}");
        assert_eq!(b.available(), 40);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.hold(50).await.map(|h| h.bytes) })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap(), Some(50));
        assert_eq!(b.available(), 100);
        assert!(b.hold(101).await.is_none());
        let mut h = b.try_hold(30).unwrap();
        h.release(10);
        assert_eq!(b.available(), 80);
    }
}
