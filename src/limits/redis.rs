//! Shared state on Redis: failure budgets ([`RedisLimiter`]) and notices
//! between nodes ([`RedisNotices`]).
//!
//! # Key layout
//!
//! Every key and channel starts with [`RedisSettings::key_prefix`] (`sesame:`
//! by default), so that several deployments can share one server:
//!
//! - `{prefix}limit:{key}`: the theoretical arrival time (GCRA) of one
//!   failure budget, a decimal integer of Unix seconds. `{key}` is the
//!   limiter key chosen by the core (client address, account).
//! - `{prefix}notices`: the pub/sub channel of [`crate::notices::Notice`]s,
//!   each message in the wire form of [`crate::notices::encode`].
//!
//! # Failure budgets
//!
//! The limiter is the GCRA of [`super::memory::MemoryLimiter`], with the same
//! numbers: a failure moves the stored arrival time to
//! `max(stored or now, now) + interval`, and a key must wait
//! `arrival - tolerance - now` seconds while that is positive.
//!
//! - **Atomicity.** Recording a failure is one Lua script (read, compute,
//!   write), so concurrent failures on several nodes never lose an update.
//!   Reading and clearing are single commands.
//! - **Expiry.** Every write sets an expiry of `arrival - now + 1` seconds:
//!   once the arrival time has passed, the budget has fully recovered and the
//!   key means nothing more, so it vanishes by itself. No key is ever left
//!   without a TTL.
//! - **Time.** The current time is the `now` handed in by the caller (its
//!   injected clock); Redis's own clock is only used to run expiries, which
//!   are relative.
//!
//! # Failing open for throttling, never for authentication
//!
//! Throttling must not turn a Redis outage into a login outage. Every command
//! is bounded by [`RedisSettings::timeout`]; when Redis errors or does not
//! answer in time, that call is answered by an in-process
//! [`MemoryLimiter`] instead (budgets per node
//! rather than shared), and failures are recorded there so that throttling
//! still applies on each node during the outage. Only throttling degrades:
//! passwords and sessions are checked by the store, never here. The limiter
//! logs one warning at most every ten seconds while Redis is away and one
//! notice when it answers again; [`RedisLimiter::is_degraded`] tells whether
//! the last call fell back. Clearing a key (an operator unlocking an account)
//! is the exception: it clears the fallback and reports the error, so the
//! operator knows the shared lock may still be there.
//!
//! # Reconnection
//!
//! Commands go through a [`ConnectionManager`], which reconnects by itself
//! after a dropped connection (one attempt per failing call, so calls during
//! an outage fall back at once rather than waiting for retries). A connection
//! that stops answering without closing (a half-open TCP connection) is
//! replaced by a fresh one after a command times out. Start-up is strict:
//! [`RedisLimiter::connect`] and [`RedisNotices::connect`] fail if the very
//! first connection does, so that a misconfigured Redis is reported at once.
//!
//! # Notices
//!
//! [`RedisNotices`] publishes with `PUBLISH` and subscribes on a dedicated
//! connection speaking RESP3 (Redis 6 or later), whose pushes carry the
//! messages. A lost subscription is reported to the sink
//! ([`NoticeEvent::Lost`]), retried with a backoff from 100 ms doubling to
//! 5 s, and reported again once resubscribed ([`NoticeEvent::Resumed`]). The
//! subscription is pinged every ten seconds so that a silently dead
//! connection is noticed too.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    RedisError, RedisResult, Script, Value,
};
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::memory::MemoryLimiter;
use super::{Charge, Charged, FailureLimiter, LimitsError, RedisSettings, Rule};
use crate::clock::UnixTime;
use crate::notices::{self, Notice, NoticeError, NoticeEvent, NoticeSink, Notices};

/// Records one failure: `KEYS[1]` the budget, `ARGV[1]` now, `ARGV[2]` the
/// interval (both whole seconds). Returns the new arrival time.
const RECORD_FAILURE: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local arrival = tonumber(redis.call('GET', KEYS[1])) or now
if arrival < now then arrival = now end
arrival = arrival + interval
local ttl = arrival - now + 1
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], string.format('%d', arrival), 'EX', string.format('%d', ttl))
return arrival
";

/// Charges one attempt if the budget allows it: `KEYS[1]` the budget,
/// `ARGV[1]` now, `ARGV[2]` the interval, `ARGV[3]` the tolerance (whole
/// seconds). Returns 0 if charged, otherwise the seconds to wait (nothing
/// charged).
const TRY_CHARGE: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local arrival = tonumber(redis.call('GET', KEYS[1])) or now
if arrival < now then arrival = now end
local wait = arrival - tolerance - now
if wait > 0 then return wait end
arrival = arrival + interval
redis.call('SET', KEYS[1], string.format('%d', arrival), 'EX', string.format('%d', arrival - now + 1))
return 0
";

/// Gives back one charged attempt: `KEYS[1]` the budget, `ARGV[1]` now,
/// `ARGV[2]` the interval. A budget back to full is deleted.
const REFUND: &str = r"
local now = tonumber(ARGV[1])
local stored = tonumber(redis.call('GET', KEYS[1]))
if not stored then return 0 end
local arrival = stored - tonumber(ARGV[2])
if arrival <= now then
    redis.call('DEL', KEYS[1])
