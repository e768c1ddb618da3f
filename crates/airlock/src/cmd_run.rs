//! `airlock run`.

/// Arguments of `airlock run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Command and arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let _ = args;
    anyhow::bail!("not yet available")
}
