//! Notices between nodes through PostgreSQL's `LISTEN/NOTIFY`, for
//! deployments without Redis.
//!
//! Publishing is `pg_notify` on a pooled connection; listening holds one
//! dedicated connection per node, outside the store's pool (which it would
//! otherwise hold a slot of for good: with `database.pool_size = 1`, every
//! request). When that connection drops, the node is
//! told ([`NoticeEvent::Lost`]), reconnects with backoff and, once it
//! listens again, is told that too ([`NoticeEvent::Resumed`]).

use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

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
    // Its own connection, with the store's options (the same server, TLS
    // and session settings) and its patience for a new connection.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection is reported at once (and this loop
            // reconnects), not after sqlx's own attempt to reconnect.
            listener.eager_reconnect(false);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::PgNotices;
    use crate::notices::{Notice, NoticeEvent, NoticeSink, Notices};
    use crate::store::DatabaseSettings;
    use crate::store::postgres::PostgresStore;
    use crate::store::postgres::testing::TempDatabase;

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl NoticeSink for Heard {
        fn deliver(&self, event: NoticeEvent) {
            self.0.lock().unwrap().push(format!("{event:?}"));
        }
    }

    /// Listening takes no connection of the store's pool: with a pool of
    /// one, queries still get it, and notices still arrive.
    #[tokio::test]
    async fn listening_leaves_the_pool_to_requests() {
        let Some(database) = TempDatabase::create_or_skip().await else {
            return;
        };
        let mut settings = DatabaseSettings::for_url(&database.url);
        settings.pool_size = 1;
        settings.connect_timeout = Duration::from_secs(1);
        let store = PostgresStore::open(&settings, true).await.unwrap();
        let notices = PgNotices::new(&store);
        let heard = Arc::new(Heard::default());
        let sink: Arc<dyn NoticeSink> = heard.clone();
        notices.subscribe(Arc::downgrade(&sink));
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while !heard.0.lock().unwrap().iter().any(|e| e == "Resumed") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "listening: {:?}", heard.0.lock().unwrap());
        sqlx::query("SELECT 1")
            .execute(store.pool())
            .await
            .expect("the pool's one connection is free");
        notices.publish(&Notice::AccountChanged(7)).await.unwrap();
        let arrived = tokio::time::timeout(Duration::from_secs(5), async {
            while !heard
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.contains("AccountChanged(7)"))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(arrived.is_ok(), "{:?}", heard.0.lock().unwrap());
    }
}