else
    redis.call('SET', KEYS[1], string.format('%d', arrival), 'EX', string.format('%d', arrival - now + 1))
end
return 0
";

/// How long budget calls skip Redis after one of them failed (this node's
/// budgets answer at once, rather than every call of a login waiting out
/// `redis.timeout_ms` while Redis is away), and notices after a publish
/// failed. Then one call tries again.
const PAUSE: Duration = Duration::from_secs(1);
/// Shortest gap between two warnings about the same outage.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// First wait before resubscribing to notices.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to resubscribe to notices.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the notice subscriber checks that its sink still lives.
#[cfg(not(test))]
const SINK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Ten times faster in tests, so that a hung subscription shows within a second.
#[cfg(test)]
const SINK_CHECK_EVERY: Duration = Duration::from_millis(100);
/// The subscription is pinged every this many sink checks.
const PING_EVERY_CHECKS: u32 = 10;

/// Why Redis did not answer.
#[derive(Debug)]
enum Unavailable {
    TimedOut(Duration),
    Redis(RedisError),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut(limit) => write!(f, "no answer within {} ms", limit.as_millis()),
            Self::Redis(error) => write!(f, "{error}"),
        }
    }
}

/// Runs `work`, giving up after `limit`.
async fn within<T>(
    limit: Duration,
    work: impl Future<Output = RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Unavailable::Redis(error)),
        Err(_) => Err(Unavailable::TimedOut(limit)),
    }
}

/// A client for `url`, and where it points without any credentials (for logs
/// and errors).
fn open_client(url: &str) -> Result<(Client, String), String> {
    let client = Client::open(url).map_err(|error| format!("invalid Redis URL: {error}"))?;
    let target = client.get_connection_info().addr().to_string();
    Ok((client, target))
}

/// A command connection to Redis that reconnects by itself, bounds every
/// command by a timeout and replaces a connection that stopped answering.
struct Commands {
    client: Client,
    config: ConnectionManagerConfig,
    /// The connection in use and its generation (bumped on each replacement).
    current: RwLock<(u64, ConnectionManager)>,
    timeout: Duration,
    target: String,
}

impl Commands {
    /// Connects, failing if the first connection does (within the timeout).
    async fn connect(settings: &RedisSettings) -> Result<Self, String> {
        // rediss:// asks rustls for the process's provider.
        crate::tls::install_crypto_provider();
        let (client, target) = open_client(&settings.url)?;
        let timeout = settings.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One attempt per reconnection: a call during an outage falls
            // back at once, and the next call tries again.
            .set_number_of_retries(0);
        let manager = within(
            timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await
        .map_err(|error| format!("Redis unreachable at {target}: {error}"))?;
        Ok(Self {
            client,
            config,
            current: RwLock::new((0, manager)),
            timeout,
            target,
        })
    }

    /// Runs one command on the current connection, within the timeout.
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, connection) = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            (current.0, current.1.clone())
        };
        let result = within(self.timeout, command(connection)).await;
        let timed_out = match &result {
            Err(Unavailable::TimedOut(_)) => true,
            Err(Unavailable::Redis(error)) => error.is_timeout(),
            Ok(_) => false,
        };
        if timed_out {
            self.replace(generation);
        }
        result
    }

    /// Swaps in a fresh (lazy) connection, unless another call already did.
    fn replace(&self, generation: u64) {
        let fresh = match ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.config.clone(),
        ) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::debug!(redis = %self.target, %error, "cannot replace the Redis connection");
                return;
            }
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 == generation {
            *current = (generation.wrapping_add(1), fresh);
        }
    }
}

/// Until when calls skip Redis, after one failed ([`PAUSE`]).
#[derive(Debug, Default)]
struct Pause(Mutex<Option<Instant>>);

impl Pause {
    /// Whether calls should skip Redis for now.
    fn is_on(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// A call just failed: the next [`PAUSE`] skips Redis.
    fn start(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + PAUSE);
    }
}

/// Whether Redis answered the last call, and when the last warning was.
#[derive(Debug, Default)]
struct Health {
    degraded: AtomicBool,
    /// Every failed or timed-out command (`sesame_redis_errors_total`).
    errors: prometheus_client::metrics::counter::Counter,
    last_warning: Mutex<Option<Instant>>,
    /// Budget calls skip Redis for a moment after one failed.
    pause: Pause,
}

impl Health {
    fn answered(&self, target: &str) {
        if self.degraded.swap(false, Ordering::SeqCst) {
            tracing::info!(redis = %target, "Redis answers again; failure budgets are shared again");
        }
    }

    /// Whether budget calls should skip Redis for now.
    fn paused(&self) -> bool {
        self.pause.is_on()
    }

    fn failed(&self, target: &str, action: &str, error: &Unavailable) {
        self.errors.inc();
        self.degraded.store(true, Ordering::SeqCst);
        self.pause.start();
        let due = {
            let mut last = self
                .last_warning
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            tracing::warn!(
                redis = %target,
                %error,
                "Redis unavailable (could not {action}); throttling falls back to per-node budgets until it answers"
            );
        }
    }
}

