//! The crash marker of a `volatile` overlay mount over a staging area.
//!
//! The sandbox mounts a staged workspace with overlayfs' `volatile` option:
//! without it, every unmount syncs the whole upper filesystem (all of its
//! dirty data, whoever wrote it), which on a busy disk cost more than the
//! rest of a sandboxed `/bin/true`. While a volatile mount may have left
//! data unsynced, the kernel keeps `work/work/incompat/volatile` in the work
//! dir and refuses to mount that work dir again. Airlock records the boot it
//! mounts in (`work/airlock-boot-id`, written before the mount, so on disk
//! whenever the marker is); after the run it syncs the filesystem if the
//! command changed the upper dir, and only then removes the marker
//! ([`close_volatile`]).
//!
//! Closing moves the kernel's work dir (`work/work`, marker included) aside
//! to `work/closed-*` in one rename, and [`sweep_closed`] removes such
//! directories later: the sandbox does it while a new sandbox builds its
//! root, off the path of any run. The next mount creates `work/work` anew.
//!
//! A marker left from the current boot only means that the process that
//! mounted died before that step: the page cache still holds everything, so
//! a sync and the removal close it. A marker from an earlier boot means the
//! machine went down while staged data may not have reached the disk: the
//! area's changes may be incomplete, and commit refuses them until they are
//! discarded (or the marker is removed by hand after review).

use std::path::{Path, PathBuf};

/// Name of the file in the work dir holding the boot id of the last mount.
pub const BOOT_ID_FILE: &str = "airlock-boot-id";

/// What the work dir says about the last volatile mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolatileState {
    /// No volatile mount left open.
    Clean,
    /// Left open in this boot (the mounting process died): closable.
    ThisBoot,
    /// Left open in an earlier boot: staged data may be incomplete.
    EarlierBoot,
}

