//! `airlock doctor`.

/// Arguments of `airlock doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {}

pub fn doctor(args: DoctorArgs) -> anyhow::Result<i32> {
    let _ = args;
    anyhow::bail!("not yet available")
}
