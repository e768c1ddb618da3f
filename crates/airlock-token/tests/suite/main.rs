//! Integration tests for airlock-token: real keys, real signatures, real
//! files. One module per concern.

mod attenuate;
mod common;
mod hostile;
mod keyfile;
mod paths;
mod revoke;
mod verify;
