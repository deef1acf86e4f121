//! Start-up as an operator sees it: a port already held, host names, exit codes of bad
//! settings, the start-up line and colour-free logs. Each runs the real binary.

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

mod support;

use support::free_port;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn agentd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agentd"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// GET `path` on 127.0.0.1:`port` once the server answers; the whole response.
fn get(port: u16, path: &str) -> Option<String> {
    let started = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            return Some(out);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child agentd that is killed if a failing test leaves it running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Running {
    Running(cmd.spawn().unwrap())
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

fn stop(mut running: Running) -> String {
    let child = &mut running.0;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stderr_of(child)
}

fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    let mut running = spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = running.0.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let err = stop(running);
            panic!("still running after 15 s: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), stderr_of(&mut running.0))
}

#[test]
fn a_second_instance_on_a_held_port_exits_2() {
    let port = free_port();
    let first = spawn(
        agentd()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("WORKERS", "2"),
    );
    assert!(get(port, "/health/live").is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    let (code, err) = run_to_exit(
        agentd()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("AGENT_NAME", "SECOND")
            .env("AUTH_REQUIRED", "true")
            .env("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("in use"), "{err}");
    // The first instance alone answers.
    for _ in 0..10 {
        let r = get(port, "/health").unwrap();
        assert!(!r.contains("SECOND"), "{r}");
    }
    stop(first);
}

#[test]
fn host_localhost_listens_on_loopback() {
    let port = free_port();
    let child = spawn(
        agentd()
            .env("PORT", port.to_string())
            .env("HOST", "localhost")
            .env("WORKERS", "1"),
    );
    let r = get(port, "/health/live");
    let err = stop(child);
    assert!(r.is_some_and(|r| r.starts_with("HTTP/1.1 200")), "{err}");
}

#[test]
fn every_bad_setting_exits_2_naming_the_variable() {
    let port = free_port().to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("TLS_CERT", "/nonexistent.pem"),
                ("TLS_KEY", "/nonexistent.pem"),
            ],
            "TLS_",
        ),
        (&[("JWT_PUBLIC_KEY", "garbage")], "JWT_PUBLIC_KEY"),
        (
            &[("RATE_LIMIT_MAX", "5"), ("REDIS_URL", "not a url")],
            "REDIS_URL",
        ),
        (&[("HOST", "no-such-host.invalid")], "HOST"),
        (&[("AGENT", "llm")], "AGENT"),
    ];
    for (vars, named) in cases {
        let mut cmd = agentd();
        cmd.env("PORT", &port).env("HOST", "127.0.0.1");
        for (k, v) in *vars {
            cmd.env(k, v);
        }
        let (code, err) = run_to_exit(&mut cmd);
        assert_eq!(code, Some(2), "{vars:?}: {err}");
        assert!(err.contains(named), "{vars:?} should name {named}: {err}");
    }
    let (_, err) = run_to_exit(agentd().env("PORT", &port).env("JWT_PUBLIC_KEY", "garbage"));
    assert!(
        err.contains("neither a PEM key nor a readable file"),
        "{err}"
    );
    assert!(!err.contains("No such file"), "{err}");
}

#[test]
fn logs_to_a_pipe_have_no_colour_and_the_start_up_line_says_what_runs() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("agentd-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "AGENT_NAME=dotenv-named\nPROT=3001\n").unwrap();
    let child = spawn(
        agentd()
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("WORKERS", "2")
            .env("NODE_ENV", "development")
            .env("RATE_LIMIT_MAX", "100")
            .env("REDIS_URL", "redis://user:hunter2@127.0.0.1:1/0"),
    );
    let r = get(port, "/health").unwrap();
    let err = stop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.contains("dotenv-named"), "the .env was read: {r}");
    assert!(
        !err.contains('\u{1b}'),
        "escape codes in piped logs: {err:?}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("agentd listening"))
        .unwrap_or_else(|| panic!("no start-up line: {err}"));
    for part in [
        "echo",
        "dotenv-named",
        "workers=2",
        "tls=false",
        "PROT",
        "127.0.0.1:1",
    ] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!err.contains("hunter2"), "a secret in the logs: {err}");
    assert!(
        err.lines()
            .any(|l| l.contains("PROT") && l.contains("WARN")),
        "{err}"
    );
}

#[test]
fn the_start_up_line_names_providers_without_keys() {
    let port = free_port();
    let child = spawn(
        agentd()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("WORKERS", "1")
            .env("LOG_FORMAT", "json")
            .env("OPENAI_API_KEY", "sk-secret-key-1234")
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
    );
    let _ = get(port, "/health/live");
    let err = stop(child);
    let line = err
        .lines()
        .find(|l| l.contains("agentd listening"))
        .unwrap_or_else(|| panic!("no start-up line: {err}"));
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(j["agent"].as_str().unwrap().starts_with("llm"), "{line}");
    assert!(
        j["backends"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:9/v1"),
        "{line}"
    );
    assert!(!err.contains("sk-secret-key-1234"), "{err}");
}
