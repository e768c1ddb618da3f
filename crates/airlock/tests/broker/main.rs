//! Integration tests: the real `airlock serve` driven over its sockets.
mod common;

mod approvals;
mod audit_fail;
mod bad_input;
mod crash;
mod exec;
mod hook;
mod paths;
mod policy;
mod serve;
mod tokens;
mod workflow;
