//! Airlock's MCP front doors (built on the official Rust SDK, `rmcp`):
//! `airlock mcp`, a drop-in for the reference filesystem server whose every
//! tool call goes through the broker; `airlock mcp-proxy`, which puts any
//! stdio MCP server behind the broker and the sandbox; and the HTTP
//! transport both front doors share.
#![forbid(unsafe_code)]

pub mod attach;
pub mod edit;
pub mod http;
pub mod link;
pub mod paths;
pub mod pins;
pub mod proxy;
pub mod secrets;
pub mod server;
pub mod tools;

pub use link::{BrokerLink, Refusal};
pub use proxy::{ChildSetup, Proxy, ProxyOptions};
pub use server::{FsOptions, FsServer};
