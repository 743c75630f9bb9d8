//! Building the application: one way, for the server, the CLI and the tests.
//!
//! [`Application::build`] opens the store, starts the core and binds the
//! listener (port 0 in tests) and reports the bound address; `run_until`
//! serves until the shutdown future completes, letting in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

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
        .with_context(|| format!("cannot open the database {}", config.database_url))?;
    Ok(Arc::new(store))
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

    /// Serves until `shutdown` completes, then waits for in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
                if let Err(error) = self.core.flush_api_calls().await {
            tracing::error!(%error, "could not persist the last API-call counts");
        }
        if let Err(error) = self.core.flush_audit().await {
            tracing::error!(%error, "could not write the last audit events");
        }
        served
    }
}
