mod common;
mod crash;
mod fail_closed;
mod query;
mod tamper;
mod third_party;
mod writer;
