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
    if std::fs::symlink_metadata(marker(work)).is_err() {
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
pub fn close_volatile(upper: &Path, work: &Path, sync: bool) -> std::io::Result<()> {
    let m = marker(work);
    if std::fs::symlink_metadata(&m).is_err() {
        return Ok(());
    }
    if sync {
        let d = std::fs::File::open(upper)?;
        rustix::fs::syncfs(&d)?;
    }
    let incompat = work.join("work/incompat");
    for e in std::fs::read_dir(&m)? {
        let p = e?.path();
        if p.is_dir() {
            std::fs::remove_dir(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    std::fs::remove_dir(&m)?;
    std::fs::remove_dir(&incompat)
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
        assert!(work.join("work").is_dir());
        // Closing twice is fine.
        close_volatile(&upper, &work, false).unwrap();
    }
}
