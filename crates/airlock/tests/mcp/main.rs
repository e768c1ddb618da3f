//! `airlock mcp` and `airlock mcp-proxy` driven by real MCP clients (the official Python and
//! TypeScript SDKs) against a real broker.
#[allow(dead_code)]
#[path = "../broker/common.rs"]
mod common;

mod conformance;
mod proxy;
mod python;
mod typescript;
