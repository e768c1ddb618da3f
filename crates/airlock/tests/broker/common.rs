//! Harness: a real `airlock serve` process on a temp socket with a temp
//! `$HOME`, stand-in agents as separate processes (so each is its own
//! session), and the CLI for operator calls.
//!
//! The test process itself must not talk to the agent socket in a test
//! that also makes operator calls: it would become a session holder, and
//! the operator socket refuses every process that descends from one.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The `airlock` binary under test (`AIRLOCK_TEST_BIN` overrides, for runs
/// as another user that cannot read the build directory).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("AIRLOCK_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_airlock").to_string())
    })
}

pub fn agent_script() -> PathBuf {
    match std::env::var_os("AIRLOCK_TEST_AGENT") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/agent.py"),
    }
}

/// A temp home with a workspace, a runtime dir and an "outside" dir holding
/// secrets the agent must never reach.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub ws: PathBuf,
    pub run: PathBuf,
    pub outside: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("airlock-it-")
            .tempdir()
            .unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let home = root.join("home");
        let ws = home.join("proj");
        let run = root.join("run");
        let outside = root.join("outside");
        for d in [&home, &ws, &run, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(
            home.join(".ssh/id_rsa"),
            "-----BEGIN OPENSSH PRIVATE KEY----- canary-ssh\n",
        )
        .unwrap();
        std::fs::write(outside.join("secret.txt"), "canary-outside\n").unwrap();
        std::fs::write(ws.join("report.txt"), "Q4 revenue: 100\n").unwrap();
        Env {
            tmp,
            home,
            ws,
            run,
            outside,
        }
    }

    /// Write `text` as `name` in the user's policy directory (created when
    /// missing); the file's path.
    pub fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.home.join(".config/airlock/policy");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join("airlock/broker.sock")
    }

    pub fn operator_socket(&self) -> PathBuf {
        self.run.join("airlock/operator.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.join(".local/state/airlock")
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir().join("audit")
    }

    pub fn config_path(&self) -> PathBuf {
        self.tmp.path().join("config.toml")
    }

    /// Environment for every process of the test.
    pub fn apply(&self, c: &mut Command) {
        apply_env(c, &self.home, &self.run);
    }

    /// Run the CLI.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        self.apply(&mut c);
        c.args(args).stdin(Stdio::null()).output().unwrap()
    }
}

/// Overlayfs leaves its work directory mode 000, which a non-root owner
/// cannot descend to delete: open every directory up before the temp dir
/// is removed, so nothing outlives the test.
fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            make_removable(&e.path());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        make_removable(self.tmp.path());
    }
}

/// `airlock serve`, killed on drop.
pub struct Daemon {
    pub env: Env,
    child: Option<Child>,
    log: PathBuf,
    pub extra_args: Vec<String>,
    pub wrapper: Vec<String>,
}