/// Failure budgets shared by every node through Redis, falling back to
/// per-node budgets in memory while Redis is unavailable.
pub struct RedisLimiter {
    commands: Commands,
    prefix: String,
    script: Script,
    try_charge: Script,
    refund: Script,
    fallback: MemoryLimiter,
    health: Health,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("redis", &self.commands.target)
            .field("prefix", &self.prefix)
            .field("timeout", &self.commands.timeout)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Adds every failed command to `errors` (a metric).
    #[must_use]
    pub fn counting_errors_in(
        mut self,
        errors: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.health.errors = errors;
        self
    }

    /// Connects to the Redis of `settings`. Fails if that first connection
    /// fails or takes longer than `settings.timeout`: start-up must say that
    /// Redis is unreachable. Later outages fall back to memory instead.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, LimitsError> {
        let commands = Commands::connect(settings).await.map_err(LimitsError)?;
        Ok(Self {
            commands,
            prefix: settings.key_prefix.clone(),
            script: Script::new(RECORD_FAILURE),
            try_charge: Script::new(TRY_CHARGE),
            refund: Script::new(REFUND),
            fallback: MemoryLimiter::new(),
            health: Health::default(),
        })
    }

    /// Runs a budget script on `key` with `args`: its answer, or `None` (the
    /// outage noted) when Redis does not give one, for the caller to fall
    /// back to this node's budgets.
    async fn budget_script(
        &self,
        script: &Script,
        key: &str,
        args: &[i64],
        doing: &str,
    ) -> Option<i64> {
        if self.health.paused() {
            return None;
        }
        let redis_key = self.key(key);
        let answer = self
            .commands
            .run(|mut connection| async move {
                let mut invocation = script.key(&redis_key);
                for arg in args {
                    invocation.arg(*arg);
                }
                invocation.invoke_async::<i64>(&mut connection).await
            })
            .await;
        match answer {
            Ok(answer) => {
                self.health.answered(&self.commands.target);
                Some(answer)
            }
            Err(error) => {
                self.health.failed(&self.commands.target, doing, &error);
                None
            }
        }
    }

    /// Whether the last call fell back to the per-node budgets because Redis
    /// did not answer (for readiness reports).
    pub fn is_degraded(&self) -> bool {
        self.health.degraded.load(Ordering::SeqCst)
    }

    fn key(&self, key: &str) -> String {
        format!("{}limit:{key}", self.prefix)
    }
}

/// Seconds to wait for an arrival time, as in `memory.rs`.
fn wait_for(arrival: UnixTime, rule: &Rule, now: UnixTime) -> Option<u64> {
    let wait = arrival.saturating_sub(rule.tolerance()).saturating_sub(now);
    super::to_wait(wait)
}

