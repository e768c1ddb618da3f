//! Integration tests of the sandbox, one file per mechanism. Each test runs
//! real sandboxes on this kernel; a feature the machine lacks is reported as
//! `SKIPPED: <reason>` on stderr, never passed silently.

mod common;
mod landlock;
mod limits;
mod mounts;
mod net;
mod overlay;
mod seccomp;
