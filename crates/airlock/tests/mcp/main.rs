//! `airlock mcp` and `airlock mcp-proxy` driven by real MCP clients (the official Python and
//! TypeScript SDKs) against a real broker.
/// The value of a prerequisite probe, or the test prints why it is
/// skipped and returns.
macro_rules! or_skip {
    ($probe:expr) => {
        match $probe {
            Ok(x) => x,
            Err(why) => {
                println!("SKIPPED: {why}");
                return;
            }
        }
    };
}

#[allow(dead_code)]
#[path = "../broker/common.rs"]
mod common;

mod attach;
mod conformance;
mod proxy;
mod python;
mod typescript;