#[async_trait]
impl FailureLimiter for RedisLimiter {
    async fn blocked_for(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Option<u64>, LimitsError> {
        // This node's budget counts too: failures it recorded while Redis
        // was away, or while Redis refused writes but still answered reads
        // (out of memory, a read-only replica), still throttle.
        let here = self.fallback.blocked_for(key, rule, now).await?;
        if self.health.paused() {
            return Ok(here);
        }
        let redis_key = self.key(key);
        let stored = self
            .commands
            .run(|mut connection| async move {
                ::redis::cmd("GET")
                    .arg(&redis_key)
                    .query_async::<Option<i64>>(&mut connection)
                    .await
            })
            .await;
        match stored {
            Ok(arrival) => {
                self.health.answered(&self.commands.target);
                let shared = arrival.and_then(|arrival| wait_for(arrival, rule, now));
                Ok(shared.max(here))
            }
            Err(error) => {
                self.health
                    .failed(&self.commands.target, "read a failure budget", &error);
                Ok(here)
            }
        }
    }

    async fn record_failure(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<(), LimitsError> {
        let args = [now, rule.interval];
        match self
            .budget_script(&self.script, key, &args, "record a failure")
            .await
        {
            Some(_) => Ok(()),
            None => self.fallback.record_failure(key, rule, now).await,
        }
    }

    async fn try_charge(
        &self,
        key: &str,
        rule: &Rule,
        now: UnixTime,
    ) -> Result<Charged, LimitsError> {
        // As in `blocked_for`: what this node counted on its own still counts.
        if let Some(wait) = self.fallback.blocked_for(key, rule, now).await? {
            return Ok(Charged::Wait(wait));
        }
        let args = [now, rule.interval, rule.tolerance()];
        let charged = self
            .budget_script(&self.try_charge, key, &args, "charge a failure budget")
            .await;
        match charged {
            Some(wait) => Ok(match super::to_wait(wait) {
                Some(wait) => Charged::Wait(wait),
                None => Charged::Yes(Charge {
                    at: now,
                    shared: true,
                }),
            }),
            None => self.fallback.try_charge(key, rule, now).await,
        }
    }

    /// Back to where it was charged. A shared charge that cannot be given
    /// back (Redis away) stays charged: a refund on this node's budget
    /// would give credit for an attempt that budget never counted.
    async fn refund(
        &self,
        key: &str,
        rule: &Rule,
        charge: Charge,
        now: UnixTime,
    ) -> Result<(), LimitsError> {
        if !charge.shared {
            return self.fallback.refund(key, rule, charge, now).await;
        }
        if !charge.refundable(rule, now) {
            return Ok(());
        }
        let args = [now, rule.interval];
        match self
            .budget_script(&self.refund, key, &args, "refund a failure budget")
            .await
        {
            Some(_) => Ok(()),
            None => Err(LimitsError(format!(
                "could not give back an attempt charged in Redis at {}",
                self.commands.target
            ))),
        }
    }

    fn forget_here(&self, key: &str) {
        self.fallback.forget_here(key);
    }

    async fn clear(&self, key: &str) -> Result<(), LimitsError> {
        self.fallback.clear(key).await?;
        let redis_key = self.key(key);
        let cleared = self
            .commands
            .run(|mut connection| async move {
                ::redis::cmd("DEL")
                    .arg(&redis_key)
                    .query_async::<i64>(&mut connection)
                    .await
            })
            .await;
        match cleared {
            Ok(_) => {
                self.health.answered(&self.commands.target);
                Ok(())
            }
            Err(error) => {
                self.health
                    .failed(&self.commands.target, "clear a failure budget", &error);
                Err(LimitsError(format!(
                    "could not clear the shared failure budget in Redis at {}: {error}",
                    self.commands.target
                )))
            }
        }
    }

    async fn ping(&self) -> Result<(), LimitsError> {
        self.commands
            .run(|mut connection| async move {
                ::redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            })
            .await
            .map(drop)
            .map_err(|error| LimitsError(error.to_string()))
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// Notices between nodes over Redis pub/sub, on the channel
/// `{prefix}notices`.
pub struct RedisNotices {
    commands: Commands,
    /// Publishing skips Redis for a moment after a publish failed: while
    /// Redis is away, a logout or a password change would otherwise wait
    /// out `redis.timeout_ms` for every notice it sends. A notice not sent
    /// is what a failed one is: the other nodes' subscriptions, on the same
    /// Redis, are lost too and they stop trusting their caches; otherwise
    /// their entries end within `sessions.cache_ttl`.
    pause: Pause,
    /// The same server, speaking RESP3 so that subscriptions arrive as pushes.
    subscriber: Client,
    channel: String,
}

impl fmt::Debug for RedisNotices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNotices")
            .field("redis", &self.commands.target)
            .field("channel", &self.channel)
            .field("timeout", &self.commands.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisNotices {
    /// Connects to the Redis of `settings` for publishing, and checks that it
    /// can subscribe (RESP3, Redis 6 or later). Fails if either first
    /// connection fails or takes longer than `settings.timeout`. Subscribers
    /// ([`Notices::subscribe`]) open connections of their own.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, NoticeError> {
        let commands = Commands::connect(settings).await.map_err(NoticeError)?;
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| NoticeError(format!("invalid Redis URL: {error}")))?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let subscriber = Client::open(info.set_redis_settings(resp3))
            .map_err(|error| NoticeError(format!("invalid Redis URL: {error}")))?;
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout));
        within(
            settings.timeout,
            subscriber.get_multiplexed_async_connection_with_config(&probe),
        )
        .await
        .map_err(|error| {
            NoticeError(format!(
                "Redis at {} cannot carry notices (RESP3 needs Redis 6 or later): {error}",
                commands.target
            ))
        })?;
        Ok(Self {
            commands,
            pause: Pause::default(),
            subscriber,
            channel: format!("{}notices", settings.key_prefix),
        })
    }
}

#[async_trait]
impl Notices for RedisNotices {
    async fn publish(&self, notice: &Notice) -> Result<(), NoticeError> {
        if self.pause.is_on() {
            return Err(NoticeError(format!(
                "not sent: Redis at {} did not answer a publish a moment ago",
                self.commands.target
            )));
        }
        let channel = &self.channel;
        let message = notices::encode(notice);
        self.commands
            .run(|mut connection| async move {
                ::redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<i64>(&mut connection)
                    .await
            })
            .await
            .map(|_| ())
            .map_err(|error| {
                self.pause.start();
                NoticeError(format!(
                    "could not publish to Redis at {}: {error}",
                    self.commands.target
                ))
            })
    }

