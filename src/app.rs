//! Building the application: one way, for the server, the CLI and the tests.
//!
//! [`Application::build`] opens the store, starts the core and binds the
//! listener (port 0 in tests) and reports the bound address; `run_until`
//! serves until the shutdown future completes, letting in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::Config;
use crate::core::Core;
use crate::core::clock::Clock;
use crate::http::{self, AppState};
use crate::limits::memory::MemoryLimiter;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// Opens the configured store, running its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.uses_data_dir() {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
    }
    let store = SqliteStore::connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                displayable_url(&config.database_url)
            )
        })?;
    Ok(Arc::new(store))
}

/// A database URL fit for an error message: a SQLite path as is, anything
/// else reduced to its scheme (a server URL may carry a password).
fn displayable_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "(database_url)".to_owned(),
    }
}

/// Opens the store and starts the core, without HTTP (for the CLI).
pub async fn open_core(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Core>> {
    let store = open_store(config).await?;
    let limiter = Arc::new(MemoryLimiter::new());
    let core = Core::start(store, limiter, clock, config.core.clone())
        .await
        .context("cannot start the core")?;
    Ok(Arc::new(core))
}

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    router: axum::Router,
    core: Arc<Core>,
    header_timeout: Duration,
}

impl Application {
    /// Opens the store, starts the core and binds the listener.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let core = open_core(config, clock).await?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another server using it?)",
                config.listen
            )
        })?;
        let address = listener.local_addr()?;
        let state = AppState {
            core: Arc::clone(&core),
            contracts: Arc::new(config.contracts.clone()),
            http: Arc::new(config.http.clone()),
        };
        let router = http::router(state, &config.http);
        Ok(Self {
            listener,
            address,
            router,
            core,
            header_timeout: config.http.header_timeout,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The core behind the server.
    pub fn core(&self) -> Arc<Core> {
        Arc::clone(&self.core)
    }

    /// Serves until `shutdown` completes, then lets in-flight requests
    /// finish (idle keep-alive connections are closed at once).
    ///
    /// Connections are served by hyper directly rather than `axum::serve`,
    /// for the header-read timeout: a client that trickles its request head
    /// (slowloris) is dropped after `http.header_timeout`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request)
                });
            let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        graceful.shutdown().await;
        if let Err(error) = self.core.flush_api_calls().await {
            tracing::error!(%error, "could not persist the last API-call counts");
        }
        if let Err(error) = self.core.flush_audit().await {
            tracing::error!(%error, "could not write the last audit events");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::displayable_url;

    #[test]
    fn database_urls_in_errors_carry_no_credentials() {
        assert_eq!(
            displayable_url("sqlite:///var/lib/sesame/sesame.db"),
            "sqlite:///var/lib/sesame/sesame.db"
        );
        assert_eq!(
            displayable_url("postgres://sesame:hunter2@db/sesame"),
            "postgres://…"
        );
    }
}
