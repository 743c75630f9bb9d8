//! A small closed-loop load generator: `concurrency` workers, each on its
//! own keep-alive HTTP/1 connection (plain or TLS), send one request after
//! another until the deadline and record each latency. Every run is
//! bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cpu::{CpuUse, Probe};

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Responses by status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Requests that got no response (connection failures, timeouts).
    pub errors: u64,
    /// Latency of every answered request, microseconds.
    pub latencies_us: Vec<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Each worker's state at the end (a refresh chain's newest token), so
    /// that a later run can go on from there.
    pub states: Vec<String>,
    /// CPU time the run cost, when its target names the server's process.
    pub cpu: Option<CpuUse>,
}

impl Outcome {
    /// Answered requests with this status per second.
    pub fn rate_of(&self, status: u16) -> f64 {
        *self.statuses.get(&status).unwrap_or(&0) as f64 / self.elapsed.as_secs_f64()
    }

    /// Requests answered, whatever their status.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }

    /// Adds a later run of the same rows (interleaved rounds).
    pub fn append(&mut self, other: Outcome) {
        self.elapsed += other.elapsed;
        self.states.clear();
        self.merge(other);
    }

    fn merge(&mut self, other: Outcome) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        if let Some(cpu) = other.cpu {
            self.cpu.get_or_insert_default().add(cpu);
        }
        self.latencies_us.extend(other.latencies_us);
        self.states.extend(other.states);
    }
}

/// One kind of request: how to build it from a worker's state, and how a
/// response updates that state (a refresh chain keeps its newest token).
pub trait Scenario: Send + Sync + 'static {
    /// The next request for a worker.
    fn request(&self, state: &str) -> Request<Full<Bytes>>;
    /// Learns from a response.
    fn observe(&self, _state: &mut String, _status: u16, _body: &Bytes) {}
}

/// A fixed request.
pub struct Fixed {
    pub method: Method,
    pub path: String,
    pub body: Option<String>,
    /// When set, each worker's state is its bearer token.
    pub bearer: bool,
}

impl Scenario for Fixed {
    fn request(&self, state: &str) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header("host", "127.0.0.1");
        if self.bearer {
            builder = builder.header("authorization", format!("Bearer {state}"));
        }
        let body = match &self.body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(body.clone()))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).expect("valid request")
    }
}

/// `POST /v1/refresh`, each worker following its own rotation chain.
pub struct RefreshChain;

impl Scenario for RefreshChain {
    fn request(&self, state: &str) -> Request<Full<Bytes>> {
        Request::post("/v1/refresh")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                r#"{{"refresh_token":"{state}"}}"#
            ))))
            .expect("valid request")
    }

    fn observe(&self, state: &mut String, status: u16, body: &Bytes) {
        if status == 200
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(token) = value["refresh_token"].as_str()
        {
            *state = token.to_owned();
        }
    }
}

/// Where requests go: an address, over TLS when a connector is given; and
/// the process whose CPU time a run reads, when known.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub probe: Option<Probe>,
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            probe: None,
        }
    }
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let Some(tls) = &target.tls else {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        return Ok(sender);
    };
    let name = rustls::pki_types::ServerName::from(target.addr.ip());
    let stream = tls.connect(name, stream).await?;
    // One buffer per request (rustls makes a record of each slice of a
    // vectored write), as the server does.
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Runs `scenario` with one worker per entry of `states` for `duration`.
pub async fn drive(
    target: impl Into<Target>,
    states: Vec<String>,
    duration: Duration,
    scenario: Arc<dyn Scenario>,
) -> Outcome {
    let target = target.into();
    let cpu_before = target.probe.as_ref().map(Probe::snapshot);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = states
        .into_iter()
        .map(|mut state| {
            let scenario = Arc::clone(&scenario);
            let target = target.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let mut sender = None;
                while Instant::now() < deadline {
                    if sender.is_none() {
                        match connect(&target).await {
                            Ok(s) => sender = Some(s),
                            Err(_) => {
                                outcome.errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        }
                    }
                    let Some(s) = sender.as_mut() else { continue };
                    let request = scenario.request(&state);
                    let sent = Instant::now();
                    let answer = tokio::time::timeout(Duration::from_secs(30), async {
                        let response = s.send_request(request).await?;
                        let status = response.status().as_u16();
                        let body = response.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>((status, body))
                    })
                    .await;
                    match answer {
                        Ok(Ok((status, body))) => {
                            outcome.latencies_us.push(sent.elapsed().as_micros() as u64);
                            *outcome.statuses.entry(status).or_default() += 1;
                            scenario.observe(&mut state, status, &body);
                        }
                        _ => {
                            outcome.errors += 1;
                            sender = None;
                        }
                    }
                }
                outcome.states.push(state);
                outcome
            })
        })
        .collect();
    let mut total = Outcome::default();
    for worker in workers {
        if let Ok(outcome) = worker.await {
            total.merge(outcome);
        }
    }
    total.elapsed = started.elapsed();
    total.cpu = target
        .probe
        .zip(cpu_before)
        .map(|(p, before)| p.since(&before));
    total
}

/// One request, for set-up steps (log in to get tokens).
pub async fn once(
    target: impl Into<Target>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut sender = connect(&target.into()).await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}
