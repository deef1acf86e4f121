//! Logging setup: `tracing` with the level from `LOG_LEVEL`, JSON lines in
//! production and human-readable lines otherwise. Secrets are never logged.

use tracing_subscriber::EnvFilter;

/// Logging verbosity (`LOG_LEVEL`), with the guide's pino names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Silent,
}

/// Installs the global subscriber (once; later calls are ignored): JSON lines when
/// `json`, human-readable ones otherwise.
pub fn init(level: LogLevel, json: bool) {
    let level = match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Fatal => "error",
        LogLevel::Silent => "off",
    };
    // Dependencies stay at warn unless asked for more through RUST_LOG.
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,agentd={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but empty
/// (no-color.org): escape codes in a file or a pipe are noise.
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".as_ref())));
        assert!(!colour(true, Some("1".as_ref())));
        assert!(!colour(false, None));
    }
}
