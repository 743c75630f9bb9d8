//! One accepted connection, served until it ends, the server stops, or it
//! has sat idle too long.
//!
//! hyper closes an idle HTTP/1 connection itself: its header-read timer
//! runs from the moment the connection waits for its next request head. An
//! HTTP/2 connection has no such timer: once past its first request it may
//! stay open for as long as the client answers pings, each one holding an
//! `http.max_connections` permit. [`Activity`] counts its open requests and
//! notes when one last started or finished, and [`serve`] closes it (a
//! GOAWAY: what has started finishes) after the same `http.header_timeout`
//! with none open.
//!
//! Neither protocol's timers run while a response waits to be written: a
//! client that stops reading (and pipelines a request, so that no header
//! timer runs) would hold its connection for ever. So every connection's
//! socket is a [`Socket`], whose writes fail after `http.request_timeout`
//! without progress.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;

/// An accepted connection's socket: a write that makes no progress for
/// its timeout fails, and the connection with it.
pub type Socket = Pin<Box<TimeoutStream<TcpStream>>>;

/// Wraps an accepted socket (see [`Socket`]).
pub fn socket(stream: TcpStream, write_timeout: Duration) -> Socket {
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(write_timeout));
    Box::pin(stream)
}

/// What a connection's requests are doing: how many are open, and when the
/// last one started.
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted; `last_start` counts from here.
    accepted: Instant,
    /// Requests started and not yet answered.
    open: AtomicUsize,
    /// Milliseconds after `accepted` at which a request last started or
    /// finished, plus one; 0 before the first.
    last_seen: AtomicU64,
}

/// Marks one request open while it lives.
#[derive(Debug)]
pub struct RequestMark(Arc<Activity>);

impl Drop for RequestMark {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a connection stands against its idle timeout.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    /// Not idle long enough yet: look again then.
    LookAgainAt(Instant),
    /// Served requests and has had none open for the whole timeout.
    Idle,
    /// Never sent a request within the timeout (an HTTP/2 client that
    /// never sent its preface is among these: hyper would wait for ever).
    Silent,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            open: AtomicUsize::new(0),
            last_seen: AtomicU64::new(0),
        })
    }

    /// Marks a request started; it counts as open until the mark is dropped.
    pub fn request(self: &Arc<Self>) -> RequestMark {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestMark(Arc::clone(self))
    }

    fn touch(&self) {
        let since = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_seen.fetch_max(since + 1, Ordering::AcqRel);
    }

    fn standing(&self, timeout: Duration, now: Instant) -> Standing {
        if self.open.load(Ordering::Acquire) > 0 {
            return Standing::LookAgainAt(now + timeout);
        }
        let (since, silent) = match self.last_seen.load(Ordering::Acquire) {
            0 => (self.accepted, true),
            mark => (self.accepted + Duration::from_millis(mark - 1), false),
        };
        match since.checked_add(timeout) {
            Some(due) if due > now => Standing::LookAgainAt(due),
            _ if silent => Standing::Silent,
            _ => Standing::Idle,
        }
    }
}

/// Serves `connection` to its end. When `stop` turns true (or its sender is
/// gone) the connection is asked to finish what it has started and close;
/// it is never cut off here (the stop bounds its own wait). With `idle`,
/// it is asked the same after `timeout` with no request open, and dropped
/// once it has had no request open for `timeout` more; one that never sent
/// a request is dropped after `timeout`.
pub async fn serve<C: GracefulConnection>(
    connection: C,
    mut stop: watch::Receiver<bool>,
    idle: Option<(Arc<Activity>, Duration)>,
) -> Result<(), C::Error> {
    tokio::pin!(connection);
    let mut closing = false;
    let far = || Instant::now() + Duration::from_secs(86_400);
    let mut look_at = match &idle {
        Some((_, timeout)) => Instant::now() + *timeout,
        None => far(),
    };
    loop {
        tokio::select! {
            served = connection.as_mut() => return served,
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(look_at) => {
                let Some((activity, timeout)) = &idle else {
                    look_at = far();
                    continue;
                };
                let standing = activity.standing(*timeout, Instant::now());
                if closing {
                    // Asked to close (a stop, or idleness): a request still
                    // open finishes first (each ends within
                    // `http.request_timeout`); then it goes, answered or not.
                    if let Standing::LookAgainAt(at) = standing {
                        look_at = at;
                        continue;
                    }
                    tracing::debug!("an idle connection did not close in time; dropped");
                    return Ok(());
                }
                match standing {
                    Standing::LookAgainAt(at) => look_at = at,
                    Standing::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        look_at = Instant::now() + *timeout;
                    }
                    Standing::Silent => {
                        tracing::debug!("a connection sent no request in time; closed");
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_open_for_the_whole_timeout() {
        let timeout = Duration::from_secs(10);
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(
            activity.standing(timeout, start),
            Standing::LookAgainAt(start + timeout)
        );
        assert_eq!(
            activity.standing(timeout, start + timeout),
            Standing::Silent
        );

        tokio::time::advance(Duration::from_secs(3)).await;
        let mark = activity.request();
        let later = Instant::now() + Duration::from_secs(30);
        assert_eq!(
            activity.standing(timeout, later),
            Standing::LookAgainAt(later + timeout),
            "a request open for long is not idleness"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(mark);
        // Idleness counts from when the last request finished.
        let now = Instant::now();
        assert_eq!(
            activity.standing(timeout, now),
            Standing::LookAgainAt(now + timeout)
        );
        assert_eq!(activity.standing(timeout, now + timeout), Standing::Idle);
    }
}
