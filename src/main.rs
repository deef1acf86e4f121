//! The `agentd` binary: configuration, then [`agentd::run`].

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    let config = agentd::Config::from_env_and_args(std::env::args_os());
    agentd::run(config)
}
