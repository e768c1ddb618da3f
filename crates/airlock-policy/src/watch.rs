//! Polling the policy directory and reloading on change.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::loader;
use crate::PolicyEngine;

/// What identifies the directory's state: each policy file's name, size,
/// modification time and inode.
pub(crate) type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

pub(crate) fn fingerprint(dir: &Path) -> Fingerprint {
    let Ok(files) = loader::list_policy_files(dir, false) else {
        return Vec::new();
    };
    files
        .into_iter()
        .map(|p| match std::fs::metadata(&p) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                let (len, mtime, ino) = (m.len(), m.modified().ok(), m.ino());
                (p, len, mtime, ino)
            }
            Err(_) => (p, u64::MAX, None, 0),
        })
        .collect()
}

/// A running directory watcher. Dropping it stops the watcher thread.
#[derive(Debug)]
pub struct WatchHandle {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Stop watching and wait for the watcher thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Whether the watcher thread is running (false when there is no policy
    /// directory or the thread could not be started).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("policy watcher thread panicked");
            }
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start the watcher.
pub(crate) fn spawn(engine: PolicyEngine, dir: Option<PathBuf>, interval: Duration) -> WatchHandle {
    let (tx, rx) = mpsc::channel::<()>();
    let Some(dir) = dir else {
        tracing::info!("no policy directory configured; nothing to watch");
        return WatchHandle {
            stop: Some(tx),
            thread: None,
        };
    };
    let spawned = std::thread::Builder::new().name("airlock-policy-watch".into()).spawn(move || {
        // Compare the directory with what the *active* set was read from, so
        // reloads made elsewhere (SIGHUP, the operator) are taken into
        // account; remember a state that failed to load so it is not retried
        // every tick.
        let mut failed: Option<Fingerprint> = None;
        // Ends when the handle is dropped (sender gone) or sends a stop.
        while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
            let now = fingerprint(&dir);
            if now == engine.active().fingerprint || failed.as_ref() == Some(&now) {
                continue;
            }
            match engine.reload() {
                Ok(rev) => {
                    failed = None;
                    tracing::info!(dir = %dir.display(), revision = %rev, "policy directory changed; reloaded")
                }
                Err(e) => {
                    failed = Some(now);
                    tracing::warn!(dir = %dir.display(), error = %e, "policy directory changed but does not load; keeping the last good set")
                }
            }
        }
    });
    match spawned {
        Ok(thread) => WatchHandle {
            stop: Some(tx),
            thread: Some(thread),
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot start the policy watcher thread; reload with SIGHUP instead");
            WatchHandle {
                stop: Some(tx),
                thread: None,
            }
        }
    }
}
