//! `airlock mcp` driven by real MCP clients (the official Python and
//! TypeScript SDKs) against a real broker.
#[allow(dead_code)]
#[path = "../broker/common.rs"]
mod common;

mod conformance;
mod python;
mod typescript;
