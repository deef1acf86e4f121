//! The `agentd` binary: configuration, then [`agentd::run`].

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    match agentd::Config::from_env_and_args(std::env::args_os()) {
        Ok(config) => agentd::run(config),
        // Prints the message (or help, or version) and exits 2 (0 for help and version).
        Err(e) => e.exit(),
    }
}
