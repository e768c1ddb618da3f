//! Integration tests of the sandbox, one file per mechanism. Each test runs
//! real sandboxes on this kernel, as the current user and, when that is
//! root, again as `nobody`; a feature the machine lacks is reported as
//! `SKIPPED: <reason>` on stderr, never passed silently.

#[macro_use]
mod common;
mod concurrency;
mod env;
mod failclosed;
mod fds;
mod landlock;
mod limits;
mod mounts;
mod net;
mod overlay;
mod protected;
mod seccomp;
