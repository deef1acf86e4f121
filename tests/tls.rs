//! HTTPS over real sockets: ALPN picks HTTP/1.1 or HTTP/2, the protocol is the same as
//! in clear text, a stalled handshake is cut at the header timeout, and a bad
//! certificate or key stops the server from starting.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tls_config() -> agentd::Config {
    let mut c = config();
    c.tls_cert = Some(data("tls-test-cert.pem"));
    c.tls_key = Some(data("tls-test-key.pem"));
    c
}

/// A TLS connection to `server` trusting only the test certificate, offering `alpn`.
async fn connect(server: &TestServer, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data("tls-test-cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn agent_post(prompt: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("/agent")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body(prompt))))
        .unwrap()
}

fn assert_echo(text: &str, prompt: &str) {
    assert_eq!(text.matches("event: ").count(), 3, "{text}");
    assert!(text.contains(&format!("response to: {prompt}\"")), "{text}");
    assert!(text.contains("event: done\n"), "{text}");
}

#[tokio::test]
async fn http1_over_tls() {
    let server = start_echo_with(tls_config());
    let tls = connect(&server, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    // Two requests on one kept-alive TLS connection.
    for prompt in ["one", "two"] {
        let res = send.send_request(agent_post(prompt)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), http::Version::HTTP_11);
        assert!(res.headers().contains_key("strict-transport-security"));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_echo(std::str::from_utf8(&bytes).unwrap(), prompt);
    }
}

#[tokio::test]
async fn h2_by_alpn() {
    let server = start_echo_with(tls_config());
    let tls = connect(&server, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = agent_post(&format!("p{i}"));
            *req.uri_mut() = "https://localhost/agent".parse().unwrap();
            let res = send.send_request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            assert_eq!(res.status(), 200);
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            assert_echo(std::str::from_utf8(&bytes).unwrap(), &format!("p{i}"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn clear_text_on_the_tls_port_is_refused_and_the_server_stays_healthy() {
    let server = start_echo_with(tls_config());
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "served clear text on the TLS port: {:?}",
        String::from_utf8_lossy(&got)
    );
    // A real TLS client still gets served.
    let tls = connect(&server, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/health")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_at_the_header_timeout() {
    let mut c = tls_config();
    c.header_read_timeout = 300;
    let server = start_echo_with(c);
    // One sends nothing; one sends the first bytes of a ClientHello and stops.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let t0 = Instant::now();
    for s in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server kept a stalled handshake open past 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "expected the connection closed");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(300) + Duration::from_secs(1),
        "closed after {took:?}"
    );
}

#[test]
fn bad_certificates_stop_the_start_with_the_variable_named() {
    let agent: Arc<dyn agentd::Agent> = Arc::new(agentd::EchoAgent::new("e"));
    let cases = [
        ("missing.pem", "tls-test-key.pem", "TLS_CERT"),
        ("tls-test-cert.pem", "missing.pem", "TLS_KEY"),
        // A key with no certificate in it as the certificate.
        ("tls-test-key.pem", "tls-test-key.pem", "TLS_CERT"),
        // A key that does not belong to the certificate.
        (
            "tls-test-cert.pem",
            "rsa-test-private.pem",
            "TLS_CERT/TLS_KEY",
        ),
    ];
    for (cert, key, named) in cases {
        let mut c = config();
        c.tls_cert = Some(data(cert));
        c.tls_key = Some(data(key));
        let err = match agentd::Server::start(c, agent.clone()) {
            Ok(_) => panic!("started with cert {cert} and key {key}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(named), "{cert}/{key}: {err}");
    }
}

#[test]
fn a_certificate_needs_its_key() {
    use clap::Parser;
    let err = agentd::Config::try_parse_from(["agentd", "--tls-cert", "c.pem"]).unwrap_err();
    assert!(err.to_string().contains("TLS_KEY"), "{err}");
    let err = agentd::Config::try_parse_from(["agentd", "--tls-key", "k.pem"]).unwrap_err();
    assert!(err.to_string().contains("TLS_CERT"), "{err}");
}
