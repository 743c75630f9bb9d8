//! Notices between nodes through PostgreSQL's `LISTEN/NOTIFY`, for
//! deployments without Redis.
//!
//! Publishing is `pg_notify` on a pooled connection; listening holds one
//! dedicated connection per node, outside the store's pool (which it would
//! otherwise hold a slot of for good: with `database.pool_size = 1`, every
//! request). When that connection drops, the node is
//! told ([`NoticeEvent::Lost`]), reconnects with backoff and, once it
//! listens again, is told that too ([`NoticeEvent::Resumed`]).
//!
//! A connection can also die without closing (a half-open TCP connection
//! behind a broken network or a failed-over server): nothing arrives, and
//! nothing says so. The listener therefore makes a round trip on its connection
//! after every [`HEARTBEAT`] without traffic; an answer that does not come
//! within the store's connect timeout counts as a lost connection.

use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Acquire, Connection};

use crate::notices::{self, Notice, NoticeError, NoticeEvent, NoticeSink, Notices};

/// The channel every node listens on.
pub const CHANNEL: &str = "sesame_notices";

/// How long the listening connection may stay silent before it is checked.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// `LISTEN/NOTIFY` on the store's database.
#[derive(Debug, Clone)]
pub struct PgNotices {
    pool: PgPool,
    heartbeat: Duration,
    /// The store's patience: a notice published by a background task (a
    /// lockout after a login's answer) gives up after twice this, like the
    /// store's own background statements.
    patience: Duration,
}

impl PgNotices {
    /// Notices over the store's pool.
    pub fn new(store: &super::PostgresStore) -> Self {
        Self {
            pool: store.pool().clone(),
            heartbeat: HEARTBEAT,
            patience: store.patience,
        }
    }
}

#[async_trait]
impl Notices for PgNotices {
    async fn publish(&self, notice: &Notice) -> Result<(), NoticeError> {
        let published = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(notices::encode(notice))
            .execute(&self.pool);
        match super::bounded(self.patience, published).await {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(NoticeError(error.to_string())),
            None => Err(NoticeError(super::GAVE_UP.into())),
        }
    }

