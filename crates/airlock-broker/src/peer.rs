//! Who is on the other end of a connection: SO_PEERCRED (uid, gid, pid),
//! the process start time from `/proc`, and its executable. A process is
//! named by (pid, start time) everywhere, so a later process that reuses
//! the PID is a different process.
//!
//! The pid from SO_PEERCRED is pinned with a pidfd before `/proc` is read,
//! and the pidfd is checked afterwards: if the peer had already exited, the
//! connection is refused rather than attributed to whatever process holds
//! the PID now.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::Serialize;

/// A process, named so that PID reuse cannot alias it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct ProcId {
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub id: ProcId,
    pub ppid: u32,
    pub comm: String,
}

/// Parse `/proc/PID/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn proc_stat(pid: u32) -> std::io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(pid, &text).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable /proc stat")
    })
}

fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = rest.get(1)?.parse().ok()?;
    let start_time = rest.get(19)?.parse().ok()?;
    Some(ProcStat {
        id: ProcId { pid, start_time },
        ppid,
        comm,
    })
}

/// The chain of processes from `start` up to (not including) PID 0, each
/// checked to have started no later than its child: a parent PID that was
/// reused by a newer process ends the walk. At most 256 steps.
pub fn ancestry(start: ProcId) -> Vec<ProcId> {
    let mut out = vec![start];
    let mut cur = start;
    for _ in 0..256 {
        let Ok(st) = proc_stat(cur.pid) else { break };
        if st.id.start_time != cur.start_time || st.ppid == 0 {
            break;
        }
        let Ok(parent) = proc_stat(st.ppid) else {
            break;
        };
        if parent.id.start_time > cur.start_time {
            break;
        }
        out.push(parent.id);
        cur = parent.id;
    }
    out
}

/// Whether the process named by `id` is still the one running under its PID.
pub fn alive(id: ProcId) -> bool {
    proc_stat(id.pid).is_ok_and(|s| s.id.start_time == id.start_time)
}

/// The peer of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub start_time: u64,
    /// `/proc/PID/exe`, when readable.
    pub exe: Option<String>,
    /// Processes from the peer up to init, named with start times.
    #[serde(skip)]
    pub ancestry: Arc<Vec<ProcId>>,
}

impl Peer {
    /// The peer as a [`ProcId`].
    pub fn id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Identify the peer of a connected Unix socket.
    pub fn of_socket<S: AsFd>(sock: &S) -> std::io::Result<Peer> {
        let cred = rustix::net::sockopt::socket_peercred(sock)?;
        let pid = cred.pid.as_raw_nonzero().get() as u32;
        let pidfd = peer_pidfd(sock, pid)?;
        let st = proc_stat(pid)?;
        if exited(&pidfd) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "peer exited before it could be identified",
            ));
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned));
        Ok(Peer {
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
            pid,
            start_time: st.id.start_time,
            exe,
            ancestry: Arc::new(ancestry(st.id)),
        })
    }

    /// This process, identified the same way (for commands that act without
    /// a running broker, such as `airlock staged commit` offline).
    pub fn current() -> std::io::Result<Peer> {
        use std::os::unix::fs::MetadataExt;
        let pid = std::process::id();
        let st = proc_stat(pid)?;
        let md = std::fs::metadata(format!("/proc/{pid}"))?;
        let exe = std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned));
        Ok(Peer {
            uid: md.uid(),
            gid: md.gid(),
            pid,
            start_time: st.id.start_time,
            exe,
            ancestry: Arc::new(ancestry(st.id)),
        })
    }

    /// The record form: `{"uid", "gid", "pid", "exe", "start_time"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "uid": self.uid, "gid": self.gid, "pid": self.pid,
            "exe": self.exe, "start_time": self.start_time,
        })
    }

    /// Base name of the executable, or `pid:N`.
    pub fn exe_name(&self) -> String {
        self.exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("pid:{}", self.pid))
    }
}

/// A pidfd for the peer: SO_PEERPIDFD where the kernel has it (the kernel
/// pins the very process that connected), else `pidfd_open` on the pid.
fn peer_pidfd<S: AsFd>(sock: &S, pid: u32) -> std::io::Result<OwnedFd> {
    match airlock_sandbox::peer_pidfd(sock.as_fd()) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            tracing::debug!(error = %e, "SO_PEERPIDFD unavailable; pinning the peer with pidfd_open");
            let p = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "peer pid is 0")
            })?;
            Ok(rustix::process::pidfd_open(
                p,
                rustix::process::PidfdFlags::empty(),
            )?)
        }
    }
}

/// A pidfd polls readable once its process has exited.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    matches!(rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_names() {
        let line = "1234 (a) b (c)) S 99 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777777 1000 200 18446744073709551615";
        let st = parse_stat(1234, line).unwrap();
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.ppid, 99);
        assert_eq!(st.id.start_time, 777777);
    }

    #[test]
    fn own_ancestry_reaches_init() {
        let me = proc_stat(std::process::id()).unwrap();
        let chain = ancestry(me.id);
        assert_eq!(chain[0], me.id);
        assert!(chain.len() >= 2, "{chain:?}");
        assert!(alive(me.id));
        assert!(!alive(ProcId {
            pid: me.id.pid,
            start_time: me.id.start_time + 1
        }));
    }

    #[test]
    fn socket_peer_is_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Peer::of_socket(&a).unwrap();
        assert_eq!(p.pid, std::process::id());
        assert_eq!(p.uid, rustix::process::getuid().as_raw());
        assert!(p.exe.is_some());
    }
}
