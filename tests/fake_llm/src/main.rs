//! The `fake-llm` binary: serves the fake OpenAI/Anthropic upstream until SIGTERM/SIGINT,
//! for benchmarking agentd's LLM path out of process. Prints `listening on http://ADDR`
//! once bound. Per-request faults and behaviour changes go through prompt directives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use fake_llm::{Behaviour, FakeLlm, Options};

const USAGE: &str = "\
usage: fake-llm [--host H] [--port P] [--tokens N] [--token-delay-ms D] [--ttft-ms T]
                [--token-text S] [--threads N] [--record]

  --host H            address to bind (default 127.0.0.1)
  --port P            port to bind, 0 for any free one (default 0)
  --tokens N          tokens per answer (default 5)
  --token-delay-ms D  delay between tokens (default 0)
  --ttft-ms T         delay before the first token (default 0)
  --token-text S      token prefix; token i is S followed by i (default \"tok \")
  --threads N         tokio worker threads (default: number of CPUs)
  --record            keep every request in memory (off by default)

Prints `listening on http://ADDR` on stdout once bound; stops on SIGTERM or SIGINT.
Per-request faults: [[fault:...]] directives in the last user message (see README.md).";

struct Args {
    host: IpAddr,
    port: u16,
    behaviour: Behaviour,
    threads: Option<usize>,
    record: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        behaviour: Behaviour::default(),
        threads: None,
        record: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if flag == "--record" {
            args.record = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        let ms = |v: &str| v.parse::<u64>().map(Duration::from_millis);
        match flag.as_str() {
            "--host" => args.host = value.parse().map_err(|e| bad(&e))?,
            "--port" => args.port = value.parse().map_err(|e| bad(&e))?,
            "--tokens" => args.behaviour.tokens = value.parse().map_err(|e| bad(&e))?,
            "--token-delay-ms" => args.behaviour.token_delay = ms(&value).map_err(|e| bad(&e))?,
            "--ttft-ms" => args.behaviour.ttft = ms(&value).map_err(|e| bad(&e))?,
            "--token-text" => args.behaviour.token_text = value,
            "--threads" => args.threads = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-llm: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-llm: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let opts = Options {
            addr: Some(SocketAddr::new(args.host, args.port)),
            default: args.behaviour,
        };
        let llm = match FakeLlm::start(opts).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fake-llm: bind {}:{}: {e}", args.host, args.port);
                return ExitCode::FAILURE;
            }
        };
        llm.set_recording(args.record);
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{}", llm.addr());
            let _ = out.flush();
        }
        wait_for_signal().await;
        llm.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