    fn subscribe(&self, sink: Weak<dyn NoticeSink>) {
        tokio::spawn(listen(self.pool.clone(), self.heartbeat, sink));
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// Listens until the sink is gone, reconnecting with backoff.
async fn listen(pool: PgPool, heartbeat: Duration, sink: Weak<dyn NoticeSink>) {
    // Its own connection, with the store's options (the same server, TLS
    // and session settings) and its patience for a new connection, which is
    // also how long a heartbeat may take.
    let patience = pool.options().get_acquire_timeout();
    let options = pool.connect_options().as_ref().clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        // A pool per connection: a listener given up on returns its
        // connection to its pool only after an `UNLISTEN` (sqlx's drop), which
        // a silent connection never answers; the next one must not wait for it.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(patience)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options.clone());
        let listener = tokio::time::timeout(2 * patience, async {
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection is reported at once (and this loop
            // reconnects), not after sqlx's own attempt to reconnect.
            listener.eager_reconnect(false);
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        })
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut));
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
            // notices may have been missed, which the sink must know. It is
            // cancel-safe (sqlx reads whole messages from its own buffer),
            // so a heartbeat may interrupt the wait.
            let received = match tokio::time::timeout(heartbeat, listener.try_recv()).await {
                Ok(received) => received,
                Err(_silence) => {
                    let Some(sink) = sink.upgrade() else { return };
                    let answer = tokio::time::timeout(patience, heartbeat_on(&mut listener)).await;
                    match answer {
                        Ok(Ok(_)) => continue,
                        Ok(Err(error)) => {
                            sink.deliver(NoticeEvent::Lost);
                            tracing::warn!(%error, "notice connection failed its heartbeat; reconnecting");
                        }
                        Err(_) => {
                            sink.deliver(NoticeEvent::Lost);
                            tracing::warn!(
                                waited = ?patience,
                                "notice connection did not answer its heartbeat; reconnecting"
                            );
                        }
                    }
                    break;
                }
            };
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

/// One round trip on the listening connection.
async fn heartbeat_on(listener: &mut PgListener) -> Result<(), sqlx::Error> {
    let connection: &mut PgConnection = listener.acquire().await?;
    connection.ping().await
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::Duration;

    use sqlx::postgres::PgConnectOptions;

    use super::PgNotices;
    use crate::notices::{Notice, NoticeEvent, Notices};
    use crate::store::DatabaseSettings;
    use crate::store::postgres::PostgresStore;
    use crate::store::postgres::testing::TempDatabase;
    use crate::testing::{Proxy, Recorder, via, weak};

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
        let store = PostgresStore::open(&settings, crate::store::Migrate::Apply)
            .await
            .unwrap();
        let notices = PgNotices::new(&store);
        let heard = Arc::new(Recorder::default());
        notices.subscribe(weak(&heard));
        heard
            .wait_for(Duration::from_secs(5), |events| {
                events.contains(&NoticeEvent::Resumed)
            })
            .await;
        sqlx::query("SELECT 1")
            .execute(store.pool())
            .await
            .expect("the pool's one connection is free");
        notices.publish(&Notice::AccountChanged(7)).await.unwrap();
        let wanted = NoticeEvent::Notice(Notice::AccountChanged(7));
        heard
            .wait_for(Duration::from_secs(5), |events| events.contains(&wanted))
            .await;
    }

    /// A listening connection that goes silent without closing (a hung
    /// server, a broken network) is found by its heartbeat, reported lost,
    /// and replaced once the server answers again.
    #[tokio::test]
    async fn a_silent_connection_is_noticed_and_replaced() {
        let Some(database) = TempDatabase::create_or_skip().await else {
            return;
        };
        let server = PgConnectOptions::from_str(&database.url).unwrap();
        let target = format!("{}:{}", server.get_host(), server.get_port());
        let proxy = Proxy::start("127.0.0.1:0", &target).await;
        let mut settings = DatabaseSettings::for_url(via(&database.url, proxy.port));
        settings.connect_timeout = Duration::from_millis(500);
        let listening = PostgresStore::open(&settings, crate::store::Migrate::Apply)
            .await
            .unwrap();
        let notices = PgNotices {
            heartbeat: Duration::from_millis(200),
            ..PgNotices::new(&listening)
        };
        let direct = DatabaseSettings::for_url(&database.url);
        let publisher = PgNotices::new(
            &PostgresStore::open(&direct, crate::store::Migrate::Check)
                .await
                .unwrap(),
        );
        let heard = Arc::new(Recorder::default());
        notices.subscribe(weak(&heard));
        heard
            .wait_for(Duration::from_secs(5), |events| !events.is_empty())
            .await;
        // Heartbeats on a healthy connection are answered: nothing is lost.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(heard.events(), [NoticeEvent::Resumed]);

        proxy.freeze();
        heard
            .wait_for(Duration::from_secs(3), |events| events.len() >= 2)
            .await;
        assert_eq!(heard.events(), [NoticeEvent::Resumed, NoticeEvent::Lost]);

        // The frozen connection stays silent for ever; a new one must be made.
        proxy.thaw();
        heard
            .wait_for(Duration::from_secs(10), |events| {
                events.last() == Some(&NoticeEvent::Resumed) && events.len() >= 3
            })
            .await;
        publisher.publish(&Notice::AccountChanged(3)).await.unwrap();
        let wanted = NoticeEvent::Notice(Notice::AccountChanged(3));
        heard
            .wait_for(Duration::from_secs(5), |events| events.contains(&wanted))
            .await;
        let events = heard.events();
        // Between the two: only failed attempts to listen again.
        assert!(
            events[1..events.len() - 2]
                .iter()
                .all(|event| *event == NoticeEvent::Lost),
            "{events:?}"
        );
        assert_eq!(
            events[events.len() - 2..],
            [NoticeEvent::Resumed, wanted],
            "{events:?}"
        );
        proxy.stop().await;
    }
}
