use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::OnceLock;

use airlock_sandbox::{run, Outcome, SandboxSpec, StdioMode, WorkspaceMode, WorkspaceMount};

/// Declare a test that runs as the current user and, when that is root,
/// again as `nobody` (the same test binary re-executed under `setpriv`).
/// Tests run side by side; one declared `alone` runs while no other does
/// (see [`SIDE_BY_SIDE`]).
macro_rules! sandbox_test {
    (alone $(#[$m:meta])* fn $name:ident() $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            let _alone = $crate::common::alone();
            $crate::common::both(concat!(module_path!(), "::", stringify!($name)), || $body)
        }
    };
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            let _beside = $crate::common::beside_others();
            $crate::common::both(concat!(module_path!(), "::", stringify!($name)), || $body)
        }
    };
}

/// The tests start sandboxes from many threads of this one process, as the
/// broker does. Each clone of a sandbox's init copies every descriptor the
/// process has open until init closes them, its first step, which under
/// load can be milliseconds later; among them are the other tests' `flock`s
/// on their overlay work dirs, which that copy keeps held meanwhile. A test
/// that checks who holds those locks runs alone.
static SIDE_BY_SIDE: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    SIDE_BY_SIDE.read().unwrap_or_else(|e| e.into_inner())
}

pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    SIDE_BY_SIDE.write().unwrap_or_else(|e| e.into_inner())
}

const INNER: &str = "AIRLOCK_SUITE_AS_NOBODY";

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Who runs this test body: `root`, `nobody` or `uid N`.
pub fn who() -> String {
    match rustix::process::geteuid().as_raw() {
        0 => "root".into(),
        65534 => "nobody".into(),
        n => format!("uid {n}"),
    }
}

/// This test binary, open without close-on-exec so that `setpriv` (after it
/// became nobody) can run it as `/proc/self/fd/N` although it lives below a
/// directory nobody cannot enter.
fn self_exe() -> &'static std::fs::File {
    static EXE: OnceLock<std::fs::File> = OnceLock::new();
    EXE.get_or_init(|| {
        let f = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::empty()).unwrap();
        f
    })
}

/// Run `body` here; as root, also run this test as nobody and require it
/// to pass there too. Its output (including `SKIPPED:` lines) is shown.
pub fn both(path: &str, body: impl FnOnce()) {
    let test = path.split_once("::").map(|(_, t)| t).unwrap_or(path);
    if std::env::var_os(INNER).is_some() {
        body();
        return;
    }
    eprintln!("[{}] {test}", who());
    body();
    if !is_root() {
        eprintln!("SKIPPED: [nobody] {test}: the suite is not running as root, so it cannot switch to nobody");
        return;
    }
    let fd = self_exe().as_raw_fd();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(format!("/proc/self/fd/{fd}"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .env("HOME", "/nonexistent")
        .env("TMPDIR", "/tmp")
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for l in stderr.lines() {
        eprintln!("[nobody] {l}");
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "as nobody, {test} failed:\n{stdout}\n{stderr}"
    );
}

/// Host processes whose command line contains `marker` (not this one).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if c.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                v.push(pid);
            }
        }
    }
    v
}

/// A unique marker for this test run.
pub fn marker(tag: &str) -> String {
    format!("airlock-suite-{tag}-{}-{}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32
}

/// A temp dir with a workspace and staging dirs, readable by the inside
/// uid when tests run as root.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("airlock-sbx")
            .tempdir()
            .unwrap();
        for d in ["ws", "upper", "work", "home"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        for d in ["", "ws"] {
            std::fs::set_permissions(dir.path().join(d), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let f = Fixture { dir };
        f.own(&f.ws());
        f
    }
    /// As root, give `p` to nobody: the workspace belongs to an ordinary
    /// user, whose uid the sandbox then runs as.
    pub fn own(&self, p: &Path) {
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(p, Some(65534), Some(65534)).unwrap();
        }
    }
    /// Write a file in the workspace (owned like the workspace).
    pub fn write(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.ws().join(rel);
        if let Some(parent) = p.parent() {
            let mut cur = self.ws();
            for c in parent.strip_prefix(self.ws()).unwrap().components() {
                cur.push(c);
                if !cur.exists() {
                    std::fs::create_dir(&cur).unwrap();
                    self.own(&cur);
                }
            }
        }
        std::fs::write(&p, data).unwrap();
        self.own(&p);
        p
    }
    /// The overlay leaves `work/work` with mode 000; open everything up so
    /// the temp dir can be removed.
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::symlink_metadata(p) {
            if md.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        Self::open_up(&e.path());
                    }
                }
            }
        }
    }
    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// A spec running `sh -c script` in the staged workspace.
    pub fn sh(&self, script: &str) -> SandboxSpec {
        let mut s = SandboxSpec::new(
            vec!["/bin/sh".into(), "-c".into(), script.into()],
            self.ws(),
        );
        s.workspace = Some(WorkspaceMount {
            base: self.ws(),
            mode: WorkspaceMode::Staged {
                upper: self.upper(),
                work: self.path().join("work"),
            },
        });
        s.stdio = StdioMode::Capture { max_bytes: 1 << 20 };
        s
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        Self::open_up(self.dir.path());
    }
}

/// Run, or print SKIPPED and return None when the sandbox cannot start here.
pub fn try_run(spec: &SandboxSpec) -> Option<Outcome> {
    match run(spec) {
        Ok(o) => Some(o),
        Err(e @ airlock_sandbox::SandboxError::Namespaces { .. }) => {
            eprintln!("SKIPPED: [{}] {e}", who());
            None
        }
        Err(e) => panic!("sandbox failed: {e}"),
    }
}

/// Start, or print SKIPPED and return None when the sandbox cannot start
/// here.
pub fn try_spawn(spec: &SandboxSpec) -> Option<airlock_sandbox::Running> {
    match airlock_sandbox::spawn(spec) {
        Ok(r) => Some(r),
        Err(e @ airlock_sandbox::SandboxError::Namespaces { .. }) => {
            eprintln!("SKIPPED: [{}] {e}", who());
            None
        }
        Err(e) => panic!("sandbox failed: {e}"),
    }
}

/// Run a spec that must be refused for want of `layer`: the refusal's
/// message, or None (and SKIPPED) when the sandbox cannot start here.
pub fn refusal(spec: &SandboxSpec, layer: airlock_sandbox::Layer) -> Option<String> {
    match run(spec) {
        Err(e @ airlock_sandbox::SandboxError::Layer { layer: l, .. }) if l == layer => {
            Some(e.to_string())
        }
        Err(e @ airlock_sandbox::SandboxError::Namespaces { .. }) => {
            eprintln!("SKIPPED: [{}] {e}", who());
            None
        }
        Err(e) => panic!("expected the {layer:?} layer error, got {e}"),
        Ok(o) => panic!("ran without the {layer:?} layer: {:?}", o.report),
    }
}

pub fn stdout(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
pub fn stderr(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
