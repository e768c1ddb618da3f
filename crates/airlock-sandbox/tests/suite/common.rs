use std::path::{Path, PathBuf};

use airlock_sandbox::{run, Outcome, SandboxSpec, StdioMode, WorkspaceMode, WorkspaceMount};

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

/// Run, or print SKIPPED and return None when the sandbox cannot start here.
pub fn try_run(spec: &SandboxSpec) -> Option<Outcome> {
    match run(spec) {
        Ok(o) => Some(o),
        Err(e @ airlock_sandbox::SandboxError::Namespaces { .. }) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("sandbox failed: {e}"),
    }
}

pub fn stdout(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
pub fn stderr(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
