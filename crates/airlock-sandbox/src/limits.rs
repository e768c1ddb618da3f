//! Resource limits: a per-run cgroup (v2 when delegated, else v1 memory and
//! pids controllers, which need root), else rlimits inside the sandbox's own
//! user namespace. CPU time and file size always come from rlimits.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Limits;

/// Which mechanism enforces memory and process limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// A delegated cgroup v2 subtree.
    CgroupV2,
    /// cgroup v1 `memory` and `pids` controllers.
    CgroupV1,
    /// `RLIMIT_DATA` / `RLIMIT_NPROC`.
    Rlimit,
}

impl Mechanism {
    /// `cgroup-v2`, `cgroup-v1` or `rlimit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::CgroupV2 => "cgroup-v2",
            Mechanism::CgroupV1 => "cgroup-v1",
            Mechanism::Rlimit => "rlimit",
        }
    }
}

const V1_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup path of this process for a v1 controller (or `""` for v2).
/// A /proc file in one read: `read_to_string` starts with a small buffer,
/// and each read of a seq_file regenerates it.
fn read_proc(path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = String::with_capacity(64 * 1024);
    fs::File::open(path).ok()?.read_to_string(&mut s).ok()?;
    Some(s)
}

/// This process's cgroup for `controller` ("" for v2), from the text of
/// /proc/self/cgroup.
fn own_cgroup(text: &str, controller: &str) -> Option<String> {
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        if ctrls.split(',').any(|c| c == controller) {
            return Some(path.to_string());
        }
    }
    None
}

/// `statfs` type of a cgroup2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where a cgroup2 hierarchy is mounted, if any: one of the two usual
/// places (unified layout, hybrid layout), told by its filesystem type, or
/// else the first one /proc/self/mountinfo lists. The usual places first:
/// generating mountinfo cost some 75 µs of CPU per run here, beside the
/// sandbox's init building its root.
fn cgroup2_mount() -> Option<PathBuf> {
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        #[allow(clippy::unnecessary_cast)] // not i64 on every architecture
        if rustix::fs::statfs(p).is_ok_and(|s| s.f_type as i64 == CGROUP2_SUPER_MAGIC) {
            return Some(PathBuf::from(p));
        }
    }
    cgroup2_mount_points(&read_proc("/proc/self/mountinfo")?).next()
}

/// The mount points of the cgroup2 filesystems a mountinfo text lists, in
/// its order.
fn cgroup2_mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        post.starts_with("cgroup2 ")
            .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
    })
}

fn writable(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let euid = current_euid();
    match fs::metadata(p) {
        Ok(m) => euid == 0 || (m.uid() == euid && m.mode() & 0o200 != 0),
        Err(_) => false,
    }
}

/// Effective uid of this process.
pub fn current_euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A delegated v2 cgroup where we may create children with memory and pids.
fn v2_parent(own_text: &str) -> Option<PathBuf> {
    let own = own_cgroup(own_text, "")?;
    let mount = cgroup2_mount()?;
    let dir = mount.join(own.trim_start_matches('/'));
    let ctrl = fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    let has = |c: &str| ctrl.split_whitespace().any(|x| x == c);
    if has("memory") && has("pids") && writable(&dir) {
        Some(dir)
    } else {
        None
    }
}

fn v1_dir(own_text: &str, controller: &str) -> Option<PathBuf> {
    let own = own_cgroup(own_text, controller)?;
    let dir = Path::new(V1_ROOT)
        .join(controller)
        .join(own.trim_start_matches('/'));
    if dir.join("cgroup.procs").exists() && writable(&dir) {
        Some(dir)
    } else {
        None
    }
}

/// Where this process may create its runs' cgroups.
enum Parents {
    V2(PathBuf),
    V1 { memory: PathBuf, pids: PathBuf },
}

/// The cgroup parents this process can use, v2 first (without creating
/// anything); `None`: neither.
fn parents() -> Option<Parents> {
    let own = read_proc("/proc/self/cgroup").unwrap_or_default();
    if let Some(p) = v2_parent(&own) {
        return Some(Parents::V2(p));
    }
    Some(Parents::V1 {
        memory: v1_dir(&own, "memory")?,
        pids: v1_dir(&own, "pids")?,
    })
}

/// Which mechanism this process can use (without creating anything).
pub fn detect() -> Mechanism {
    match parents() {
        Some(Parents::V2(_)) => Mechanism::CgroupV2,
        Some(Parents::V1 { .. }) => Mechanism::CgroupV1,
        None => Mechanism::Rlimit,
    }
}

