//! Inherited descriptors: everything but 0, 1 and 2 is marked close-on-exec
//! in the command process with `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`
//! right before `execve` (see the `syscall` module), and the sandbox's init
//! closes every descriptor except its status pipe, so no host descriptor
//! (a broker socket, a listening port, a file opened by the caller) reaches
//! the command, not even through `/proc/1/fd`.
//!
//! The tests here run a real sandbox with a leaked, non-CLOEXEC descriptor
//! and check from the inside that it is gone.

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use crate::{run, SandboxSpec, StdioMode};

    #[test]
    fn inherited_descriptors_do_not_reach_the_command() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, "host-only").unwrap();
        let f = std::fs::File::open(&secret).unwrap();
        // Clear CLOEXEC so a naive fork/exec would leak it.
        let fd = f.as_raw_fd();
        rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::empty()).unwrap();
        let mut spec = SandboxSpec::new(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("ls /proc/self/fd; cat /proc/self/fd/{fd} 2>&1; ls /proc/1/fd 2>&1; true"),
            ],
            "/".into(),
        );
        spec.stdio = StdioMode::Capture { max_bytes: 1 << 16 };
        let out = match run(&spec) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIPPED: sandbox unavailable: {e}");
                return;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!text.contains("host-only"), "{text}");
        let fds: Vec<&str> = text
            .lines()
            .take_while(|l| l.chars().all(|c| c.is_ascii_digit()))
            .collect();
        // 0,1,2 and the fd ls itself opened to list the directory.
        assert!(fds.len() <= 4, "descriptors visible inside: {fds:?}");
        assert!(!fds.contains(&fd.to_string().as_str()) || fd <= 3, "{text}");
        drop(f);
    }
}
