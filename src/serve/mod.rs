//! Putting a server together: the configuration's settings, the agent it names, the
//! routes over them, the server under the routes; and the process around it (signals,
//! the start-up line, exit codes).
//!
//! This is the only module that knows every other one; none of them imports it. It
//! must never hold request-time logic: everything here runs once, at start or stop.

pub(crate) mod agents;
pub(crate) mod settings;
pub(crate) mod startup;

pub use agents::configured_agent;

use std::process::ExitCode;
use std::sync::Arc;

use crate::agent::{self, Agent};
use crate::config::Config;
use crate::routes::{App, Routes};
use crate::server::{self, ServerHandle};

/// Starts servers.
pub struct Server;

impl Server {
    /// Checks the settings, binds the listeners and starts the workers serving `agent`.
    /// Returns once every worker is accepting (connections made before that wait in the
    /// backlog). A setting that cannot work is an `InvalidInput` error naming it.
    pub fn start(config: Config, agent: Arc<dyn Agent>) -> std::io::Result<ServerHandle> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let edge = settings::edge(&config).map_err(invalid)?;
        let server_settings = settings::server(&config).map_err(invalid)?;
        let routes = settings::routes(&config).map_err(invalid)?;
        server::start(server_settings, move |status| {
            Ok(Routes(Arc::new(App::new(routes, edge, agent, status))))
        })
    }
}

/// Runs the configured agent until SIGTERM or SIGINT, then shuts down gracefully.
/// What `main` does.
pub fn run(config: Config) -> ExitCode {
    match configured_agent(&config) {
        Ok(agent) => {
            let deps = agent.dependencies();
            let kind = match deps.first().map(|g| &g.kind) {
                Some(agent::DependencyKind::LlmProviders) => "llm",
                Some(agent::DependencyKind::UpstreamAgents) => "proxy",
                _ => "echo",
            };
            serve(config, agent, kind)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Serves `agent` until SIGTERM or SIGINT, then shuts down gracefully: readiness
/// fails, connections drain, and in-flight responses run until `SHUTDOWN_TIMEOUT`.
pub fn run_with_agent(config: Config, agent: Arc<dyn Agent>) -> ExitCode {
    serve(config, agent, "custom")
}

fn serve(config: Config, agent: Arc<dyn Agent>, kind: &str) -> ExitCode {
    crate::obs::log::init(config.log_level, config.json_logs());
    // Handlers go in before the listeners open, so a signal can never find the process
    // serving but still on the default (killing) disposition.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let summary = startup::Summary::new(&config, agent.as_ref(), kind);
    let handle = match Server::start(config.clone(), agent) {
        Ok(h) => h,
        Err(e) => {
            use std::io::ErrorKind::*;
            // A setting that cannot work is the operator's to fix: exit 2, as for a
            // value clap refuses. Anything else (out of memory, file descriptors) is 1.
            let (code, what) = match e.kind() {
                InvalidInput => (2, "bad configuration".to_owned()),
                AddrInUse | AddrNotAvailable | PermissionDenied => (
                    2,
                    format!("cannot listen on {} (HOST, PORT)", config.listen_addr()),
                ),
                _ => (1, format!("cannot listen on {}", config.listen_addr())),
            };
            tracing::error!(error = %e, "{what}");
            return ExitCode::from(code);
        }
    };
    summary.log(handle.local_addr());
    let mut signals = signals;
    signals.wait();
    tracing::info!("signal received, shutting down");
    handle.shutdown();
    // A second signal skips what is left of SHUTDOWN_DELAY.
    let again = handle.shutdown_trigger();
    let _ = std::thread::Builder::new()
        .name("agentd-signals".into())
        .spawn(move || {
            signals.wait();
            tracing::info!("second signal received, draining now");
            again.fire();
        });
    handle.wait();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, caught.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = {
            let _guard = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        Ok(Signals { rt, term, int })
    }

    fn wait(&mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        });
    }
}