/// Counters read from a cgroup after the run.
#[derive(Debug, Clone, Default)]
pub struct CgroupStats {
    /// Peak memory usage in bytes.
    pub peak_memory: Option<u64>,
    /// The OOM killer fired (or the limit was hit and allocations failed).
    pub oom_killed: bool,
    /// A fork failed because of the pids limit.
    pub pids_hit: bool,
}

/// A per-run cgroup (one directory per v1 controller, or one v2 dir).
/// Removed on drop (after killing anything left in it).
#[derive(Debug)]
pub struct RunCgroup {
    mechanism: Mechanism,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    removed: bool,
}

/// How old an earlier run's empty cgroup must be before another run removes
/// it. Its owner's pid is gone by then too; the age only guards against a
/// process of another pid namespace sharing the parent cgroup, whose run's
/// cgroup is empty for a moment between its creation and init joining it.
pub const STALE_CGROUP_AGE: Duration = Duration::from_secs(10);

/// The pid in a run cgroup's name (`airlock-<pid>-<n>`, see
/// [`RunCgroup::create`]), or `None` for any other name.
fn run_cgroup_owner(name: &str) -> Option<i32> {
    let (pid, n) = name.strip_prefix("airlock-")?.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Numbers the runs of this process, for their cgroups' names.
static RUN_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The name of the next run's cgroup, `<pid>-<n>` ([`RunCgroup::create`]
/// makes it `airlock-<pid>-<n>`, which [`run_cgroup_owner`] reads back).
pub(crate) fn next_run_name() -> String {
    use std::sync::atomic::Ordering;
    format!(
        "{}-{}",
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    fs::write(p, v).map_err(|e| format!("write {} to {}: {e}", v.trim(), p.display()))
}

impl RunCgroup {
    /// Create `airlock-<name>` cgroups with the mechanism [`detect`]
    /// would name, and set the limits.
    pub fn create(name: &str, limits: &Limits) -> Result<RunCgroup, String> {
        let leaf = format!("airlock-{name}");
        let parents = parents().ok_or(
            "no cgroup mechanism (no delegated v2 subtree, no writable v1 memory and pids)",
        )?;
        let mut cg = RunCgroup {
            mechanism: match parents {
                Parents::V2(_) => Mechanism::CgroupV2,
                Parents::V1 { .. } => Mechanism::CgroupV1,
            },
            memory: None,
            pids: None,
            removed: false,
        };
        match parents {
            Parents::V2(parent) => {
                let d = parent.join(&leaf);
                fs::create_dir(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
                cg.memory = Some(d.clone());
                cg.pids = Some(d.clone());
                if let Some(m) = limits.memory {
                    write(&d.join("memory.max"), &m.to_string())?;
                    let _ = fs::write(d.join("memory.swap.max"), "0");
                }
                if let Some(p) = limits.pids {
                    write(&d.join("pids.max"), &(p + 1).to_string())?;
                }
            }
            Parents::V1 { memory, pids } => {
                let md = memory.join(&leaf);
                fs::create_dir(&md).map_err(|e| format!("mkdir {}: {e}", md.display()))?;
                cg.memory = Some(md.clone());
                let pd = pids.join(&leaf);
                fs::create_dir(&pd).map_err(|e| format!("mkdir {}: {e}", pd.display()))?;
                cg.pids = Some(pd.clone());
                if let Some(m) = limits.memory {
                    write(&md.join("memory.limit_in_bytes"), &m.to_string())?;
                    // Swap would let the balloon grow past the limit.
                    let sw = md.join("memory.memsw.limit_in_bytes");
                    if sw.exists() {
                        write(&sw, &m.to_string())?;
                    }
                    let _ = fs::write(md.join("memory.swappiness"), "0");
                }
                if let Some(p) = limits.pids {
                    write(&pd.join("pids.max"), &(p + 1).to_string())?;
                }
            }
        }
        Ok(cg)
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    fn dirs(&self) -> Vec<&PathBuf> {
        let mut v: Vec<&PathBuf> = self.memory.iter().chain(self.pids.iter()).collect();
        v.dedup();
        v
    }

    /// For cgroup v1: the `tasks` files, opened for writing. The sandbox's
    /// init writes `0` to each to move itself: a single thread moving
    /// itself skips the global threadgroup lock, whose write side waits for
    /// an RCU grace period (~10 ms) when a pid is written to `cgroup.procs`.
    /// The kernel checks the opener's credentials, so the child may do it
    /// after giving up its own. `None` for v2.
    pub fn self_join_files(&self) -> Result<Option<Vec<std::fs::File>>, String> {
        if self.mechanism != Mechanism::CgroupV1 {
            return Ok(None);
        }
        self.dirs()
            .into_iter()
            .map(|d| open_tasks(d))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// For cgroup v1: the parent cgroups' `tasks` files, opened for
    /// writing, in the order of [`RunCgroup::self_join_files`]. The
    /// sandbox's init writes `0` to each once it is alone, so that the
    /// cgroup can be removed before init has exited.
    pub fn self_leave_files(&self) -> Result<Vec<std::fs::File>, String> {
        if self.mechanism != Mechanism::CgroupV1 {
            return Ok(vec![]);
        }
        self.dirs()
            .into_iter()
            .map(|d| {
                let parent = d
                    .parent()
                    .ok_or_else(|| format!("{} has no parent", d.display()))?;
                open_tasks(parent)
            })
            .collect()
    }

    /// Remove the cgroup(s) if nothing is in them any more, trying each
    /// once: whether all are gone. What is left stays for
    /// [`RunCgroup::remove`].
    pub fn remove_if_empty(&mut self) -> bool {
        if self.removed {
            return true;
        }
        let mut all = true;
        for d in self.dirs() {
            all &= remove_cgroup_dir(d).is_ok();
        }
        self.removed = all;
        all
    }

    /// Move `pid` into the cgroup(s).
    pub fn add(&self, pid: i32) -> Result<(), String> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Read peak memory and whether limits were hit.
    pub fn stats(&self) -> CgroupStats {
        let mut s = CgroupStats::default();
        let num = |p: PathBuf| {
            fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let kv = |p: PathBuf, key: &str| -> Option<u64> {
            let t = fs::read_to_string(p).ok()?;
            t.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim().parse().ok()))
        };
        if let Some(m) = &self.memory {
            match self.mechanism {
                Mechanism::CgroupV1 => {
                    s.peak_memory = num(m.join("memory.max_usage_in_bytes"));
                    s.oom_killed = kv(m.join("memory.oom_control"), "oom_kill ").unwrap_or(0) > 0;
                }
                Mechanism::CgroupV2 => {
                    s.peak_memory = num(m.join("memory.peak"));
                    s.oom_killed = kv(m.join("memory.events"), "oom_kill ").unwrap_or(0) > 0;
                }
                Mechanism::Rlimit => {}
            }
        }
        if let Some(p) = &self.pids {
            s.pids_hit = kv(p.join("pids.events"), "max ").unwrap_or(0) > 0;
        }
        s
    }

    /// SIGKILL everything still in the cgroup.
    pub fn kill_all(&self) {
        for d in self.dirs() {
            if let Ok(t) = fs::read_to_string(d.join("cgroup.procs")) {
                for pid in t.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // Killing by pid is fine here: these pids are members of
                    // our own cgroup, which nothing else can join.
                    if let Some(p) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    }
                }
            }
        }
    }

    /// Remove the cgroup directories (retrying while the kernel finishes
    /// tearing the processes down).
    pub fn remove(&mut self) -> Result<(), String> {
        if self.removed {
            return Ok(());
        }
        let mut last = String::new();
        for d in self.dirs().into_iter().cloned().collect::<Vec<_>>() {
            let mut ok = false;
            for i in 0..200 {
                match remove_cgroup_dir(&d) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        last = format!("rmdir {}: {e}", d.display());
                        if i == 20 {
                            self.kill_all();
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            if !ok {
                tracing::warn!("{last}");
            }
        }
        self.removed = true;
        if last.is_empty() {
            Ok(())
        } else {
            Err(last)
        }
    }

    /// Remove the cgroups that runs left behind when their process was
    /// killed before it could remove them (SIGKILL, the OOM killer): every
    /// sibling named `airlock-<pid>-<n>` whose process is gone, that is
    /// empty (the kernel refuses to remove one that is not) and that is at
    /// least [`STALE_CGROUP_AGE`] old. Returns how many were removed.
    pub fn sweep_stale_siblings(&self) -> usize {
        let mut removed = 0;
        let parents: Vec<&Path> = self.dirs().into_iter().filter_map(|d| d.parent()).collect();
        for parent in parents {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(run_cgroup_owner) else {
                    continue;
                };
                let gone = rustix::process::Pid::from_raw(pid).is_some_and(|p| {
                    rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)
                });
                // Its age is looked at only for a cgroup whose owner is gone
                // (not for this run's own, nor a running neighbour's).
                let old = || {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age >= STALE_CGROUP_AGE)
                };
                if gone && old() && fs::remove_dir(e.path()).is_ok() {
                    tracing::info!(
                        "removed {}, left by a run that was killed",
                        e.path().display()
                    );
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// A cgroup's `tasks` file in `dir`, opened for writing (cgroup v1: a
/// thread writing `0` there moves itself into that cgroup).
fn open_tasks(dir: &Path) -> Result<fs::File, String> {
    let p = dir.join("tasks");
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| format!("open {}: {e}", p.display()))
}

/// `rmdir` a cgroup; one already gone counts as removed.
fn remove_cgroup_dir(d: &Path) -> std::io::Result<()> {
    match fs::remove_dir(d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// The rlimits `(resource, soft, hard)` that stand in for a cgroup's
/// memory and pids limits, applied inside the sandbox besides the
/// [`base_rlimits`] when no cgroup could be made.
pub fn cgroup_stand_ins(limits: &Limits) -> Vec<(i32, u64, u64)> {
    let mut v = vec![];
    if let Some(m) = limits.memory {
        v.push((libc::RLIMIT_DATA as i32, m, m));
    }
    if let Some(p) = limits.pids {
        // +1: the sandbox's init process counts too.
        v.push((libc::RLIMIT_NPROC as i32, p + 1, p + 1));
    }
    v
}

/// The rlimits applied whatever limits the memory and processes: no core
/// dumps, CPU time and file size.
pub fn base_rlimits(limits: &Limits) -> Vec<(i32, u64, u64)> {
    let mut v = vec![(libc::RLIMIT_CORE as i32, 0, 0)];
    if let Some(c) = limits.cpu_time {
        let s = c.as_secs().max(1);
        // SIGXCPU at the soft limit (reported as CpuLimit), SIGKILL a
        // second later if it is caught.
        v.push((libc::RLIMIT_CPU as i32, s, s + 1));
    }
    if let Some(d) = limits.disk {
        v.push((libc::RLIMIT_FSIZE as i32, d, d));
    }
    v
}

/// Parse a size like `512M`, `2G`, `1048576`, `64k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].trim().to_ascii_lowercase();
            let m = match unit.trim_end_matches('b').trim_end_matches('i') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("bad size {s:?} (use e.g. 512M, 2G)")),
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (use e.g. 512M, 2G)"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("bad size {s:?}"))
}

/// Parse a duration like `30s`, `10m`, `1h`, `500ms`, `90` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("bad duration {s:?} (use e.g. 30s, 10m, 1h, 500ms)");
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..i].parse().map_err(|_| bad())?;
    let d = match &s[i..] {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

/// Serde for optional sizes: an integer of bytes or a string like `512M`.
pub mod serde_size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }

    /// Serialize as a plain number of bytes.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }

    /// Accept `1073741824` or `"1G"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::N(n)) => Ok(Some(n)),
            Some(Raw::S(t)) => super::parse_size(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for optional durations: a string like `30s`, `10m`, `500ms`, or
/// an integer of seconds. Serialized as a string (`"30s"`, `"1500ms"`).
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }

    /// `"30s"` for whole seconds, else `"1500ms"`.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) if d.subsec_millis() == 0 => s.serialize_str(&format!("{}s", d.as_secs())),
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }

    /// Accept `30` (seconds) or `"30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::N(n)) => Ok(Some(Duration::from_secs(n))),
            Some(Raw::S(t)) => super::parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cgroup2 mount found at a usual place is one that mountinfo
    /// lists as cgroup2, and there is one exactly when mountinfo has one.
    #[test]
    fn cgroup2_mount_agrees_with_mountinfo() {
        let text = read_proc("/proc/self/mountinfo").unwrap();
        let listed: Vec<PathBuf> = cgroup2_mount_points(&text).collect();
        match cgroup2_mount() {
            Some(p) => assert!(listed.contains(&p), "{} not in {listed:?}", p.display()),
            None => assert!(listed.is_empty(), "missed {listed:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn rlimit_table() {
        let l = Limits {
            memory: Some(1 << 20),
            pids: Some(5),
            cpu_time: Some(Duration::from_secs(2)),
            timeout: None,
            disk: Some(4096),
        };
        // Without a cgroup: the base and the stand-ins.
        let mut r = base_rlimits(&l);
        r.extend(cgroup_stand_ins(&l));
        assert!(r.contains(&(libc::RLIMIT_DATA as i32, 1 << 20, 1 << 20)));
        assert!(r.contains(&(libc::RLIMIT_NPROC as i32, 6, 6)));
        assert!(r.contains(&(libc::RLIMIT_CPU as i32, 2, 3)));
        assert!(r.contains(&(libc::RLIMIT_FSIZE as i32, 4096, 4096)));
        // With one: the base alone.
        let r = base_rlimits(&l);
        assert!(!r
            .iter()
            .any(|x| x.0 == libc::RLIMIT_DATA as i32 || x.0 == libc::RLIMIT_NPROC as i32));
    }

    #[test]
    fn cgroup_lifecycle_when_root() {
        let m = detect();
        if m == Mechanism::Rlimit {
            eprintln!("SKIPPED: no writable cgroup here (not root or not delegated)");
            return;
        }
        let l = Limits {
            memory: Some(64 << 20),
            pids: Some(10),
            ..Default::default()
        };
        let mut cg =
            RunCgroup::create(&format!("test-{}", std::process::id()), &l).expect("create");
        assert_eq!(cg.mechanism(), m);
        let dirs: Vec<PathBuf> = cg.dirs().into_iter().cloned().collect();
        assert!(dirs.iter().all(|d| d.exists()));
        let st = cg.stats();
        assert!(!st.oom_killed && !st.pids_hit);
        cg.remove().expect("remove");
        assert!(dirs.iter().all(|d| !d.exists()));
    }

    #[test]
    fn run_cgroup_names_give_their_owner() {
        assert_eq!(run_cgroup_owner("airlock-1234-0"), Some(1234));
        assert_eq!(run_cgroup_owner("airlock-1234-17"), Some(1234));
        // What a run is named by is read back as this process.
        assert_eq!(
            run_cgroup_owner(&format!("airlock-{}", next_run_name())),
            Some(std::process::id() as i32)
        );
        for other in [
            "airlock-test-1234",
            "airlock-1234",
            "airlock-1234-",
            "airlock--0",
            "airlock-0-0",
            "airlock-12a-0",
            "airlock-1234-0-1",
            "airlock-+12-0",
            "memory.limit_in_bytes",
            "user.slice",
        ] {
            assert_eq!(run_cgroup_owner(other), None, "{other}");
        }
    }

    /// A child process killed and reaped on drop.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// What a run killed before its clean-up leaves (an empty cgroup named
    /// after a pid that is gone) is removed by the next run; nothing that
    /// may still be in use is.
    #[test]
    fn cgroups_of_killed_runs_are_swept_when_root() {
        if detect() == Mechanism::Rlimit {
            eprintln!("SKIPPED: no writable cgroup here (not root or not delegated)");
            return;
        }
        let l = Limits::default();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let live = Child(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap(),
        );
        let live_pid = live.0.id();
        let tag = std::process::id();
        let make = |pid: u32, n: u32, age: u64| {
            let cg = RunCgroup::create(&format!("{pid}-{tag}{n}"), &l).expect("create");
            for d in cg.dirs() {
                let then = std::time::SystemTime::now() - Duration::from_secs(age);
                fs::File::open(d).unwrap().set_modified(then).unwrap();
            }
            let dirs: Vec<PathBuf> = cg.dirs().into_iter().cloned().collect();
            (cg, dirs)
        };
        let old = STALE_CGROUP_AGE.as_secs() + 5;
        let (_stale, stale) = make(gone_pid, 1, old);
        let (_fresh, fresh) = make(gone_pid, 2, 0);
        let (_owned, owned) = make(live_pid, 3, old);
        let (busy_cg, busy) = make(gone_pid, 4, old);
        busy_cg.add(live_pid as i32).expect("move a process in");

        let sweeper = RunCgroup::create(&format!("test-sweep-{tag}"), &l).expect("create");
        let removed = sweeper.sweep_stale_siblings();
        assert!(stale.iter().all(|d| !d.exists()), "{stale:?} left");
        assert!(removed >= stale.len(), "{removed} removed");
        for (what, dirs) in [
            ("a cgroup younger than the stale age", &fresh),
            ("a cgroup whose owner lives", &owned),
            ("a cgroup with a process in it", &busy),
        ] {
            assert!(dirs.iter().all(|d| d.exists()), "{what} was removed");
        }
        assert!(sweeper.dirs().iter().all(|d| d.exists()));
    }
}
