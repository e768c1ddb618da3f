//! `airlock mcp` handing its stdio to the running broker, which serves the
//! session itself: the session ends with the front, the front reports a
//! broker that stops, bad hand-overs and endless messages are refused
//! without harm to the broker, and directories outside the broker's
//! workspaces are refused as before.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

const HANDED_OVER: &str = "serving an MCP session handed over by airlock mcp";

/// `airlock mcp` on pipes, as an MCP client launches it.
struct Front {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Front {
    fn start(env: &Env, dir: &std::path::Path) -> Front {
        let mut c = Command::new(bin());
        env.apply(&mut c);
        c.args(["mcp", "--no-embedded"])
            .arg(dir)
            .env("AIRLOCK_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
            // EOF: the channel closes.
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let s = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        Front {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        s.flush().unwrap();
    }

    /// Initialize, and answer the initialized notification.
    fn initialize(&mut self) -> String {
        self.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"attach-test","version":"1"}}}"#);
        let answer = self
            .line(Duration::from_secs(20))
            .expect("initialize answered");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        answer
    }

    /// The next line on stdout; `None` on EOF or after `wait`.
    fn line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Whether stdout reaches EOF within `wait`.
    fn eof_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    fn wait_exit(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, wait: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_handed_over_session_ends_when_airlock_mcp_is_killed() {
    let d = Daemon::start("");
    let mut f = Front::start(&d.env, &d.env.ws);
    let init = f.initialize();
    assert!(init.contains("\"serverInfo\""), "{init}");
    // (The broker's log is written by a background thread: wait for it.)
    wait_for(
        "the broker to log the hand-over",
        Duration::from_secs(10),
        || d.log().contains(HANDED_OVER),
    );
    // A call goes through the broker while the session is served there.
    f.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_allowed_directories","arguments":{}}}"#);
    let listed = f
        .line(Duration::from_secs(20))
        .expect("tools/call answered");
    assert!(listed.contains(&d.env.ws.display().to_string()), "{listed}");

    // The client kills its server process: the broker ends the session and
    // lets go of the client's pipes, so the client sees its server gone.
    let _ = Command::new("kill")
        .args(["-KILL", &f.child.id().to_string()])
        .status();
    assert!(
        f.eof_within(Duration::from_secs(10)),
        "the broker still holds the client's stdout after airlock mcp died:\n{}",
        d.log()
    );
    wait_for("the broker to log the end", Duration::from_secs(10), || {
        d.log().contains("airlock mcp went away")
    });
    assert!(health(&d.env.socket()), "the broker keeps serving");
    // And it takes the next hand-over.
    let mut g = Front::start(&d.env, &d.env.ws);
    assert!(g.initialize().contains("\"serverInfo\""));
}

#[test]
fn airlock_mcp_says_so_when_the_broker_stops_during_the_session() {
    let mut d = Daemon::start("");
    let mut f = Front::start(&d.env, &d.env.ws);
    f.initialize();
    d.stop();
    let st = f
        .wait_exit(Duration::from_secs(10))
        .expect("airlock mcp exits once the broker has stopped");
    assert!(!st.success(), "{st}");
    wait_for("the message", Duration::from_secs(5), || {
        f.stderr()
            .contains("the broker stopped during the MCP session")
    });
    assert!(f.eof_within(Duration::from_secs(5)), "the client sees EOF");
}

#[test]
fn directories_outside_the_workspaces_are_refused_on_hand_over() {
    let d = Daemon::start("");
    let elsewhere = d.env.home.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut f = Front::start(&d.env, &elsewhere);
    let st = f
        .wait_exit(Duration::from_secs(20))
        .expect("airlock mcp gives up");
    assert!(!st.success(), "{st}");
    wait_for("the message", Duration::from_secs(5), || {
        f.stderr().contains("is not within the broker's workspaces")
    });
    assert!(!d.log().contains(HANDED_OVER), "{}", d.log());
}

#[test]
fn bad_hand_overs_are_refused_and_the_broker_keeps_serving() {
    let d = Daemon::start("");
    let at = d.env.socket().with_file_name("broker.attach.sock");
    assert!(
        at.exists(),
        "the broker listens for hand-overs at {}",
        at.display()
    );
    // Raw hand-overs from Python (socket.send_fds): no descriptors, then a
    // request that is not JSON, then three descriptors.
    let script = r#"
import json, os, socket, sys
def attempt(payload, fds):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    n = socket.send_fds(s, [payload], fds)
    try:
        s.sendall(payload[n:])
    except OSError:
        pass
    f = s.makefile("rb")
    print(f.readline().decode().strip(), flush=True)
    s.close()
req = json.dumps({"serve": "mcp", "dirs": [sys.argv[2]], "ask_timeout": 5, "accept_roots": False}).encode() + b"\n"
attempt(req, [])
r, w = os.pipe()
attempt(b"not json\n", [r, w])
attempt(req, [r, w, r])
attempt(json.dumps({"serve": "shell", "dirs": [], "ask_timeout": 5, "accept_roots": False}).encode() + b"\n", [r, w])
# Larger than one socket message: the rest follows the descriptors. The
# broker answers once the client has initialized the session.
big = json.dumps({"serve": "mcp", "dirs": [sys.argv[2]] * 8000, "ask_timeout": 5, "accept_roots": False}).encode() + b"\n"
assert 64 * 1024 < len(big) < 1024 * 1024, len(big)
cin_r, cin_w = os.pipe()
cout_r, cout_w = os.pipe()
os.write(cin_w, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode() + b"\n")
attempt(big, [cin_r, cout_w])
# Larger than a request may be.
attempt(b'{"serve": "mcp", "dirs": ["' + b"x" * (2 << 20) + b'"]}\n', [r, w])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&at)
        .arg(&d.env.ws)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        answers.len(),
        6,
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a["ok"], i == 4, "{i}: {a}");
    }
    let why = |i: usize| answers[i]["error"].as_str().unwrap().to_string();
    assert!(why(5).contains("longer than 1048576 bytes"), "{}", why(5));
    assert!(
        why(0).contains("hands over 2 descriptors, got 0"),
        "{}",
        why(0)
    );
    assert!(why(1).contains("bad hand-over request"), "{}", why(1));
    assert!(
        why(2).contains("hands over 2 descriptors, got 3"),
        "{}",
        why(2)
    );
    assert!(
        why(3).contains("bad hand-over request") && why(3).contains("shell"),
        "{}",
        why(3)
    );
    assert!(health(&d.env.socket()), "the broker keeps serving");
}