impl Daemon {
    /// Start with `config` (TOML) and the env's workspace.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(Env::new(), config, vec![])
    }

    pub fn start_with(env: Env, config: &str, wrapper: Vec<String>) -> Daemon {
        std::fs::write(env.config_path(), config).unwrap();
        let log = env.tmp.path().join("serve.log");
        let mut d = Daemon {
            env,
            child: None,
            log,
            extra_args: vec![],
            wrapper,
        };
        d.spawn();
        d.wait_ready();
        d
    }

    pub fn spawn(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut argv: Vec<String> = self.wrapper.clone();
        argv.push(bin().into());
        argv.extend([
            "serve".into(),
            "--config".into(),
            self.env.config_path().display().to_string(),
        ]);
        argv.extend(["--workspace".into(), self.env.ws.display().to_string()]);
        argv.extend(self.extra_args.clone());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        self.env.apply(&mut c);
        c.stdin(Stdio::piped())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        self.child = Some(c.spawn().unwrap());
    }

    /// Wait until both sockets answer `GET /v1/health`.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("airlock serve exited early ({st}):\n{}", self.log());
            }
            if health(&self.env.socket()) && health(&self.env.operator_socket()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child.as_mut().unwrap().stdin.as_mut().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("broker did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Start again on the same state.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    pub fn agent(&self) -> Agent {
        Agent::start(&self.env)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.env.cli(args)
    }

    /// Run the CLI and return stdout, asserting success.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "airlock {args:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Every audit record, parsed. A running broker may be appending one
    /// as this reads: the newest segment's last line counts only once its
    /// newline is there (any other line must parse).
    pub fn records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut segs: Vec<PathBuf> = std::fs::read_dir(self.env.audit_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("audit-")
            })
            .collect();
        segs.sort();
        let newest = segs.len().saturating_sub(1);
        for (i, s) in segs.iter().enumerate() {
            let text = std::fs::read_to_string(s).unwrap();
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            if i == newest && lines.last().is_some_and(|l| !l.ends_with('\n')) {
                lines.pop();
            }
            for l in lines {
                out.push(serde_json::from_str(l.trim_end_matches('\n')).unwrap());
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_some() {
                return;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the socket answers `GET /v1/health` with 200.
pub fn health(sock: &Path) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// A stand-in agent: one python process, one session.
pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Agent {
    pub fn start(env: &Env) -> Agent {
        let mut c = Command::new("python3");
        c.arg(agent_script()).arg(env.socket());
        env.apply(&mut c);
        c.env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(bin()).parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Agent {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("agent answered {line:?}: {e}"))
    }

    /// One HTTP call with a JSON body; returns (status, body).
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut cmd = json!({"method": method, "path": path, "token": token});
        if let Some(b) = body {
            cmd["json"] = b;
        }
        let r = self.send(cmd);
        (r["status"].as_u64().unwrap() as u16, r["body"].clone())
    }

    /// One HTTP call with a raw body.
    pub fn raw(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        raw: &str,
    ) -> (u16, Value) {
        let r = self.send(json!({"method": method, "path": path, "token": token, "raw": raw}));
        (r["status"].as_u64().unwrap() as u16, r["body"].clone())
    }

    /// The full answer of a call (status, body, retry_after header).
    pub fn call_full(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Value {
        self.send(json!({"method": method, "path": path, "token": token, "json": body}))
    }

    /// `POST /v1/requests`.
    pub fn request(&mut self, manifest: Value) -> (u16, Value) {
        self.call("POST", "/v1/requests", None, Some(manifest))
    }

    /// Request and return the token, asserting an allow.
    pub fn token(&mut self, manifest: Value) -> String {
        let (s, v) = self.request(manifest);
        assert_eq!(s, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub fn read(&mut self, token: &str, path: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/fs/read",
            Some(token),
            Some(json!({"path": path})),
        )
    }

    pub fn write(&mut self, token: &str, path: &str, content: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/fs/write",
            Some(token),
            Some(json!({"path": path, "content": content})),
        )
    }

    /// Run a program as this agent's child; (exit code, stdout, stderr).
    pub fn spawn(&mut self, argv: &[&str]) -> (i32, String, String) {
        self.spawn_with_input(argv, "")
    }

    /// Run a program as this agent's child with `input` on its stdin.
    pub fn spawn_with_input(&mut self, argv: &[&str], input: &str) -> (i32, String, String) {
        let r = self.send(json!({"op": "spawn", "argv": argv, "input": input}));
        (
            r["status"].as_i64().unwrap() as i32,
            r["stdout"].as_str().unwrap().into(),
            r["stderr"].as_str().unwrap().into(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{{\"op\":\"exit\"}}");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's manifest shape.
pub fn manifest(action: &str, paths: &[&Path], secs: u64) -> Value {
    json!({"action": action, "paths": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "duration_seconds": secs, "justification": "integration test"})
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    rustix_uid() == 0
}

fn rustix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The environment of a test's processes: its home and runtime dir, and
/// nothing of the caller's Airlock settings.
fn apply_env(c: &mut Command, home: &Path, run: &Path) {
    for v in [
        "AIRLOCK_SOCKET",
        "AIRLOCK_OPERATOR_SOCKET",
        "AIRLOCK_CONFIG",
        "AIRLOCK_TOKEN",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", home)
        .env("XDG_RUNTIME_DIR", run)
        .env("AIRLOCK_LOG", "info,airlock_broker=debug");
}

/// Approve (or deny) the first pending approval, from the human's side.
pub fn decide_when_asked(d: &Daemon, verb: &'static str) -> std::thread::JoinHandle<String> {
    let env_home = d.env.home.clone();
    let run = d.env.run.clone();
    std::thread::spawn(move || {
        let cli = |args: &[&str]| {
            let mut c = Command::new(bin());
            apply_env(&mut c, &env_home, &run);
            c.args(args).stdin(Stdio::null()).output().unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no approval appeared");
            let out = cli(&["approvals", "list", "--json"]);
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!({}));
            let pending = list["approvals"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["state"] == "pending")
                .and_then(|a| a["approval_id"].as_str().map(str::to_string));
            if let Some(id) = pending {
                let mut args = vec!["approvals", verb, &id];
                if verb == "deny" {
                    args.extend(["--reason", "not now"]);
                }
                let out = cli(&args);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return id;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}
