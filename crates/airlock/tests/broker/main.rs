//! Integration tests: the real `airlock serve` driven over its sockets.
mod common;

mod approvals;
mod tokens;
mod workflow;
