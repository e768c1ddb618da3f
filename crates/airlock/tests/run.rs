//! `airlock run` and `airlock doctor` end to end, through the built binary,
//! with a temp workspace and temp state/config dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("airlock-cli")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("ws")).unwrap();
        std::fs::write(dir.path().join("ws/a.txt"), "original\n").unwrap();
        // As root this workspace is root's, as in CI: the sandbox runs as
        // nobody over an idmapped clone of it.
        Env { dir }
    }
    fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(Path::new(env!("CARGO_BIN_EXE_airlock")), args)
    }
    /// `bin` with `args` in the workspace, in this environment.
    fn run_with(&self, bin: &Path, args: &[&str]) -> Output {
        // A binary this test has just copied may be briefly "busy": a
        // process another test thread forked meanwhile holds a copy of the
        // copy's write descriptor until it execs.
        for _ in 0..100 {
            match self.command(bin).args(args).output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r.unwrap(),
            }
        }
        panic!("{} stayed busy", bin.display());
    }
    fn command(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.current_dir(self.ws())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("GITHUB_TOKEN", "cli-canary");
        c
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // overlayfs leaves its work/work dir with mode 000.
        fn open_up(p: &Path) {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::symlink_metadata(p) {
                if m.is_dir() {
                    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
        open_up(self.dir.path());
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `None` (and SKIPPED) when this machine cannot create the sandbox.
fn sandbox_works(e: &Env) -> bool {
    let o = e.run(&["run", "--", "/bin/true"]);
    if o.status.code() == Some(125)
        && text(&o.stderr).contains("cannot create the sandbox namespaces")
    {
        eprintln!("SKIPPED: {}", text(&o.stderr));
        return false;
    }
    true
}

#[test]
fn exit_codes_are_propagated() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    assert_eq!(
        e.run(&["run", "--", "/bin/sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    assert_eq!(
        e.run(&["run", "--", "/bin/sh", "-c", "kill -TERM $$"])
            .status
            .code(),
        Some(128 + 15)
    );
    let t = e.run(&[
        "run",
        "--timeout",
        "300ms",
        "--",
        "/bin/sh",
        "-c",
        "while :; do :; done",
    ]);
    assert_eq!(t.status.code(), Some(124));
    assert!(text(&t.stderr).contains("timed out"), "{}", text(&t.stderr));
    // Airlock's own failure: 125 with a message.
    let bad = e.run(&["run", "--memory", "lots", "--", "/bin/true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        text(&bad.stderr).contains("--memory"),
        "{}",
        text(&bad.stderr)
    );
    let missing = e.run(&["run", "--", "/nonexistent/cmd"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        text(&missing.stderr).contains("cannot execute"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn a_run_that_stages_nothing_says_so_and_earlier_changes_stay_listed() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    // `airlock run --json -- ARGS...`: its staged-changes record, once its
    // summary line is checked to say `says`.
    let run = |args: &[&str], says: &str| -> serde_json::Value {
        let o = e.run(&[&["run", "--json", "--"], args].concat());
        let err = text(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains(says), "{err}");
        let rec: serde_json::Value =
            serde_json::from_str(err.lines().last().unwrap()).expect("last stderr line is JSON");
        rec["staged"].clone()
    };
    // Nothing written: nothing staged.
    assert_eq!(
        run(&["/bin/true"], "airlock: no changes staged")["changes"],
        0
    );
    // A change, then a run that writes nothing: the earlier change is still
    // staged and said so, with its base recorded (the commit below checks
    // the real file against it).
    let one = "1 change(s) staged";
    assert_eq!(
        run(&["/bin/sh", "-c", "echo changed > a.txt"], one)["changes"],
        1
    );
    let st = run(&["/bin/true"], one);
    assert_eq!(st["changes"], 1);
    // A run that only reads leaves the area as it was.
    assert_eq!(run(&["/bin/cat", "a.txt"], one)["changes"], 1);
    let id = st["id"].as_str().unwrap();
    let c = e.run(&["staged", "commit", id]);
    assert!(c.status.success(), "{}", text(&c.stderr));
    assert_eq!(
        std::fs::read_to_string(e.ws().join("a.txt")).unwrap(),
        "changed\n"
    );
    // Committed: the area is empty again.
    assert_eq!(
        run(&["/bin/true"], "airlock: no changes staged")["changes"],
        0
    );
}

#[test]
fn changes_are_staged_then_committed() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    let o = e.run(&[
        "run",
        "--",
        "/bin/sh",
        "-c",
        "echo changed > a.txt; echo new > b.txt",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("change(s) staged in st-"), "{err}");
    assert!(err.contains("airlock staged diff st-"), "{err}");
    assert_eq!(
        std::fs::read_to_string(e.ws().join("a.txt")).unwrap(),
        "original\n"
    );
    assert!(!e.ws().join("b.txt").exists());
    // The next run sees them, and --commit applies them.
    let o = e.run(&[
        "run",
        "--commit",
        "--",
        "/bin/sh",
        "-c",
        "cat a.txt b.txt > both.txt",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("committed"), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(e.ws().join("a.txt")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(e.ws().join("both.txt")).unwrap(),
        "changed\nnew\n"
    );
}

#[test]
fn a_failed_command_commits_nothing() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    let o = e.run(&[
        "run",
        "--commit",
        "--",
        "/bin/sh",
        "-c",
        "echo x > c.txt; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(!e.ws().join("c.txt").exists());
    assert!(
        text(&o.stderr).contains("not committed"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn staged_changes_that_cannot_be_listed_are_said_so_and_nothing_is_committed() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    // Nested deeper than a path may be long: the command succeeds, its
    // staged changes cannot be listed, reviewed or committed.
    let script = "import os\nfor _ in range(2100):\n    os.mkdir('d'); os.chdir('d')\n";
    let o = e.run(&["run", "--json", "--commit", "--", "python3", "-c", script]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("cannot list the staged changes") && err.contains("airlock staged discard"),
        "{err}"
    );
    let rec: serde_json::Value =
        serde_json::from_str(err.lines().last().unwrap()).expect("last stderr line is JSON");
    assert!(rec["staged"]["changes"].is_null(), "{rec}");
    assert!(
        rec["staged"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("longer than 4095 bytes"),
        "{rec}"
    );
    assert!(!e.ws().join("d").exists(), "nothing was committed");
    // What it says to do works (and leaves no deep tree behind).
    let id = rec["staged"]["id"].as_str().unwrap();
    let d = e.run(&["staged", "discard", id]);
    assert!(d.status.success(), "{}", text(&d.stderr));
    assert!(
        text(&d.stdout).contains("could not be listed"),
        "{}",
        text(&d.stdout)
    );
}

#[test]
fn json_record_and_report_file() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    let report = e.dir.path().join("report.json");
    let o = e.run(&[
        "run",
        "--json",
        "--report",
        report.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "env; unshare -U true; exit 0",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        !text(&o.stdout).contains("cli-canary"),
        "a secret reached the command"
    );
    let last = text(&o.stderr).lines().last().unwrap().to_string();
    let rec: serde_json::Value = serde_json::from_str(&last).expect("last stderr line is JSON");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(rec, file);
    assert_eq!(rec["exit_code"], 0);
    assert_eq!(rec["outcome"]["status"]["kind"], "exited");
    assert!(
        rec["outcome"]["report"]["namespaces"]
            .as_array()
            .unwrap()
            .len()
            >= 6
    );
    if rec["outcome"]["report"]["seccomp_notify"] == true {
        assert!(
            rec["blocked"]
                .as_str()
                .unwrap()
                .contains("unshare(CLONE_NEWUSER)"),
            "{rec}"
        );
        assert!(text(&o.stderr).contains("airlock: blocked: unshare(CLONE_NEWUSER)"));
    }
}

#[test]
fn profiles_from_the_config_file() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    std::fs::create_dir_all(e.dir.path().join("config/airlock")).unwrap();
    std::fs::write(
        e.dir.path().join("config/airlock/config.toml"),
        "[profiles.tiny]\nworkspace = \"read-only\"\nlimits = { timeout = \"200ms\" }\n",
    )
    .unwrap();
    let o = e.run(&[
        "run",
        "--profile",
        "tiny",
        "--",
        "/bin/sh",
        "-c",
        "echo x > d.txt; sleep 5",
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    let o = e.run(&[
        "run",
        "--profile",
        "read-only",
        "--",
        "/bin/sh",
        "-c",
        "echo x > d.txt",
    ]);
    assert_ne!(o.status.code(), Some(0));
    let o = e.run(&["run", "--profile", "nope", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("unknown profile"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn doctor_reports_every_layer() {
    let e = Env::new();
    let o = e.run(&["doctor", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("doctor --json prints JSON");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "user namespaces",
        "landlock",
        "seccomp",
        "overlayfs in a user namespace",
        "cgroups",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let runs = v["default_profile_runs"].as_bool().unwrap();
    assert_eq!(o.status.code(), Some(if runs { 0 } else { 1 }));
    let human = e.run(&["doctor"]);
    assert!(
        text(&human.stdout).contains("landlock"),
        "{}",
        text(&human.stdout)
    );
}

/// Wait until the command of `airlock run` (the `child`) has staged a file
/// named `name` in the workspace; the child is killed and the test fails if
/// it ends first or takes a minute.
fn wait_until_staged(e: &Env, mut child: std::process::Child, name: &str) -> std::process::Child {
    let staging = e.dir.path().join("state/airlock/staging");
    let staged = || {
        std::fs::read_dir(&staging)
            .into_iter()
            .flatten()
            .flatten()
            .any(|a| a.path().join("upper").join(name).exists())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !staged() {
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the sandboxed command never staged {name}: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

#[test]
fn ctrl_c_reaches_the_command() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "run",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-int; exit 3' INT; touch ready; while :; do sleep 0.05; done",
        ])
        .current_dir(e.ws())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", e.dir.path())
        .env("XDG_STATE_HOME", e.dir.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The trap is set once `ready` is staged.
    let child = wait_until_staged(&e, child, "ready");
    // What a terminal's Ctrl-C does to the foreground job: SIGINT to airlock.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got-int\n");
}

/// The cgroup directories of the run made by the front whose pid is `pid`:
/// `airlock-<pid>-0` under this process's own v1 memory and pids cgroups or
/// its v2 cgroup, those that exist.
fn run_cgroup_dirs(pid: u32) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let leaf = format!("airlock-{pid}-0");
    let mut dirs = vec![];
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let bases: &[&str] = match ctrl {
            "memory" => &["/sys/fs/cgroup/memory"],
            "pids" => &["/sys/fs/cgroup/pids"],
            "" => &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
            _ => &[],
        };
        for b in bases {
            let d = Path::new(b).join(path.trim_start_matches('/')).join(&leaf);
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Removes the cgroup directories a failed test would leave.
struct CgroupDirs(Vec<PathBuf>);
impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// An `airlock run` killed outright (SIGKILL: no chance to clean up) leaves
/// its cgroup behind, empty; the next run removes it once it is old enough
/// that no run can be about to join it.
#[test]
fn a_killed_runs_cgroup_is_removed_by_the_next_run() {
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_airlock"));
    let child = e
        .command(bin)
        .args(["run", "--pids", "64", "--", "/bin/sh", "-c"])
        .arg("touch ready; exec sleep 60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = wait_until_staged(&e, child, "ready");
    let dirs = CgroupDirs(run_cgroup_dirs(child.id()));
    if dirs.0.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("SKIPPED: no cgroup is made for a run here (its limits are rlimits)");
        return;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The sandbox goes with the front; its cgroup stays.
    let members = |d: &Path| std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dirs.0.iter().any(|d| !members(d).trim().is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed run's sandbox is still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for d in &dirs.0 {
        assert!(d.is_dir(), "{} was removed by the killed run", d.display());
    }
    // A young cgroup is spared (this one is made new, however long the
    // wait above took); then it is made a minute old.
    let date = |then: std::time::SystemTime| {
        for d in &dirs.0 {
            std::fs::File::open(d).unwrap().set_modified(then).unwrap();
        }
    };
    date(std::time::SystemTime::now());
    let out = e.run(&["run", "--pids", "64", "--", "/bin/true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        dirs.0.iter().all(|d| d.is_dir()),
        "a young cgroup was removed"
    );
    date(std::time::SystemTime::now() - std::time::Duration::from_secs(60));
    let out = e.run(&["run", "--pids", "64", "--", "/bin/true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for d in &dirs.0 {
        assert!(!d.exists(), "{} is left", d.display());
    }
}

/// `airlock` runs `airlock run` on its own and hands every other command,
/// arguments and exit status unchanged, to `airlock-full` next to it; when
/// that is missing, it says so instead of failing obscurely.
#[test]
fn the_front_binary_runs_run_itself_and_hands_the_rest_over() {
    let e = Env::new();
    let out = e.run(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("airlock {}", env!("CARGO_PKG_VERSION"))
    );
    // A usage error of the full CLI keeps clap's exit status and names
    // the command as `airlock`.
    let out = e.run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Usage: airlock "),
        "{}",
        text(&out.stderr)
    );

    // The front alone, in a directory without `airlock-full`.
    let alone = e.dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    let front = alone.join("airlock");
    std::fs::copy(env!("CARGO_BIN_EXE_airlock"), &front).unwrap();
    let run = |args: &[&str]| e.run_with(&front, args);
    let out = run(&["run", "--", "/bin/sh", "-c", "echo made > b.txt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 change(s) staged"),
        "{}",
        text(&out.stderr)
    );
    assert!(!e.ws().join("b.txt").exists(), "staged, not written");
    let out = run(&["run", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("airlock-full") && err.contains("reinstall both"),
        "{err}"
    );
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP header).
fn dynamically_linked(path: &str) -> bool {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{path}");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// The front starts for every sandboxed command, so it is linked
/// statically wherever glibc's static libraries exist (the build's
/// rustc wrapper, scripts/rustc-front.sh): no dynamic loader, libc or
/// libgcc_s to map and resolve on every run. The full CLI stays dynamic.
#[test]
fn the_front_is_linked_statically_and_the_full_cli_is_not() {
    assert!(dynamically_linked(env!("CARGO_BIN_EXE_airlock-full")));
    if option_env!("AIRLOCK_DYNAMIC_FRONT").is_some_and(|v| v != "0") {
        eprintln!("SKIPPED: built with AIRLOCK_DYNAMIC_FRONT set");
        return;
    }
    let libc_a = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .arg("-print-file-name=libc.a")
        .output()
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !Path::new(&libc_a).is_file() {
        eprintln!("SKIPPED: glibc's static libraries are not installed (libc.a)");
        return;
    }
    assert!(
        !dynamically_linked(env!("CARGO_BIN_EXE_airlock")),
        "the front was linked dynamically: is .cargo/config.toml's rustc wrapper in use?"
    );
}

/// `airlock` and `airlock-full` must come from one build: the front hands
/// its build over, and the full CLI refuses a front of another build (one
/// binary copied or rebuilt without the other) instead of mixing them.
#[test]
fn the_full_cli_refuses_a_front_of_another_build() {
    let e = Env::new();
    let pair = e.dir.path().join("pair");
    std::fs::create_dir(&pair).unwrap();
    let front = pair.join("airlock");
    std::fs::copy(env!("CARGO_BIN_EXE_airlock"), &front).unwrap();
    let full = pair.join("airlock-full");
    std::fs::write(&full, "#!/bin/sh\necho \"$AIRLOCK_FRONT_BUILD\"\n").unwrap();
    std::fs::set_permissions(&full, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = e.run_with(&front, &["status"]);
    assert_eq!(text(&out.stdout).trim(), env!("AIRLOCK_BUILD_ID"));

    let full = |build: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_airlock-full"))
            .args(args)
            .env("AIRLOCK_FRONT_BUILD", build)
            .output()
            .unwrap()
    };
    let out = full("0.0.0+0123456789abcdef", &["--version"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("another build")
            && err.contains("0.0.0+0123456789abcdef")
            && err.contains(env!("AIRLOCK_BUILD_ID")),
        "{err}"
    );
    let out = full(env!("AIRLOCK_BUILD_ID"), &["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn set_up_phases_are_timed_in_the_order_the_protocol_imposes() {
    // `AIRLOCK_LOG=airlock_sandbox::phases=debug` prints when each step of
    // the set-up ended, recorded by the parent, init, its network helper
    // and the command process on one shared page. Each pair below is
    // ordered by a message or a program order, whatever the scheduling.
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    std::fs::create_dir_all(e.ws().join(".git")).unwrap();
    std::fs::write(e.ws().join(".git/config"), "[core]\n").unwrap();
    let o = e
        .command(Path::new(env!("CARGO_BIN_EXE_airlock")))
        .env("AIRLOCK_LOG", "airlock_sandbox::phases=debug")
        .args(["run", "--", "/bin/true"])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err
        .lines()
        .find_map(|l| l.split_once("set-up phases, µs after clone3: "))
        .unwrap_or_else(|| panic!("no phases line in {err}"))
        .1;
    let at: std::collections::HashMap<&str, u64> = line
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, v.parse().unwrap())
        })
        .collect();
    let before = [
        // init, in program order
        ("init_started", "maps_received"),
        ("maps_received", "sources_opened"),
        ("sources_opened", "walk_received"),
        ("walk_received", "overlay_mounted"),
        ("overlay_mounted", "protected_bound"),
        ("protected_bound", "pivot_root"),
        ("pivot_root", "net_joined"),
        ("net_joined", "landlocked"),
        ("landlocked", "seccomp"),
        ("seccomp", "limits_joined"),
        ("limits_joined", "exec"),
        ("exec", "command_exited"),
        ("command_exited", "sandbox_empty"),
        // (the parent's last is `ended`: `airlock run` leaves init to exit
        // and does not reap it)
        // messages between the processes
        ("clone", "cloned"),
        ("maps_written", "maps_received"),
        ("walk_sent", "walk_received"),
        ("limits_sent", "limits_joined"),
        ("net_started", "net_ready"),
        ("net_ready", "net_joined"),
        ("exec", "exec_seen"),
        ("sandbox_empty", "ended"),
    ];
    for (a, b) in before {
        let (Some(x), Some(y)) = (at.get(a), at.get(b)) else {
            panic!("{a} or {b} missing from {line}");
        };
        assert!(x <= y, "{a}={x} after {b}={y}: {line}");
    }
}

/// A FUSE mount of a squashfs image, served by a `squashfuse` in the
/// foreground; unmounted when dropped, and its server reaped.
struct FuseMount {
    at: PathBuf,
    server: std::process::Child,
}

impl FuseMount {
    fn new(img: &Path, at: &Path) -> FuseMount {
        let server = Command::new("squashfuse")
            .args(["-f", "-o", "allow_other"])
            .arg(img)
            .arg(at)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let m = FuseMount {
            at: at.to_path_buf(),
            server,
        };
        let listed = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .any(|l| l.split(' ').nth(4) == at.to_str() && l.contains(" - fuse"))
        };
        let t = std::time::Instant::now();
        while !listed() {
            assert!(
                t.elapsed().as_secs() < 10,
                "squashfuse did not mount {}",
                at.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        m
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
        // Unmounted, the server exits; if not, it is killed.
        let t = std::time::Instant::now();
        while !matches!(self.server.try_wait(), Ok(Some(_))) {
            if t.elapsed().as_secs() >= 5 {
                let _ = self.server.kill();
                let _ = self.server.wait();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[test]
fn a_root_owned_workspace_that_cannot_be_idmapped_is_staged_without_it() {
    // Started as root, the sandbox runs as nobody and sees a root-owned
    // staged workspace through an idmapped clone, on which root's files
    // are nobody's. A filesystem may refuse idmapped mounts: here a FUSE
    // one (squashfuse, whose server does not offer them). The run then
    // goes on without the idmap and says so: the sandbox user reads what
    // it may and creates new files (the overlay's upper dir is its own),
    // but cannot change root's.
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("SKIPPED: a root-owned workspace is idmapped only for a root caller, and the FUSE mount needs root");
        return;
    }
    for tool in ["mksquashfs", "squashfuse"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("SKIPPED: {tool} is not installed (Debian: squashfs-tools, squashfuse)");
            return;
        }
    }
    let e = Env::new();
    if !sandbox_works(&e) {
        return;
    }
    let img = e.dir.path().join("ws.sqfs");
    let made = Command::new("mksquashfs")
        .arg(e.ws())
        .arg(&img)
        .args(["-quiet", "-noappend", "-all-root"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let _mount = FuseMount::new(&img, &e.ws());
    assert_eq!(std::fs::metadata(e.ws().join("a.txt")).unwrap().uid(), 0);

    let o = e.run(&[
        "run",
        "--",
        "/bin/sh",
        "-c",
        "cat a.txt; echo new > n.txt && echo CREATED; if echo more >> a.txt; then echo MODIFIED; fi; true",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("cannot idmap the root-owned workspace"),
        "{err}"
    );
    assert!(out.contains("original"), "{out}\n{err}");
    assert!(out.contains("CREATED"), "{out}\n{err}");
    assert!(
        !out.contains("MODIFIED"),
        "root's file changed: {out}\n{err}"
    );
    assert!(
        err.contains("1 change(s) staged") && err.contains("(1 added, 0 modified"),
        "{err}"
    );
}
