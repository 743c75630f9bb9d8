//! Notices between nodes through PostgreSQL's `LISTEN/NOTIFY`, for
//! deployments without Redis.
//!
//! Publishing is `pg_notify` on a pooled connection; listening holds one
//! dedicated connection per node. When that connection drops, the node is
//! told ([`NoticeEvent::Lost`]), reconnects with backoff and, once it
//! listens again, is told that too ([`NoticeEvent::Resumed`]).

use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};

use crate::notices::{self, Notice, NoticeError, NoticeEvent, NoticeSink, Notices};

/// The channel every node listens on.
pub const CHANNEL: &str = "sesame_notices";

/// `LISTEN/NOTIFY` on the store's database.
#[derive(Debug, Clone)]
pub struct PgNotices {
    pool: PgPool,
}

impl PgNotices {
    /// Notices over the store's pool.
    pub fn new(store: &super::PostgresStore) -> Self {
        Self {
            pool: store.pool().clone(),
        }
    }
}

#[async_trait]
impl Notices for PgNotices {
    async fn publish(&self, notice: &Notice) -> Result<(), NoticeError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(notices::encode(notice))
            .execute(&self.pool)
            .await
            .map_err(|e| NoticeError(e.to_string()))?;
        Ok(())
    }

    fn subscribe(&self, sink: Weak<dyn NoticeSink>) {
        tokio::spawn(listen(self.pool.clone(), sink));
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// Listens until the sink is gone, reconnecting with backoff.
async fn listen(pool: PgPool, sink: Weak<dyn NoticeSink>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                let Some(sink) = sink.upgrade() else { return };
                sink.deliver(NoticeEvent::Lost);
                tracing::warn!(%error, "cannot listen for notices from other nodes; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        match sink.upgrade() {
            Some(sink) => sink.deliver(NoticeEvent::Resumed),
            None => return,
        }
        backoff = Duration::from_millis(100);
        loop {
            // `try_recv` answers `None` when the connection was lost: then
            // notices may have been missed, which the sink must know.
            let received = listener.try_recv().await;
            let Some(sink) = sink.upgrade() else { return };
            match received {
                Ok(Some(notification)) => match notices::decode(notification.payload()) {
                    Some(notice) => sink.deliver(NoticeEvent::Notice(notice)),
                    None => tracing::debug!("ignored a malformed notice"),
                },
                Ok(None) => {
                    sink.deliver(NoticeEvent::Lost);
                    tracing::warn!("lost the notice connection to PostgreSQL; reconnecting");
                    break;
                }
                Err(error) => {
                    sink.deliver(NoticeEvent::Lost);
                    tracing::warn!(%error, "notice connection failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
