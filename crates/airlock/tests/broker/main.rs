//! Integration tests: the real `airlock serve` driven over its sockets.
mod common;

mod approvals;
mod paths;
mod tokens;
mod workflow;
