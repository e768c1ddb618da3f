//! What both binaries do the same way: logging set-up, how a command's
//! result becomes the process's exit, and the build they must share.

/// This build's identity: version and a hash of the sources (`build.rs`).
pub const BUILD_ID: &str = env!("AIRLOCK_BUILD_ID");

/// The front's [`BUILD_ID`], passed to `airlock-full` when it hands over.
pub const FRONT_BUILD_ENV: &str = "AIRLOCK_FRONT_BUILD";

/// Log to stderr at `default_level`, or as `AIRLOCK_LOG` says.
pub fn init_tracing(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Exit with the command's code, or print its error chain and exit 125.
pub fn exit(result: anyhow::Result<i32>) -> ! {
    match result {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            // Each cause once: library errors often repeat their source in
            // their own message.
            let mut msg = String::new();
            for cause in e.chain() {
                let s = cause.to_string();
                if !msg.contains(&s) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&s);
                }
            }
            eprintln!("airlock: {msg}");
            std::process::exit(125);
        }
    }
}
