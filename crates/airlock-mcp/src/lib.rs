//! Airlock's MCP front doors (built on the official Rust SDK, `rmcp`):
//! `airlock mcp`, a drop-in for the reference filesystem server whose every
//! tool call goes through the broker, and the HTTP transport both front
//! doors share.
#![forbid(unsafe_code)]

pub mod edit;
pub mod http;
pub mod link;
pub mod paths;
pub mod server;
pub mod tools;

pub use link::{BrokerLink, Refusal};
pub use server::{FsOptions, FsServer};
