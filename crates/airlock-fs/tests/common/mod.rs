//! A real directory tree in a temp dir: a fake `$HOME` with secrets beside
//! the workspace the agent is granted.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

pub const CANARY: &[u8] = b"-----BEGIN CANARY PRIVATE KEY-----\n";
pub const BASHRC: &[u8] = b"# canary bashrc\n";

pub struct Fx {
    _t: tempfile::TempDir,
    /// The temp root (canonical).
    pub root: String,
    /// `<root>/home`
    pub home: String,
    /// `<root>/home/ws`, the grant / staging base.
    pub ws: String,
    /// `<home>/.ssh/id_rsa`
    pub canary: String,
    /// `<home>/.bashrc`
    pub bashrc: String,
}

impl Fx {
    pub fn new() -> Fx {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let home = format!("{root}/home");
        let ws = format!("{home}/ws");
        fs::create_dir_all(format!("{home}/.ssh")).unwrap();
        fs::create_dir_all(&ws).unwrap();
        let canary = format!("{home}/.ssh/id_rsa");
        fs::write(&canary, CANARY).unwrap();
        let bashrc = format!("{home}/.bashrc");
        fs::write(&bashrc, BASHRC).unwrap();
        fs::write(format!("{ws}/readme.txt"), b"hello\n").unwrap();
        Fx {
            _t: t,
            root,
            home,
            ws,
            canary,
            bashrc,
        }
    }

    /// `<ws>/<rel>`
    pub fn w(&self, rel: &str) -> String {
        format!("{}/{rel}", self.ws)
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.w(rel);
        if let Some(parent) = Path::new(&p).parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(p, data).unwrap();
    }

    /// The secrets outside the workspace are unchanged.
    pub fn assert_canaries_intact(&self) {
        assert_eq!(
            fs::read(&self.canary).unwrap(),
            CANARY,
            "canary key changed"
        );
        assert_eq!(fs::read(&self.bashrc).unwrap(), BASHRC, ".bashrc changed");
        let names: Vec<_> = fs::read_dir(format!("{}/.ssh", self.home))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["id_rsa".to_string()],
            "something was written into ~/.ssh"
        );
    }
}

pub fn mode_of(p: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}
