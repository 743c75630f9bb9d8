//! HTTPS served by Sesame itself: certificates made at test time by a test
//! CA (rcgen), clients that trust that CA and clients that do not, HTTP/2 by
//! ALPN, renewal by SIGHUP and by the files changing with connections kept,
//! a bad renewal refused, HSTS, and the bounds on handshakes and connections.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{KillOnDrop, PASSWORD, TestApp, free_port, sesame_command};

/// A test CA and the certificates it signs for 127.0.0.1 and localhost.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sesame test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Self {
            pem: certificate.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self) -> Leaf {
        self.leaf_with(|_| {})
    }

    /// A leaf valid until `not_after` (and from a day before it, or before
    /// now, whichever is earlier).
    fn leaf_until(&self, not_after: time::OffsetDateTime) -> Leaf {
        self.leaf_with(|params| {
            params.not_before = (not_after - time::Duration::days(1))
                .min(time::OffsetDateTime::now_utc() - time::Duration::days(1));
            params.not_after = not_after;
        })
    }

    fn leaf_with(&self, tweak: impl FnOnce(&mut rcgen::CertificateParams)) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        tweak(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: certificate.pem(),
            key: key.serialize_pem(),
            der: certificate.der().to_vec(),
        }
    }

    /// A client that trusts this CA only, and shows which certificate the
    /// server presented.
    fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// A TLS connection (`alpn`: `http/1.1` or `h2`) to `address`, nothing
    /// sent yet.
    async fn raw_tls(
        &self,
        address: &str,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, stream).await.unwrap()
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .tls_info(true)
    }
}

/// The certificate the server presented on the connection `response` came on.
fn presented(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

/// Writes a pair where the server reads it, each file replaced at once (a
/// rename), as cert-manager and certbot do.
fn install(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    for (path, text) in [(&key_path, key), (&cert_path, cert)] {
        let staging = path.with_extension("new");
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, path).unwrap();
    }
    (cert_path, key_path)
}

async fn spawn_https(
    ca: &Ca,
    dir: &Path,
    tweak: impl FnOnce(&mut sesame::config::RawConfig),
) -> TestApp {
    let leaf = ca.leaf();
    let (cert, key) = install(dir, &leaf.cert, &leaf.key);
    TestApp::spawn_with(|raw| {
        raw.tls_cert = Some(cert);
        raw.tls_key = Some(key);
        tweak(raw);
    })
    .await
}