    fn subscribe(&self, sink: Weak<dyn NoticeSink>) {
        let subscription = Subscription {
            client: self.subscriber.clone(),
            channel: self.channel.clone(),
            timeout: self.commands.timeout,
            target: self.commands.target.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(subscription.run(sink));
            }
            Err(_) => {
                tracing::error!("cannot subscribe to Redis notices outside a Tokio runtime");
                deliver(&sink, NoticeEvent::Lost);
            }
        }
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// Hands `event` to the sink; false once the sink is gone.
fn deliver(sink: &Weak<dyn NoticeSink>, event: NoticeEvent) -> bool {
    match sink.upgrade() {
        Some(sink) => {
            sink.deliver(event);
            true
        }
        None => false,
    }
}

/// How a subscription ended.
enum Ended {
    /// The sink is gone: stop for good.
    SinkGone,
    /// The connection failed: resubscribe.
    Lost(String),
}

/// The background task of one subscriber.
struct Subscription {
    client: Client,
    channel: String,
    timeout: Duration,
    target: String,
}

impl Subscription {
    /// Subscribes, forwards, and resubscribes with a backoff, until the sink
    /// is gone.
    async fn run(self, sink: Weak<dyn NoticeSink>) {
        let mut backoff = BACKOFF_MIN;
        // Whether `Lost` was delivered since the last `Resumed`. A subscription
        // only ends by delivering `Lost` (or stopping), so this is only false
        // before the first connection.
        let mut lost = false;
        loop {
            match self.open().await {
                Ok((connection, pushes)) => {
                    if !deliver(&sink, NoticeEvent::Resumed) {
                        return;
                    }
                    if lost {
                        tracing::info!(redis = %self.target, channel = %self.channel, "resubscribed to Redis notices");
                    }
                    backoff = BACKOFF_MIN;
                    match self.forward(&sink, connection, pushes).await {
                        Ended::SinkGone => return,
                        Ended::Lost(reason) => {
                            tracing::warn!(
                                redis = %self.target,
                                channel = %self.channel,
                                %reason,
                                "lost the Redis notice subscription; cached answers are not trusted until it resumes"
                            );
                            if !deliver(&sink, NoticeEvent::Lost) {
                                return;
                            }
                            lost = true;
                        }
                    }
                }
                Err(error) if !lost => {
                    tracing::warn!(
                        redis = %self.target,
                        channel = %self.channel,
                        %error,
                        "cannot subscribe to Redis notices; retrying"
                    );
                    if !deliver(&sink, NoticeEvent::Lost) {
                        return;
                    }
                    lost = true;
                }
                Err(error) => {
                    tracing::debug!(redis = %self.target, %error, "still cannot subscribe to Redis notices");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if sink.strong_count() == 0 {
                return;
            }
        }
    }

    /// A fresh connection subscribed to the channel, and its pushes.
    async fn open(
        &self,
    ) -> Result<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>), Unavailable> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(sender);
        let connection = within(self.timeout, async {
            let mut connection = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            connection.subscribe(&self.channel).await?;
            Ok(connection)
        })
        .await?;
        Ok((connection, pushes))
    }

