//! Sandbox: the only crate with unsafe, kept in its syscall module.
#![deny(unsafe_op_in_unsafe_fn)]
