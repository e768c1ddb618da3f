//! Fresh key pairs for minting, made ahead of time.
//!
//! Every biscuit carries the public half of a one-off key pair whose
//! private half lets the holder append (attenuating) blocks. Generating it
//! is an Ed25519 base-point multiplication and a point compression, about
//! a third of a mint. A background thread keeps a small stock of them, so
//! a mint only takes one; when the stock is empty (a burst of mints) the
//! mint makes its own, as before. Each key pair is handed out once.

use std::sync::{Arc, Condvar, Mutex};

use biscuit_auth::KeyPair;

/// Key pairs kept in stock.
const STOCK: usize = 32;
/// The refill thread wakes when the stock falls to this.
const LOW: usize = STOCK / 2;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    stock: Vec<KeyPair>,
    /// The pool was dropped: the refill thread returns.
    closed: bool,
}

/// The stock and its refill thread; the thread ends when the pool is dropped.
pub(crate) struct KeyPool {
    shared: Arc<Shared>,
}

impl KeyPool {
    /// A pool that fills in the background. Without a thread (the process
    /// cannot start one), every take makes a fresh key pair.
    pub(crate) fn new() -> KeyPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let for_thread = shared.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("airlock-keypool".into())
            .spawn(move || refill(&for_thread))
        {
            tracing::warn!(error = %e, "cannot start the key pair refill thread; minting makes its own");
        }
        KeyPool { shared }
    }

    /// A key pair never handed out before.
    pub(crate) fn take(&self) -> KeyPair {
        let (kp, left) = {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let kp = state.stock.pop();
            (kp, state.stock.len())
        };
        if left <= LOW {
            self.shared.wake.notify_one();
        }
        kp.unwrap_or_else(KeyPair::new)
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
    }
}

fn refill(shared: &Shared) {
    loop {
        let missing = {
            let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let state = shared
                .wake
                .wait_while(state, |s| s.stock.len() > LOW && !s.closed)
                .unwrap_or_else(|p| p.into_inner());
            if state.closed {
                return;
            }
            STOCK.saturating_sub(state.stock.len())
        };
        // Made outside the lock, so a mint never waits for the refill.
        let fresh: Vec<KeyPair> = (0..missing).map(|_| KeyPair::new()).collect();
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.stock.extend(fresh);
        state.stock.truncate(STOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_pair_is_handed_out_once() {
        let pool = KeyPool::new();
        let mut seen = HashSet::new();
        for _ in 0..(STOCK * 8) {
            let kp = pool.take();
            assert!(
                seen.insert(kp.public().to_bytes_hex()),
                "a key pair was handed out twice"
            );
        }
    }

    #[test]
    fn the_refill_thread_ends_with_the_pool() {
        let pool = KeyPool::new();
        let weak = Arc::downgrade(&pool.shared);
        let _ = pool.take();
        drop(pool);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // The thread drops its reference when it returns.
        while weak.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the refill thread outlived its pool"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