#[tokio::test]
async fn a_login_over_https_needs_a_client_that_trusts_the_certificate() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_https(&ca, dir.path(), |_| {}).await;
    assert!(
        app.address.starts_with("https://127.0.0.1:"),
        "{}",
        app.address
    );
    app.create_user("ann").await;
    let login = json!({"login": "ann", "password": PASSWORD});

    // HTTP/2 when the client offers it (ALPN), HTTP/1.1 otherwise.
    for (client, version) in [
        (ca.client(), reqwest::Version::HTTP_2),
        (
            ca.client_builder().http1_only().build().unwrap(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let response = client
            .post(app.url("/v1/login"))
            .json(&login)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000"
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        let me = client
            .get(app.url("/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), StatusCode::OK);
        assert_eq!(me.version(), version);
    }

    // TLS 1.3 and 1.2 both (older versions are not in rustls at all).
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let pinned = ca
            .client_builder()
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let response = pinned.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{version:?}");
    }

    // A client that does not trust the certificate never sends the password.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let refused = stranger
        .post(app.url("/v1/login"))
        .json(&login)
        .send()
        .await;
    assert!(refused.unwrap_err().is_connect());
    let other_ca = Ca::new();
    let refused = other_ca
        .client()
        .post(app.url("/v1/login"))
        .json(&login)
        .send()
        .await;
    assert!(refused.unwrap_err().is_connect());

    // Plain HTTP on the HTTPS port is told what to do, in plain text.
    let plain = app.url("/healthz").replace("https://", "http://");
    let answer = reqwest::get(&plain).await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(answer.text().await.unwrap().contains("HTTPS only"));
}

#[tokio::test]
async fn hsts_is_sent_over_https_only_and_as_configured() {
    let plain = TestApp::spawn().await;
    let response = plain
        .client
        .get(plain.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );

    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_https(&ca, dir.path(), |raw| {
        raw.tls.hsts_max_age = 600;
        raw.tls.hsts_include_subdomains = true;
    })
    .await;
    // Every answer, errors included.
    for path in ["/healthz", "/v1/me", "/no/such/route"] {
        let response = ca.client().get(app.url(path)).send().await.unwrap();
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=600; includeSubDomains",
            "{path}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let off = spawn_https(&ca, dir.path(), |raw| raw.tls.hsts = false).await;
    let response = ca.client().get(off.url("/healthz")).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
}

#[tokio::test]
async fn a_renewal_on_disk_is_served_and_open_connections_stay() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf();
    let (cert, key) = install(dir.path(), &first.cert, &first.key);
    let app = TestApp::spawn_with(|raw| {
        raw.tls_cert = Some(cert);
        raw.tls_key = Some(key);
        raw.tls.watch_interval = 1;
    })
    .await;
    let kept = ca.client_builder().http1_only().build().unwrap();
    let response = kept.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(presented(&response), first.der);

    let renewed_until = time::macros::datetime!(2031-06-30 12:00 UTC);
    let second = ca.leaf_until(renewed_until);
    install(dir.path(), &second.cert, &second.key);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = ca.client().get(app.url("/healthz")).send().await.unwrap();
        if presented(&response) == second.der {
            break;
        }
        assert!(Instant::now() < deadline, "the renewal was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sample = |series: &'static str| async {
        let metrics = crate::helpers::scrape_with(&ca.client(), &app).await;
        crate::helpers::sample(&metrics, series)
    };
    let expiry = || sample("sesame_tls_certificate_expiry_timestamp_seconds");
    // Until the watcher has refused `n` reloads in all.
    let refused = |n: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        while sample("sesame_tls_reload_failures_total").await != Some(n) {
            assert!(Instant::now() < deadline, "reload {n} was never refused");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(sample("sesame_tls_reload_failures_total").await, Some(0.0));
    assert_eq!(
        expiry().await,
        Some(renewed_until.unix_timestamp() as f64),
        "the renewal's notAfter"
    );
    // The connection opened before the renewal is still up, on its certificate.
    let response = kept.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(presented(&response), first.der, "the same connection");

    // A key that is not the certificate's: refused, the pair in service stays.
    let third = ca.leaf();
    install(dir.path(), &third.cert, &first.key);
    refused(1.0).await;
    let response = ca.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(presented(&response), second.der);

    // A renewal that has already expired (an old pair restored): refused
    // too, and the expiry in the metrics is still the served one's.
    let expired = ca.leaf_until(time::macros::datetime!(2001-01-01 0:00 UTC));
    install(dir.path(), &expired.cert, &expired.key);
    refused(2.0).await;
    let response = ca.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(presented(&response), second.der);
    assert_eq!(expiry().await, Some(renewed_until.unix_timestamp() as f64));

    // The files become symbolic links to a new pair, as a Kubernetes
    // secret's update makes them: served too.
    let fourth = ca.leaf();
    let version = dir.path().join("v4");
    std::fs::create_dir(&version).unwrap();
    for (name, text) in [("key.pem", &fourth.key), ("cert.pem", &fourth.cert)] {
        std::fs::write(version.join(name), text).unwrap();
        let link = dir.path().join(format!("{name}.link"));
        std::os::unix::fs::symlink(version.join(name), &link).unwrap();
        std::fs::rename(&link, dir.path().join(name)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = ca.client().get(app.url("/healthz")).send().await.unwrap();
        if presented(&response) == fourth.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the linked pair was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sesame serve --tls-cert --tls-key`, its standard error kept.
struct HttpsProcess {
    child: std::process::Child,
    address: String,
    log: PathBuf,
}

impl HttpsProcess {
    fn start(
        ca: &Ca,
        env: Vec<(&'static str, String)>,
        cert: &Path,
        key: &Path,
        log: PathBuf,
    ) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = sesame_command(env)
            // Only SIGHUP reloads within this test's time.
            .env("SESAME_TLS__WATCH_INTERVAL", "3600")
            .args(["serve", "--listen", &listen, "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let process = Self {
            child,
            address: format!("https://{listen}"),
            log,
        };
        let client = ca.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        let runtime = tokio::runtime::Handle::current();
        while !tokio::task::block_in_place(|| {
            runtime.block_on(async {
                client
                    .get(format!("{}/healthz", process.address))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
        }) {
            assert!(
                Instant::now() < deadline,
                "{}",
                std::fs::read_to_string(&process.log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    fn hangup(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for HttpsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_pair_is_refused() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    // Near its end: served, with a warning.
    let first = ca.leaf_until(
        time::OffsetDateTime::now_utc() + time::Duration::days(3) - time::Duration::hours(1),
    );
    let (cert, key) = install(dir.path(), &first.cert, &first.key);
    let deployment = crate::helpers::Deployment::new().await;
    let server = HttpsProcess::start(
        &ca,
        deployment.env(),
        &cert,
        &key,
        dir.path().join("stderr.log"),
    );
    let url = format!("{}/healthz", server.address);
    let kept = ca.client_builder().http1_only().build().unwrap();
    assert_eq!(presented(&kept.get(&url).send().await.unwrap()), first.der);
    let log = server.log();
    assert!(
        log.contains("the TLS certificate expires at") && log.contains("in 2 days: renew it"),
        "{log}"
    );

    let second = ca.leaf();
    install(dir.path(), &second.cert, &second.key);
    server.hangup();
    let deadline = Instant::now() + Duration::from_secs(15);
    while presented(&ca.client().get(&url).send().await.unwrap()) != second.der {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = kept.get(&url).send().await.unwrap();
    assert_eq!(
        presented(&response),
        first.der,
        "the open connection stayed"
    );
    assert!(server.log().contains("TLS certificate reloaded (SIGHUP)"));

    // Not PEM at all, a key of another certificate, a certificate that
    // has expired: each refused, logged, and the pair in service stays.
    let expired = ca.leaf_until(time::macros::datetime!(2001-01-01 0:00 UTC));
    for (cert, key) in [
        ("not a certificate".to_owned(), second.key.clone()),
        (ca.leaf().cert, second.key.clone()),
        (expired.cert, expired.key),
    ] {
        install(dir.path(), &cert, &key);
        let errors = server.log().matches("not reloaded").count();
        server.hangup();
        let deadline = Instant::now() + Duration::from_secs(15);
        while server.log().matches("not reloaded").count() == errors {
            assert!(
                Instant::now() < deadline,
                "no error logged:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let response = ca.client().get(&url).send().await.unwrap();
        assert_eq!(presented(&response), second.der);
    }
    let log = server.log();
    assert!(log.contains("holds no PEM certificate"), "{log}");
    assert!(log.contains("does not belong to the certificate"), "{log}");
    assert!(log.contains("expired at 2001-01-01T00:00:00Z"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "no key material in the log");
}

/// Reads until the server closes the connection; how long that took.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0_u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_and_connections_are_bounded() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_https(&ca, dir.path(), |raw| {
        raw.tls.max_handshakes = 2;
        raw.tls.handshake_timeout = 1;
        raw.http.header_timeout = 1;
    })
    .await;
    let address = app.address.trim_start_matches("https://").to_owned();

    // Two clients open TCP and stall: they hold the two handshake slots,
    // so a third is closed at once; the stalled ones are closed after the
    // handshake timeout, and then a real client gets through.
    let mut stalled: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = std::net::TcpStream::connect(&address).unwrap();
    let closed = closed_within(&mut third, Duration::from_secs(5)).expect("closed");
    assert!(closed < Duration::from_millis(900), "{closed:?}");
    for stream in &mut stalled {
        let closed = closed_within(stream, Duration::from_secs(5)).expect("timed out");
        assert!(closed <= Duration::from_secs(2), "{closed:?}");
    }
    let response = ca.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Past the handshake, a request head trickled in is cut off by the
    // header timeout, as over plain HTTP.
    let started = Instant::now();
    let mut secure = ca.raw_tls(&address, b"http/1.1").await;
    secure
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), secure.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // Over HTTP/2, a client that never sends its preface is cut off too
    // (hyper would wait for it for ever, holding a connection slot and a
    // stop).
    let started = Instant::now();
    let mut silent = ca.raw_tls(&address, b"h2").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Connections at once: beyond http.max_connections, closed at once.
    let limited = TestApp::spawn_with(|raw| {
        raw.http.max_connections = 2;
        raw.http.header_timeout = 2;
    })
    .await;
    let address = limited.address.trim_start_matches("http://").to_owned();
    let mut open: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = std::net::TcpStream::connect(&address).unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert_eq!(answer, "", "refused without an answer");
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = limited
        .client
        .get(limited.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a slot freed is used again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_no_request_for_the_header_timeout_is_closed() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_https(&ca, dir.path(), |raw| raw.http.header_timeout = 2).await;
    let address = app.address.trim_start_matches("https://").to_owned();
    let tls = ca.raw_tls(&address, b"h2").await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let healthz = || {
        hyper::Request::get(app.url("/healthz"))
            .body(String::new())
            .unwrap()
    };
    // Requests closer together than the timeout keep the connection.
    for _ in 0..6 {
        let response = sender.send_request(healthz()).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then nothing for two seconds: the server closes it (hyper alone would
    // keep it for as long as the client answers pings, holding one of
    // http.max_connections).
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), connection).await;
    let waited = started.elapsed();
    assert!(closed.is_ok(), "still open after {waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert!(sender.send_request(healthz()).await.is_err());
}

/// A stop is not held up by an HTTP/2 connection that opened and said
/// nothing: it goes within the header timeout, not the stop's whole grace
/// (`request_timeout` + 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_does_not_hold_up_a_stop() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.leaf();
    let (cert, key) = install(dir.path(), &leaf.cert, &leaf.key);
    let deployment = crate::helpers::Deployment::new().await;
    let mut env = deployment.env();
    env.push(("SESAME_HTTP__HEADER_TIMEOUT", "2".to_owned()));
    let mut server = HttpsProcess::start(&ca, env, &cert, &key, dir.path().join("stderr.log"));
    let address = server.address.trim_start_matches("https://").to_owned();
    let _silent = ca.raw_tls(&address, b"h2").await;
    let stopped = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}\n{}", server.log());
}

/// README: Serving HTTPS, run as written (the port made free, the binary
/// this build's): openssl makes the pair, Sesame serves it, curl checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_https_example_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Serving HTTPS").unwrap()..];
    let start = section.find("```sh\n").unwrap() + "```sh\n".len();
    let end = start + section[start..].find("```").unwrap();
    let commands: Vec<String> = section[start..end]
        .replace("\\\n", " ")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let [openssl, serve, curl] = &commands[..] else {
        panic!("three commands expected: {commands:?}")
    };
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let bash = |command: &str| {
        std::process::Command::new("bash")
            .args(["-c", &command.replace("8443", &port)])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let made = bash(openssl);
    assert!(made.status.success(), "{made:?}");

    let args = serve
        .strip_prefix("cargo run --release -- ")
        .expect("the README runs Sesame with cargo run")
        .replace("8443", &port);
    let deployment = crate::helpers::Deployment::new().await;
    let server = KillOnDrop(
        sesame_command(deployment.env())
            .args(args.split_whitespace())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = bash(curl.split('#').next().unwrap());
        if answer.status.success() || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(server);
    let expected = curl
        .split("# ")
        .nth(1)
        .expect("the README says what curl prints");
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout),
        expected.trim(),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_is_warned_about_or_refused() {
    let deployment = crate::helpers::Deployment::new().await;
    let refused = sesame_command(deployment.env())
        .args(["serve", "--listen", "0.0.0.0:0", "--require-tls"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("require_tls") && message.contains("tls_cert"),
        "{message}"
    );

    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let server = KillOnDrop(
        sesame_command(deployment.env())
            .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crate::helpers::healthy(&format!("127.0.0.1:{port}")) {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("serving plain HTTP beyond this host"),
        "{text}"
    );

    // On loopback (behind a proxy on the same host), --require-tls starts.
    let local = crate::helpers::ServerProcess::start_with(
        sesame_command(deployment.env()),
        &["--require-tls"],
    );
    assert!(crate::helpers::healthy(
        local.address.trim_start_matches("http://")
    ));
}

/// A client that pipelines requests and stops reading the answers leaves
/// no header timer running; its connection (and its place under
/// http.max_connections) is given up once a write has made no progress
/// for http.request_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let app = TestApp::spawn_with(|raw| {
        raw.http.max_connections = 1;
        raw.http.request_timeout = 2;
    })
    .await;
    let address: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(address).await.unwrap();
    let requests = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(300);
    stalled.write_all(&requests).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let healthz = || async {
        reqwest::Client::new()
            .get(app.url("/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
    };
    assert!(healthz().await.is_err(), "the one connection slot is held");
    let started = Instant::now();
    loop {
        if let Ok(response) = healthz().await {
            assert_eq!(response.status(), StatusCode::OK);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stalled connection kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stalled);
}