#[test]
fn an_endless_message_ends_only_its_own_session() {
    let d = Daemon::start("");
    let mut other = Front::start(&d.env, &d.env.ws);
    other.initialize();
    let mut f = Front::start(&d.env, &d.env.ws);
    f.initialize();
    // 40 MiB with no newline: more than one MCP message may hold.
    let mut stdin = f.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..40 {
            if stdin.write_all(&chunk).is_err() {
                return false;
            }
        }
        true
    });
    assert!(
        f.eof_within(Duration::from_secs(30)),
        "the session with the endless message was not ended:\n{}",
        d.log()
    );
    assert!(
        !writer.join().unwrap(),
        "the broker stopped reading before the whole message arrived"
    );
    // The other session and the broker are unharmed.
    other.send(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    let pong = other.line(Duration::from_secs(10)).expect("ping answered");
    assert!(pong.contains("\"id\":2"), "{pong}");
    assert!(health(&d.env.socket()));
}

#[test]
fn a_front_killed_before_the_client_initializes_leaves_nothing_waiting() {
    let d = Daemon::start("");
    let f = Front::start(&d.env, &d.env.ws);
    // The hand-over is made, but the client never sends `initialize`.
    wait_for("the hand-over", Duration::from_secs(10), || {
        d.log().contains("stdio handed over")
    });
    let _ = Command::new("kill")
        .args(["-KILL", &f.child.id().to_string()])
        .status();
    wait_for(
        "the broker to drop the session",
        Duration::from_secs(10),
        || {
            d.log()
                .contains("the front went away before its MCP session began")
        },
    );
    assert!(
        f.eof_within(Duration::from_secs(10)),
        "the broker still holds the client's stdout"
    );
    assert!(health(&d.env.socket()));
}