/// The marker, after opening up the directories on its way: the kernel
/// creates them without permission bits, so not even their owner could
/// see it otherwise (root could). Their owner may chmod them; overlayfs
/// recreates its work dir on every mount anyway.
fn marker(work: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let inner = work.join("work");
    for d in [
        inner.clone(),
        inner.join("incompat"),
        inner.join("incompat/volatile"),
    ] {
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() && m.permissions().mode() & 0o700 != 0o700 => {
                let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    inner.join("incompat/volatile")
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The state of the overlay work dir `work`.
pub fn volatile_state(work: &Path) -> VolatileState {
    let open = |dir: &Path| std::fs::symlink_metadata(marker(dir)).is_ok();
    if !open(work) && !run_dirs(work).iter().any(|d| open(d)) {
        return VolatileState::Clean;
    }
    let recorded = std::fs::read_to_string(work.join(BOOT_ID_FILE)).ok();
    match (recorded, boot_id()) {
        (Some(r), Some(now)) if r.trim() == now => VolatileState::ThisBoot,
        _ => VolatileState::EarlierBoot,
    }
}

/// Record this boot in `work` before a volatile mount (written only when it
/// changed: once per boot and area).
pub fn record_boot(work: &Path) -> std::io::Result<()> {
    let id = boot_id().ok_or_else(|| std::io::Error::other("no boot id in /proc"))?;
    let f = work.join(BOOT_ID_FILE);
    if std::fs::read_to_string(&f).is_ok_and(|s| s.trim() == id) {
        return Ok(());
    }
    let tmp = work.join(format!("{BOOT_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &f)
}

/// Close a volatile mount of `upper`/`work` that is no longer mounted:
/// with `sync`, first sync the filesystem holding `upper` (a failure keeps
/// the marker, so a later crash is still noticed); then remove the marker.
///
/// The marker goes with the kernel's whole work dir, moved to
/// `work/closed-*` (see [`sweep_closed`]). Nothing to do when that dir is
/// absent (no mount since the last close).
pub fn close_volatile(upper: &Path, work: &Path, sync: bool) -> std::io::Result<()> {
    let inner = work.join("work");
    if std::fs::symlink_metadata(&inner).is_err() {
        return Ok(());
    }
    if sync {
        sync_upper(upper)?;
    }
    set_aside(work, &inner)
}

/// Move `path` (a directory on the filesystem of `work`, an overlay work
/// dir) into `work` under a fresh `closed-*` name, for [`sweep_closed`] to
/// remove later: one rename now instead of the removal.
fn set_aside(work: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(path, fresh_name(work, CLOSED_PREFIX))
}

/// A name in `work` no other process has used: `prefix`, the pid, the time
/// and a counter (a dead process's leftovers may carry a reused pid).
fn fresh_name(work: &Path, prefix: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    work.join(format!("{prefix}{}-{nanos}-{n}", std::process::id()))
}

/// Sync the filesystem holding `upper` (what a run wrote there is on disk
/// once this returns).
fn sync_upper(upper: &Path) -> std::io::Result<()> {
    let d = std::fs::File::open(upper)?;
    rustix::fs::syncfs(&d)?;
    Ok(())
}

/// Name prefix of the work dir of a run that started while another run
/// of the same area was going.
const RUN_PREFIX: &str = "run-";

/// The work dirs of runs started beside another (`work/run-*`).
fn run_dirs(work: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(work) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(RUN_PREFIX))
        })
        .map(|e| e.path())
        .collect()
}

/// Longest a run waits for a sandbox on its way out to give up the area's
/// work dir (its exit takes about 0.5 ms here) before it goes on without.
const UNMOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Length of the record naming the sandbox process that last held the
/// area's work dir, at the start of [`RUNNING_FILE`] (see
/// [`RunWorkDir::record_holder`]).
const HOLDER_LEN: usize = 48;

/// Name of the file in the area's work dir that every run of the area
/// holds a shared `flock` on while it goes (see [`RunWorkDir::take`]); it
/// starts with the record of [`RunWorkDir::record_holder`].
const RUNNING_FILE: &str = "airlock-running";

/// The overlay work dir one run uses, held (`flock`, exclusive) for as long
/// as its overlay may be mounted.
///
/// Runs over the same workspace share one staging area and may overlap,
/// but two overlays cannot share a work dir (the second mount finds the
/// first one's volatile marker and is refused). The first run takes the
/// area's work dir itself; a run starting while another run holds it gets
/// a fresh `work/run-*` of its own. A run dir whose lock nobody holds
/// belongs to a run that is gone.
///
/// The sandbox's overlay may outlive the run that mounted it: `airlock
/// run` does not wait for the kernel to tear the sandbox down. Its init
/// keeps a copy of the work dir's lock (see [`RunWorkDir::lock_fd`]), and
/// the run names it ([`RunWorkDir::record_holder`]); a run taking the
/// area's work dir waits for that process to have exited (moments; at
/// most `UNMOUNT_WAIT`, 1 s). Each run also
/// holds a shared lock on `work/airlock-running` while it goes, which tells a
/// run finding the area's work dir held whether a run goes (then it takes
/// a run dir) or only a sandbox on its way out holds it (then it waits and
/// takes the area's), rather than mounting beside an overlay on its way
/// out.
#[derive(Debug)]
pub struct RunWorkDir {
    dir: PathBuf,
    area: PathBuf,
    lock: std::fs::File,
    running: std::fs::File,
}

impl RunWorkDir {
    /// Take a work dir in the area's work dir `work`: `work` itself when no
    /// other run holds it ([`RunWorkDir::holds_area`]), else a run dir.
    pub fn take(work: &Path) -> std::io::Result<RunWorkDir> {
        use rustix::fs::{flock, FlockOperation as Op};
        use std::os::unix::fs::OpenOptionsExt;
        let running = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(work.join(RUNNING_FILE))?;
        // Taken first: whoever holds the area's work dir and goes holds
        // this too.
        flock(&running, Op::LockShared)?;
        let f = std::fs::File::open(work)?;
        let deadline = std::time::Instant::now() + UNMOUNT_WAIT;
        loop {
            if flock(&f, Op::NonBlockingLockExclusive).is_ok() {
                wait_for_holder(&running, deadline);
                return Ok(RunWorkDir {
                    dir: work.to_path_buf(),
                    area: work.to_path_buf(),
                    lock: f,
                    running,
                });
            }
            // Held: by a run going, or by a sandbox whose overlay is being
            // unmounted, which is worth waiting for. Nobody else goes if
            // this run gets the exclusive lock (the conversion drops its
            // shared one first, and gives nothing back when it fails).
            let nobody_going = flock(&running, Op::NonBlockingLockExclusive).is_ok();
            flock(&running, Op::LockShared)?;
            // Looked at again and again rather than waited for: another
            // run starting beside this one may take the dir first, and then
            // hold it for as long as it goes.
            if !nobody_going || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let dir = fresh_name(work, RUN_PREFIX);
        std::fs::create_dir(&dir)?;
        let f = std::fs::File::open(&dir)?;
        flock(&f, Op::LockExclusive)?;
        Ok(RunWorkDir {
            dir,
            area: work.to_path_buf(),
            lock: f,
            running,
        })
    }

    /// Record `pid` (`pidfd`), the sandbox process whose overlay uses this
    /// run's work dir, when that is the area's own: the next run taking it
    /// waits for that process to have exited. (Its copy of the lock alone
    /// does not do: probed, the overlay was still mounted just after the
    /// lock came free in 2–3 % of runs, and never once the process had
    /// exited; the kernel does not promise even that, see
    /// `docs/sandbox.md`.) The process is named by its pid and the inode
    /// of its pidfd, which is never reused.
    pub fn record_holder(
        &self,
        pid: i32,
        pidfd: std::os::fd::BorrowedFd<'_>,
    ) -> std::io::Result<()> {
        if !self.holds_area() {
            return Ok(());
        }
        let ino = rustix::fs::fstat(pidfd)?.st_ino;
        // Overwritten in place: no allocation on the filesystem.
        let mut rec = format!("{pid} {ino}").into_bytes();
        rec.resize(HOLDER_LEN - 1, b' ');
        rec.push(b'\n');
        rustix::io::pwrite(&self.running, &rec, 0)?;
        Ok(())
    }

    /// The descriptor holding the lock. A process that keeps a copy (the
    /// sandbox's init does, until it exits) keeps the work dir held after
    /// this is dropped, until the copy's last close.
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.lock.as_fd()
    }

    /// The directory to give the overlay as its work dir.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The area's work dir (closed mounts are swept there).
    pub fn area(&self) -> &Path {
        &self.area
    }

    /// Whether this run holds the area's work dir itself (no other run
    /// does), and so may close what dead runs left ([`close_dead_runs`]).
    pub fn holds_area(&self) -> bool {
        self.dir == self.area
    }

    /// Close this run's volatile mount (no longer mounted) of `upper`: with
    /// `sync`, sync first. The area's own work dir is closed as by
    /// [`close_volatile`]; a run dir of its own is moved aside whole.
    pub fn close(self, upper: &Path, sync: bool) -> std::io::Result<()> {
        if self.holds_area() {
            return close_volatile(upper, &self.dir, sync);
        }
        if sync {
            sync_upper(upper)?;
        }
        set_aside(&self.area, &self.dir)
    }
}

/// Wait, until `deadline` at most, for the process recorded by
/// [`RunWorkDir::record_holder`] in `running` (the area's
/// [`RUNNING_FILE`]) to exit.
fn wait_for_holder(running: &std::fs::File, deadline: std::time::Instant) {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut rec = [0u8; HOLDER_LEN];
    let Ok(n) = rustix::io::pread(running, &mut rec, 0) else {
        return;
    };
    let text = String::from_utf8_lossy(&rec[..n]);
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (Some(Some(pid)), Some(Some(ino))) = (words.next(), words.next()) else {
        return;
    };
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // Gone (ESRCH), or the pid is another process's now.
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    if rustix::fs::fstat(&fd).map(|st| st.st_ino) != Ok(ino) {
        return;
    }
    // A pidfd is readable once its process has exited.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let timeout = rustix::event::Timespec::try_from(left).ok();
    let _ = poll(&mut [PollFd::new(&fd, PollFlags::IN)], timeout.as_ref());
}

/// With the area's work dir `work` held by this run alone: close the work
/// dirs of runs that are gone (sync, then set aside), unless one was left
/// open in an earlier boot (see [`volatile_state`]: refused before this).
pub fn close_dead_runs(upper: &Path, work: &Path) -> std::io::Result<()> {
    let mut synced = false;
    for d in run_dirs(work) {
        let Ok(f) = std::fs::File::open(&d) else {
            continue;
        };
        let nb = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        if rustix::fs::flock(&f, nb).is_err() {
            continue; // a run still going
        }
        // One sync of the filesystem serves every dead run's marker.
        if !synced && std::fs::symlink_metadata(marker(&d)).is_ok() {
            sync_upper(upper)?;
            synced = true;
        }
        set_aside(work, &d)?;
    }
    Ok(())
}

/// Name prefix of a closed mount's work dir in the area's work dir.
const CLOSED_PREFIX: &str = "closed-";

/// Remove the work dirs of closed mounts (`work/closed-*`) left by
/// [`close_volatile`]. Best effort: what cannot be removed now is tried
/// again next time. Returns how many were removed.
pub fn sweep_closed(work: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work) else {
        return 0;
    };
    let Ok(dir) = std::fs::File::open(work) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(CLOSED_PREFIX) {
            continue;
        }
        let shown = work.join(name).display().to_string();
        match crate::staging::remove_tree(&dir, name, &shown) {
            Ok(()) => n += 1,
            Err(e) => tracing::debug!("removing {shown}: {e}"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_states_and_closing() {
        let t = tempfile::tempdir().unwrap();
        let (upper, work) = (t.path().join("upper"), t.path().join("work"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(work.join("work/incompat/volatile")).unwrap();
        std::fs::write(work.join("work/incompat/volatile/dirty"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for d in ["work/incompat/volatile", "work/incompat", "work"] {
            std::fs::set_permissions(work.join(d), std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        // No recorded boot: treated as an earlier boot (fail closed).
        assert_eq!(volatile_state(&work), VolatileState::EarlierBoot);
        std::fs::write(work.join(BOOT_ID_FILE), "some-other-boot\n").unwrap();
        assert_eq!(volatile_state(&work), VolatileState::EarlierBoot);
        record_boot(&work).unwrap();
        assert_eq!(volatile_state(&work), VolatileState::ThisBoot);
        close_volatile(&upper, &work, true).unwrap();
        assert_eq!(volatile_state(&work), VolatileState::Clean);
        // The kernel's work dir, marker and all, was moved aside...
        assert!(!work.join("work").exists());
        let closed = |w: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(w)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(CLOSED_PREFIX))
                .collect();
            v.sort();
            v
        };
        assert_eq!(closed(&work).len(), 1);
        // Closing twice is fine.
        close_volatile(&upper, &work, false).unwrap();
        assert_eq!(closed(&work).len(), 1);
        // ...and is swept later, 000 directories and all; the boot id stays.
        assert_eq!(sweep_closed(&work), 1);
        assert!(closed(&work).is_empty());
        assert!(work.join(BOOT_ID_FILE).is_file());
        assert_eq!(sweep_closed(&work), 0);

        // Runs over the area at once: the first takes the work dir, the
        // second a run dir of its own; an open marker in a run dir counts.
        let a = RunWorkDir::take(&work).unwrap();
        assert!(a.holds_area());
        assert_eq!(a.path(), work.as_path());
        let b = RunWorkDir::take(&work).unwrap();
        assert!(!b.holds_area());
        assert!(b.path().starts_with(&work) && b.path() != work.as_path());
        std::fs::create_dir_all(b.path().join("work/incompat/volatile")).unwrap();
        assert_eq!(volatile_state(&work), VolatileState::ThisBoot);
        // While b runs, closing dead runs leaves its dir alone.
        close_dead_runs(&upper, &work).unwrap();
        assert!(b.path().exists());
        // b gone without closing (its process died): closed by the next
        // run that has the area to itself.
        let b_dir = b.path().to_path_buf();
        drop(b);
        close_dead_runs(&upper, &work).unwrap();
        assert!(!b_dir.exists());
        assert_eq!(volatile_state(&work), VolatileState::Clean);
        // A run dir closed normally is moved aside whole.
        let c = RunWorkDir::take(&work).unwrap();
        let c_dir = c.path().to_path_buf();
        c.close(&upper, false).unwrap();
        assert!(!c_dir.exists());
        a.close(&upper, false).unwrap();
        sweep_closed(&work);
        assert!(closed(&work).is_empty());
    }

    #[test]
    fn a_run_dir_name_left_by_a_dead_process_with_this_pid_is_not_reused() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        // What an earlier process with the same pid may have left.
        for n in 0..4 {
            std::fs::create_dir(work.join(format!("{RUN_PREFIX}{}-{n}", std::process::id())))
                .unwrap();
        }
        let a = RunWorkDir::take(&work).unwrap();
        assert!(a.holds_area());
        for _ in 0..4 {
            let b = RunWorkDir::take(&work).unwrap();
            assert!(!b.holds_area());
            assert!(b.path().is_dir());
        }
    }

    #[test]
    fn a_run_waits_for_a_sandbox_on_its_way_out_but_not_for_one_going() {
        use rustix::fs::{flock, FlockOperation as Op};
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        // A run going: the next one gets a run dir of its own, at once.
        let a = RunWorkDir::take(&work).unwrap();
        assert!(a.holds_area());
        let b = RunWorkDir::take(&work).unwrap();
        assert!(!b.holds_area());
        drop(b);
        // Its sandbox keeps the area's lock after the run is over (a copy
        // of the descriptor), until it exits.
        let sandbox = a.lock_fd().try_clone_to_owned().unwrap();
        drop(a);
        let (tx, rx) = std::sync::mpsc::channel();
        let w = work.clone();
        let next = std::thread::spawn(move || {
            let c = RunWorkDir::take(&w).unwrap();
            tx.send(()).unwrap();
            c.holds_area()
        });
        // The next run waits for that rather than mounting beside the
        // overlay.
        let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(
            waited.is_err(),
            "took a work dir while the area's was still held"
        );
        drop(sandbox);
        assert!(
            next.join().unwrap(),
            "did not get the area's work dir once free"
        );

        // Waiting, it sees a run start and take the dir (here: a run's
        // shared lock appears): it stops waiting, as that run may go on
        // for long.
        let sandbox = std::fs::File::open(&work).unwrap();
        flock(&sandbox, Op::LockExclusive).unwrap();
        let w = work.clone();
        let next = std::thread::spawn(move || RunWorkDir::take(&w).unwrap().holds_area());
        std::thread::sleep(std::time::Duration::from_millis(100));
        let going = std::fs::File::open(work.join(RUNNING_FILE)).unwrap();
        flock(&going, Op::LockShared).unwrap();
        assert!(
            !next.join().unwrap(),
            "took the area's dir while it was held"
        );
        drop(going);

        // A holder that never lets go is waited for no longer than
        // UNMOUNT_WAIT.
        let t = std::time::Instant::now();
        assert!(!RunWorkDir::take(&work).unwrap().holds_area());
        assert!(t.elapsed() >= UNMOUNT_WAIT);
        drop(sandbox);
    }
}
