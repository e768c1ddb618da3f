//! Integration tests, one file per concern under `suite/`.
mod suite;
