//! Integration tests: the real `airlock serve` driven over its sockets.
mod common;

mod approvals;
mod bad_input;
mod paths;
mod tokens;
mod workflow;
