//! Helpers shared by the unit tests of several modules.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::notices::{NoticeEvent, NoticeSink};

/// `url` with its host and port replaced by `127.0.0.1:{port}`.
pub(crate) fn via(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let credentials = authority
        .rsplit_once('@')
        .map(|(credentials, _)| format!("{credentials}@"))
        .unwrap_or_default();
    format!("{scheme}://{credentials}127.0.0.1:{port}{path}")
}

/// A TCP proxy to a server (Redis, PostgreSQL) that can be cut (closing
/// every connection, as a stopped server would) or frozen (holding
/// connections open without answering, as a hung server or a silently
/// broken network would).
pub(crate) struct Proxy {
    pub(crate) port: u16,
    task: JoinHandle<()>,
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub(crate) async fn start(listen: &str, target: &str) -> Self {
        let listener = TcpListener::bind(listen).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = target.to_owned();
        let frozen = Arc::new(tokio::sync::watch::Sender::new(false));
        let freezes = frozen.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) cuts every link.
            let mut links = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                while links.try_join_next().is_some() {}
                let target = target.clone();
                let mut frozen = freezes.subscribe();
                links.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    if !*frozen.borrow_and_update() {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = frozen.wait_for(|frozen| *frozen) => {}
                        }
                    }
                    // Frozen: hold both ends open and pass nothing, for good.
                    std::future::pending::<()>().await;
                });
            }
        });
        Self { port, task, frozen }
    }

    /// Stops answering: existing and new connections stay open, silent.
    pub(crate) fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// New connections are forwarded again; frozen ones stay frozen.
    pub(crate) fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Closes every connection and stops accepting.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A notice sink that keeps every event (for the subscribers' tests).
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Vec<NoticeEvent>>);

impl NoticeSink for Recorder {
    fn deliver(&self, event: NoticeEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    pub(crate) fn events(&self) -> Vec<NoticeEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Polls until `done` holds for the events, for at most `limit`.
    pub(crate) async fn wait_for(&self, limit: Duration, done: impl Fn(&[NoticeEvent]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.events()) {
            assert!(
                Instant::now() < deadline,
                "waited {limit:?}; events: {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The recorder as the weak sink a subscriber takes.
pub(crate) fn weak(sink: &Arc<Recorder>) -> Weak<dyn NoticeSink> {
    let weak: Weak<Recorder> = Arc::downgrade(sink);
    weak
}