    /// Forwards notices until the connection fails or the sink is gone.
    async fn forward(
        &self,
        sink: &Weak<dyn NoticeSink>,
        mut connection: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) -> Ended {
        let mut checks = tokio::time::interval(SINK_CHECK_EVERY);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks.tick().await;
        let mut count: u32 = 0;
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else {
                        return Ended::Lost("connection closed".into());
                    };
                    match push.kind {
                        PushKind::Message => {
                            let Some(notice) = self.notice(&push.data) else {
                                continue;
                            };
                            if !deliver(sink, NoticeEvent::Notice(notice)) {
                                return Ended::SinkGone;
                            }
                        }
                        PushKind::Disconnection => {
                            return Ended::Lost("connection closed".into());
                        }
                        _ => {}
                    }
                }
                _ = checks.tick() => {
                    if sink.strong_count() == 0 {
                        return Ended::SinkGone;
                    }
                    count = count.wrapping_add(1);
                    if count.is_multiple_of(PING_EVERY_CHECKS) {
                        let ping = within(
                            self.timeout,
                            ::redis::cmd("PING").query_async::<Value>(&mut connection),
                        )
                        .await;
                        if let Err(error) = ping {
                            return Ended::Lost(format!("ping failed: {error}"));
                        }
                    }
                }
            }
        }
    }

    /// The notice in a message push (`[channel, payload]`), if it is one.
    fn notice(&self, data: &[Value]) -> Option<Notice> {
        let [channel, payload] = data else {
            tracing::debug!(?data, "ignored a malformed Redis message");
            return None;
        };
        let channel: String = ::redis::from_redis_value_ref(channel).ok()?;
        if channel != self.channel {
            return None;
        }
        let text: String = match ::redis::from_redis_value_ref(payload) {
            Ok(text) => text,
            Err(error) => {
                tracing::debug!(%error, "ignored a notice that is not text");
                return None;
            }
        };
        let notice = notices::decode(&text);
        if notice.is_none() {
            tracing::debug!(message = %text, "ignored an undecodable notice");
        }
        notice
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limits::conformance::{self, RULE};
    use crate::testing::{Proxy, Recorder, via, weak};

    fn test_url() -> String {
        std::env::var("SESAME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    fn fresh_prefix() -> String {
        format!("sesame-test-{}:", uuid::Uuid::new_v4())
    }

    /// Settings on the test Redis with a fresh prefix; `None` (the test is
    /// skipped) when no Redis answers there, unless `CI` is set.
    async fn redis_or_skip() -> Option<RedisSettings> {
        let url = test_url();
        let answers = async {
            let client = Client::open(url.as_str()).ok()?;
            let mut connection = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()?
            .ok()?;
            ::redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .ok()
        }
        .await
        .is_some();
        if !answers {
            assert!(std::env::var_os("CI").is_none(), "no Redis at {url}");
            eprintln!("skipped: no Redis at {url}");
            return None;
        }
        Some(RedisSettings {
            url,
            key_prefix: fresh_prefix(),
            timeout: Duration::from_millis(500),
        })
    }

    /// A plain connection, to look behind the limiter's back.
    async fn plain(settings: &RedisSettings) -> MultiplexedConnection {
        Client::open(settings.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// `host:port` of the Redis behind `url`.
    fn target_of(url: &str) -> String {
        Client::open(url)
            .unwrap()
            .get_connection_info()
            .addr()
            .to_string()
    }

    #[tokio::test]
    async fn a_burst_is_allowed_then_one_failure_per_interval() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let limiter = RedisLimiter::connect(&settings).await.unwrap();
        conformance::burst_then_interval(&limiter).await;
        assert!(!limiter.is_degraded());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_are_charged_at_once_and_refunded() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let limiter = RedisLimiter::connect(&settings).await.unwrap();
        conformance::charges_and_refunds(&limiter).await;
        assert!(!limiter.is_degraded());
        let limiter = RedisLimiter::connect(&redis_or_skip().await.unwrap())
            .await
            .unwrap();
        conformance::concurrent_charges_stop_at_the_burst(std::sync::Arc::new(limiter)).await;
    }

    #[tokio::test]
    async fn the_budget_recovers_fully_with_time() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let limiter = RedisLimiter::connect(&settings).await.unwrap();
        conformance::budget_recovers_fully(&limiter).await;
        assert!(!limiter.is_degraded());
    }

    #[tokio::test]
    async fn keys_carry_the_prefix_and_expire_once_recovered() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let limiter = RedisLimiter::connect(&settings).await.unwrap();
        let mut redis = plain(&settings).await;
        for _ in 0..3 {
            limiter.record_failure("k", &RULE, 0).await.unwrap();
        }
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}*", settings.key_prefix))
            .query_async(&mut redis)
            .await
            .unwrap();
        let key = format!("{}limit:k", settings.key_prefix);
        assert_eq!(keys, std::slice::from_ref(&key));
        let arrival: i64 = ::redis::cmd("GET")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(arrival, 180);
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!((170..=181).contains(&ttl), "TTL {ttl}");

        // Long after, the key only has to outlive one interval.
        limiter.record_failure("k", &RULE, 10_000).await.unwrap();
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!((50..=61).contains(&ttl), "TTL {ttl}");

        // A fully recovered budget vanishes by itself.
        let quick = Rule {
            burst: 1,
            interval: 1,
        };
        limiter.record_failure("quick", &quick, 0).await.unwrap();
        let quick_key = format!("{}limit:quick", settings.key_prefix);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let exists: i64 = ::redis::cmd("EXISTS")
                .arg(&quick_key)
                .query_async(&mut redis)
                .await
                .unwrap();
            if exists == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{quick_key} did not expire");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn two_nodes_share_one_budget() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let one = RedisLimiter::connect(&settings).await.unwrap();
        let two = RedisLimiter::connect(&settings).await.unwrap();
        one.record_failure("k", &RULE, 0).await.unwrap();
        two.record_failure("k", &RULE, 0).await.unwrap();
        assert_eq!(one.blocked_for("k", &RULE, 0).await.unwrap(), None);
        one.record_failure("k", &RULE, 0).await.unwrap();
        assert_eq!(two.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        assert_eq!(one.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        two.clear("k").await.unwrap();
        assert_eq!(one.blocked_for("k", &RULE, 0).await.unwrap(), None);

        // Another deployment (prefix) on the same server is not affected.
        let elsewhere = RedisLimiter::connect(&RedisSettings {
            key_prefix: fresh_prefix(),
            ..settings.clone()
        })
        .await
        .unwrap();
        for _ in 0..3 {
            one.record_failure("k", &RULE, 0).await.unwrap();
        }
        assert_eq!(elsewhere.blocked_for("k", &RULE, 0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_at_start_up() {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            key_prefix: fresh_prefix(),
            timeout: Duration::from_millis(200),
        };
        let started = Instant::now();
        let error = RedisLimiter::connect(&settings).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            error
                .to_string()
                .contains("Redis unreachable at 127.0.0.1:1"),
            "{error}"
        );
        let error = RedisNotices::connect(&settings).await.unwrap_err();
        assert!(error.to_string().contains("Redis unreachable"), "{error}");

        let error = RedisLimiter::connect(&RedisSettings::for_url("http://example.com"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("invalid Redis URL"), "{error}");
    }

    #[tokio::test]
    async fn a_rediss_url_goes_through_tls() {
        // A plain Redis (or nothing) behind a rediss:// URL: were the URL
        // taken as plain, connecting would succeed; through TLS (rustls) the
        // handshake fails within the timeout, as an error and not a panic.
        let target = target_of(&test_url());
        let settings = RedisSettings {
            url: format!("rediss://{target}"),
            key_prefix: fresh_prefix(),
            timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        let error = RedisLimiter::connect(&settings).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{error}");
    }

    #[tokio::test]
    async fn an_outage_falls_back_to_per_node_budgets() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let target = target_of(&settings.url);
        let proxy = Proxy::start("127.0.0.1:0", &target).await;
        let port = proxy.port;
        let node = RedisLimiter::connect(&RedisSettings {
            url: via(&settings.url, port),
            timeout: Duration::from_millis(300),
            ..settings.clone()
        })
        .await
        .unwrap();
        let other = RedisLimiter::connect(&settings).await.unwrap();
        node.record_failure("k", &RULE, 0).await.unwrap();
        assert!(!node.is_degraded());

        proxy.stop().await;
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), None);
            node.record_failure("k", &RULE, 0).await.unwrap();
            assert!(started.elapsed() < Duration::from_millis(1500));
            assert!(node.is_degraded());
        }
        // The node throttles on its own budget...
        assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        // ...which the shared one never saw.
        assert_eq!(other.blocked_for("k", &RULE, 0).await.unwrap(), None);
        // An unlock that cannot reach Redis says so.
        assert!(node.clear("nobody").await.is_err());

        // Redis comes back: the node uses the shared budget again.
        let proxy = Proxy::start(&format!("127.0.0.1:{port}"), &target).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.is_degraded() {
            assert!(Instant::now() < deadline, "Redis never answered again");
            tokio::time::sleep(Duration::from_millis(50)).await;
            node.blocked_for("k", &RULE, 0).await.unwrap();
        }
        // What it counted on its own during the outage still throttles...
        assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        // ...and what the other nodes count reaches it again.
        assert_eq!(node.blocked_for("j", &RULE, 0).await.unwrap(), None);
        for _ in 0..3 {
            other.record_failure("j", &RULE, 0).await.unwrap();
        }
        assert_eq!(node.blocked_for("j", &RULE, 0).await.unwrap(), Some(60));
        assert!(!node.is_degraded());
        proxy.stop().await;
    }

    #[tokio::test]
    async fn a_hung_redis_costs_at_most_the_timeout() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let timeout = Duration::from_millis(300);
        let proxy = Proxy::start("127.0.0.1:0", &target_of(&settings.url)).await;
        let node = RedisLimiter::connect(&RedisSettings {
            url: via(&settings.url, proxy.port),
            timeout,
            ..settings.clone()
        })
        .await
        .unwrap();
        node.record_failure("k", &RULE, 0).await.unwrap();
        assert!(!node.is_degraded());

        proxy.freeze();
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), None);
            node.record_failure("k", &RULE, 0).await.unwrap();
            assert!(started.elapsed() < 2 * timeout + Duration::from_millis(500));
            assert!(node.is_degraded());
        }
        assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        // Once one call found Redis away, the next ones do not wait for it
        // again at once (a login makes three).
        let started = Instant::now();
        for _ in 0..20 {
            node.blocked_for("k", &RULE, 0).await.unwrap();
            node.try_charge("other", &RULE, 0).await.unwrap();
        }
        assert!(started.elapsed() < timeout, "{:?}", started.elapsed());

        // The network heals, but the old connection stays silent for ever (a
        // half-open connection): the limiter must drop it for a fresh one.
        proxy.thaw();
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.is_degraded() {
            assert!(Instant::now() < deadline, "Redis never answered again");
            tokio::time::sleep(Duration::from_millis(50)).await;
            node.blocked_for("k", &RULE, 0).await.unwrap();
        }
        // The shared budget holds the one failure recorded before the
        // freeze, this node's the three after it: the stricter answers.
        assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), Some(60));
        node.fallback.clear("k").await.unwrap();
        assert_eq!(node.blocked_for("k", &RULE, 0).await.unwrap(), None);
        proxy.stop().await;
    }

    fn count(events: &[NoticeEvent], wanted: &NoticeEvent) -> usize {
        events.iter().filter(|event| *event == wanted).count()
    }

    #[tokio::test]
    async fn notices_reach_the_other_nodes_of_the_same_prefix() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let listener = RedisNotices::connect(&settings).await.unwrap();
        let publisher = RedisNotices::connect(&settings).await.unwrap();
        let stranger = RedisNotices::connect(&RedisSettings {
            key_prefix: fresh_prefix(),
            ..settings.clone()
        })
        .await
        .unwrap();
        assert!(listener.is_shared());

        let sink = Arc::new(Recorder::default());
        listener.subscribe(weak(&sink));
        sink.wait_for(Duration::from_secs(2), |events| !events.is_empty())
            .await;
        assert_eq!(sink.events(), [NoticeEvent::Resumed]);

        stranger.publish(&Notice::AccountChanged(99)).await.unwrap();
        let mut redis = plain(&settings).await;
        ::redis::cmd("PUBLISH")
            .arg(format!("{}notices", settings.key_prefix))
            .arg("not a notice")
            .exec_async(&mut redis)
            .await
            .unwrap();
        let ended = Notice::SessionsEnded(vec!["s1".into(), "s2".into()]);
        publisher.publish(&ended).await.unwrap();
        let wanted = NoticeEvent::Notice(ended);
        sink.wait_for(Duration::from_secs(2), |events| events.contains(&wanted))
            .await;
        // Redis delivers in order: the stranger's notice and the garbage came
        // first, and were not forwarded.
        assert_eq!(sink.events(), [NoticeEvent::Resumed, wanted]);
    }

    #[tokio::test]
    async fn a_lost_subscription_says_so_and_resumes() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let target = target_of(&settings.url);
        let proxy = Proxy::start("127.0.0.1:0", &target).await;
        let port = proxy.port;
        let listener = RedisNotices::connect(&RedisSettings {
            url: via(&settings.url, port),
            timeout: Duration::from_millis(300),
            ..settings.clone()
        })
        .await
        .unwrap();
        let publisher = RedisNotices::connect(&settings).await.unwrap();

        let early = Arc::new(Recorder::default());
        listener.subscribe(weak(&early));
        early
            .wait_for(Duration::from_secs(2), |events| !events.is_empty())
            .await;
        assert_eq!(early.events(), [NoticeEvent::Resumed]);

        proxy.stop().await;
        early
            .wait_for(Duration::from_secs(2), |events| events.len() >= 2)
            .await;
        assert_eq!(early.events(), [NoticeEvent::Resumed, NoticeEvent::Lost]);

        // A subscriber that cannot connect at all says so first.
        let late = Arc::new(Recorder::default());
        listener.subscribe(weak(&late));
        late.wait_for(Duration::from_secs(2), |events| !events.is_empty())
            .await;
        assert_eq!(late.events(), [NoticeEvent::Lost]);

        let proxy = Proxy::start(&format!("127.0.0.1:{port}"), &target).await;
        for sink in [&early, &late] {
            sink.wait_for(Duration::from_secs(8), |events| {
                events.last() == Some(&NoticeEvent::Resumed)
            })
            .await;
        }
        publisher.publish(&Notice::AccountChanged(7)).await.unwrap();
        let wanted = NoticeEvent::Notice(Notice::AccountChanged(7));
        for sink in [&early, &late] {
            sink.wait_for(Duration::from_secs(2), |events| events.contains(&wanted))
                .await;
            let events = sink.events();
            assert_eq!(count(&events, &NoticeEvent::Lost), 1, "{events:?}");
        }
        assert_eq!(
            early.events(),
            [
                NoticeEvent::Resumed,
                NoticeEvent::Lost,
                NoticeEvent::Resumed,
                wanted.clone()
            ]
        );
        assert_eq!(
            late.events(),
            [NoticeEvent::Lost, NoticeEvent::Resumed, wanted]
        );
        proxy.stop().await;
    }

    #[tokio::test]
    async fn a_hung_subscription_is_noticed_and_replaced() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let proxy = Proxy::start("127.0.0.1:0", &target_of(&settings.url)).await;
        let listener = RedisNotices::connect(&RedisSettings {
            url: via(&settings.url, proxy.port),
            timeout: Duration::from_millis(300),
            ..settings.clone()
        })
        .await
        .unwrap();
        let publisher = RedisNotices::connect(&settings).await.unwrap();
        let sink = Arc::new(Recorder::default());
        listener.subscribe(weak(&sink));
        sink.wait_for(Duration::from_secs(2), |events| !events.is_empty())
            .await;

        // Silence without a closed connection: only the ping can tell.
        proxy.freeze();
        sink.wait_for(Duration::from_secs(4), |events| events.len() >= 2)
            .await;
        assert_eq!(sink.events(), [NoticeEvent::Resumed, NoticeEvent::Lost]);

        proxy.thaw();
        sink.wait_for(Duration::from_secs(8), |events| events.len() >= 3)
            .await;
        publisher.publish(&Notice::AccountChanged(3)).await.unwrap();
        let wanted = NoticeEvent::Notice(Notice::AccountChanged(3));
        sink.wait_for(Duration::from_secs(2), |events| events.contains(&wanted))
            .await;
        assert_eq!(
            sink.events(),
            [
                NoticeEvent::Resumed,
                NoticeEvent::Lost,
                NoticeEvent::Resumed,
                wanted
            ]
        );
        proxy.stop().await;
    }

    #[tokio::test]
    async fn the_subscriber_stops_when_the_sink_is_gone() {
        let Some(settings) = redis_or_skip().await else {
            return;
        };
        let notices = RedisNotices::connect(&settings).await.unwrap();
        let channel = format!("{}notices", settings.key_prefix);
        let mut redis = plain(&settings).await;
        let subscribers = |mut redis: MultiplexedConnection| {
            let channel = channel.clone();
            async move {
                let (_, count): (String, i64) = ::redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                count
            }
        };

        let sink = Arc::new(Recorder::default());
        notices.subscribe(weak(&sink));
        sink.wait_for(Duration::from_secs(2), |events| !events.is_empty())
            .await;
        assert_eq!(subscribers(redis.clone()).await, 1);

        drop(sink);
        let deadline = Instant::now() + Duration::from_secs(5);
        while subscribers(redis.clone()).await != 0 {
            assert!(
                Instant::now() < deadline,
                "the subscriber outlived its sink"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ::redis::cmd("PING").exec_async(&mut redis).await.unwrap();
    }
}
