//! Password hashing on a bounded pool.
//!
//! Argon2id is deliberately slow and memory-hungry (19 MiB a hash by default),
//! so it never runs on the async workers: a fixed set of threads, one per core
//! by default, takes jobs handed to the thread that went idle last, and queued
//! up to a bound while all are busy ([`handoff`]). Each thread keeps its own
//! block buffer and reuses it for every hash instead of allocating 19 MiB per
//! call, and gives it back when idle. When the queue is full a request is
//! refused at once with [`Error::Busy`] rather than piling up memory and
//! latency.
//!
//! Verification of an unknown account runs against a dummy verifier with the
//! same parameters, so it costs the same time as a real one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use self::handoff::{Handoff, Refused};
use super::domain::Password;
use super::error::{Error, Result};
use crate::metrics::HashingMetrics;

/// Largest memory cost accepted from a stored hash (1 GiB), so a corrupt or
/// hostile row cannot make a worker allocate without bound.
const MAX_STORED_MEMORY_KIB: u32 = 1024 * 1024;
/// Largest work accepted from a stored hash, as memory × passes in KiB: 1
/// GiB over 8 passes (twice libsodium's "sensitive" level; seconds on one
/// thread). A verification cannot be interrupted once it has begun, so an
/// imported hash with a pass count near `u32::MAX` would hold a hashing
/// thread for good. Sesame's own settings are held to it too.
pub(crate) const MAX_STORED_WORK_KIB: u64 = 8 * 1024 * 1024;
/// Most lanes accepted from a stored hash (RFC 9106 recommends 4; the
/// kernel computes lanes one after another).
const MAX_STORED_LANES: u32 = 64;
const OUTPUT_LEN: usize = 32;
/// The shortest salt Argon2 takes (RFC 9106 §3.1).
pub(crate) const MIN_SALT_BYTES: usize = 8;

/// Argon2id parameters and pool sizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingSettings {
    /// Memory cost in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// Iterations (OWASP: 2).
    pub iterations: u32,
    /// Lanes (OWASP: 1).
    pub parallelism: u32,
    /// Hashing threads.
    pub threads: usize,
    /// Jobs that may wait for a thread before new ones are refused.
    pub queue: usize,
}

impl Default for HashingSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        Self {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
            threads: cores,
            queue: 64 * cores,
        }
    }
}

impl HashingSettings {
    /// The Argon2 parameters these settings describe.
    pub fn params(&self) -> Result<Params> {
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))
    }
}

/// The outcome of checking a password against a stored verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Whether the password matched.
    pub matches: bool,
    /// Whether the verifier uses other parameters than the configured ones
    /// and should be replaced now that the password is known.
    pub needs_rehash: bool,
}

enum Job {
    Hash {
        secret: SecretString,
        reply: oneshot::Sender<Result<String>>,
    },
    Verify {
        secret: SecretString,
        /// Another form of the same secret, checked too, whatever the
        /// first check found (see [`PasswordHasher::verify`]).
        typed: Option<SecretString>,
        verifier: String,
        reply: oneshot::Sender<Result<Verification>>,
    },
    /// Panics on the thread that runs it: the pool's guard under test.
    #[cfg(test)]
    Panic {
        reply: oneshot::Sender<Result<String>>,
    },
}

impl Job {
    /// Whether whoever asked has gone (its request ran out of time, its
    /// client hung up): its hash would be thrown away.
    fn abandoned(&self) -> bool {
        match self {
            Job::Hash { reply, .. } => reply.is_closed(),
            Job::Verify { reply, .. } => reply.is_closed(),
            #[cfg(test)]
            Job::Panic { reply } => reply.is_closed(),
        }
    }
}

mod handoff;

/// The pool's jobs, as its handles hold them: the last one dropped stops
/// the threads.
struct Jobs(Arc<Handoff<Job>>);

impl Drop for Jobs {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A handle to the hashing pool; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: Arc<Jobs>,
    metrics: HashingMetrics,
    dummy_verifier: Arc<str>,
    params: Params,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHasher")
    }
}

impl PasswordHasher {
    /// Starts the pool's threads. They stop when the last handle is dropped.
    pub fn start(settings: &HashingSettings, metrics: HashingMetrics) -> Result<Self> {
        let params = settings.params()?;
        let threads = settings.threads.max(1);
        let jobs = Arc::new(Jobs(Arc::new(Handoff::new(threads, settings.queue.max(1)))));
        for index in 0..threads {
            let handoff = Arc::clone(&jobs.0);
            let params = params.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("sesame-hash-{index}"))
                .spawn(move || worker(index, &handoff, &params, &metrics))
                .map_err(|e| Error::Internal(format!("cannot start hashing thread: {e}")))?;
        }
        let dummy_verifier = dummy_verifier(&params)?.into();
        Ok(Self {
            jobs,
            metrics,
            dummy_verifier,
            params,
        })
    }

    /// Hashes a password into a PHC string with the configured parameters.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash {
            secret: SecretString::from(password),
            reply,
        })?;
        answer.await.map_err(|_| pool_gone())?
    }

    /// Checks a password against a stored verifier: in NFC, and, when it
    /// was typed in another form, as typed too (a hash imported from
    /// another system was made of the bytes typed; a match of that form
    /// only asks for a rehash, which is made of the NFC form). Every check
    /// of a password typed so costs two, whatever the verifier (an unknown
    /// account's too) and whatever matched, so its time tells nothing.
    pub async fn verify(&self, password: &Password, verifier: &str) -> Result<Verification> {
        self.verify_forms(password.expose(), password.expose_as_typed(), verifier)
            .await
    }

    /// Checks a secret string (such as an MD5 hex digest) against a verifier.
    pub async fn verify_str(&self, secret: &str, verifier: &str) -> Result<Verification> {
        self.verify_forms(secret, None, verifier).await
    }

    async fn verify_forms(
        &self,
        secret: &str,
        typed: Option<&str>,
        verifier: &str,
    ) -> Result<Verification> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            secret: SecretString::from(secret),
            typed: typed.map(SecretString::from),
            verifier: verifier.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| pool_gone())?
    }

    /// Spends one verification's worth of time and never matches; used when
    /// the account does not exist, so that case cannot be told apart by timing.
    pub async fn verify_dummy(&self, secret: &str) -> Result<()> {
        let verifier = Arc::clone(&self.dummy_verifier);
        self.verify_str(secret, &verifier).await.map(|_| ())
    }

    /// [`Self::verify_dummy`] for a password: as long as
    /// [`Self::verify`] takes for it.
    pub async fn verify_dummy_password(&self, password: &Password) -> Result<()> {
        let verifier = Arc::clone(&self.dummy_verifier);
        self.verify(password, &verifier).await.map(|_| ())
    }

    /// Whether a stored verifier already uses the configured algorithm and
    /// parameters; read from the PHC string, without hashing.
    pub fn is_current(&self, verifier: &str) -> bool {
        let Ok(phc) = PasswordHash::new(verifier) else {
            return false;
        };
        let Ok(stored) = Params::try_from(&phc) else {
            return false;
        };
        Algorithm::try_from(phc.algorithm) == Ok(Algorithm::Argon2id)
            && phc.version == Some(Version::V0x13.into())
            && phc.hash.is_some_and(|h| h.len() == OUTPUT_LEN)
            && same_cost(&stored, &self.params)
    }

    fn submit(&self, job: Job) -> Result<()> {
        // Counted before it is offered: a thread may take it (and count it
        // down) before `offer` returns.
        self.metrics.queue.inc();
        self.jobs.0.offer(job).map_err(|refused| {
            self.metrics.queue.dec();
            match refused {
                Refused::Full => {
                    self.metrics.rejections.inc();
                    Error::Busy {
                        retry_after_secs: 1,
                    }
                }
                Refused::Closed => pool_gone(),
            }
        })
    }
}

fn pool_gone() -> Error {
    Error::Internal("password hashing pool stopped".into())
}

/// Memory that verifications needing more than the configured parameters
/// (hashes imported from other systems) may take at once, across the pool:
/// 1 GiB, one of the largest accepted or several smaller ones (sixteen of
/// PHP's 64 MiB). Beyond it one is answered busy (503, retry): waiting
/// would park a hashing thread, and a few such sign-ins at once would hold
/// up every other.
const OVERSIZED_BUDGET_KIB: u64 = MAX_STORED_MEMORY_KIB as u64;

/// What such verifications hold of [`OVERSIZED_BUDGET_KIB`].
static OVERSIZED: Budget = Budget {
    used: Mutex::new(0),
};

struct Budget {
    used: Mutex<u64>,
}

impl Budget {
    /// Takes `kib` if the budget has room for it (always when nothing else
    /// holds any: no single job exceeds it).
    fn try_take(&'static self, kib: u64) -> Option<BudgetHeld> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if *used > 0 && *used + kib > OVERSIZED_BUDGET_KIB {
            return None;
        }
        *used += kib;
        Some(BudgetHeld { budget: self, kib })
    }
}

/// Gives its share back when dropped.
struct BudgetHeld {
    budget: &'static Budget,
    kib: u64,
}

impl Drop for BudgetHeld {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(self.kib);
    }
}

/// A thread idle this long gives its block buffer back to the system.
#[cfg(not(test))]
const RELEASE_AFTER_IDLE: Duration = Duration::from_secs(30);
#[cfg(test)]
const RELEASE_AFTER_IDLE: Duration = Duration::from_millis(300);

fn worker(index: usize, jobs: &Handoff<Job>, params: &Params, metrics: &HashingMetrics) {
    // Allocated at the first job, kept while busy, released when idle: an
    // idle server holds no hashing memory, a busy one never reallocates.
    // Each thread times its own idleness.
    let mut blocks = Kernel::default();
    let holds = |blocks: &Kernel, held: bool| {
        let holds = blocks.holds_memory();
        match (held, holds) {
            (false, true) => metrics.threads_with_memory.inc(),
            (true, false) => metrics.threads_with_memory.dec(),
            _ => 0,
        };
        holds
    };
    let mut held = false;
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => {
                let idle = || {
                    blocks.release();
                    held = holds(&blocks, held);
                };
                match jobs.wait(index, RELEASE_AFTER_IDLE, idle) {
                    Some(job) => job,
                    None => {
                        holds(&Kernel::default(), held);
                        return;
                    }
                }
            }
        };
        metrics.queue.dec();
        // Skipped: under overload the queue then drains at once for those
        // still waiting instead of hashing for requests already answered.
        if job.abandoned() {
            next = jobs.finish(index);
            continue;
        }
        // A panic (none is known) fails its one request, whose reply is
        // dropped with it, and leaves the thread serving: otherwise each
        // would shrink the pool for good, down to every login failing.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(job, params, metrics, &mut blocks)
        }));
        // Idle (or on to a queued job) before answering: a caller whose
        // next job follows the answer finds this thread first in line.
        next = jobs.finish(index);
        match done {
            Ok(answer) => answer.send(),
            Err(_) => {
                tracing::error!("a password hashing job panicked; its request failed");
                blocks = Kernel::default();
            }
        }
        held = holds(&blocks, held);
    }
}

/// A job's result, with whom to send it to.
enum Answer {
    Hashed(oneshot::Sender<Result<String>>, Result<String>),
    Verified(oneshot::Sender<Result<Verification>>, Result<Verification>),
}

impl Answer {
    fn send(self) {
        // A caller gone meanwhile has nobody to tell.
        match self {
            Answer::Hashed(reply, hashed) => {
                let _ = reply.send(hashed);
            }
            Answer::Verified(reply, verified) => {
                let _ = reply.send(verified);
            }
        }
    }
}

/// Hashes or verifies; the answer, not yet sent.
fn run_job(job: Job, params: &Params, metrics: &HashingMetrics, blocks: &mut Kernel) -> Answer {
    let started = std::time::Instant::now();
    match job {
        Job::Hash { secret, reply } => {
            let hashed = hash_with(params, secret.expose_secret().as_bytes(), blocks);
            metrics.duration.observe(started.elapsed().as_secs_f64());
            Answer::Hashed(reply, hashed)
        }
        Job::Verify {
            secret,
            typed,
            verifier,
            reply,
        } => {
            let mut verified =
                verify_with(params, secret.expose_secret().as_bytes(), &verifier, blocks);
            // Both forms, always, whether the first matched or not: a
            // right guess must take as long as a wrong one (a locked or
            // disabled account refuses both alike).
            if let Some(typed) = typed
                && let Ok(first) = verified
            {
                verified = verify_with(params, typed.expose_secret().as_bytes(), &verifier, blocks)
                    .map(|second| {
                        if first.matches || !second.matches {
                            first
                        } else {
                            // Matched as typed only: made again of the NFC form.
                            Verification {
                                matches: true,
                                needs_rehash: true,
                            }
                        }
                    });
            }
            metrics.duration.observe(started.elapsed().as_secs_f64());
            Answer::Verified(reply, verified)
        }
        #[cfg(test)]
        Job::Panic { reply } => {
            let _kept_until_the_unwinding = reply;
            panic!("a job made to panic");
        }
    }
}

fn argon2_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("argon2: {e}"))
}

/// The Argon2 computation of one hashing thread: `argon2-rust`, whose
/// compression function is chosen at run time (AVX-512, AVX2, SSE2, NEON or
/// portable code), with the thread's memory kept between hashes. PHC strings
/// are read and written with RustCrypto's `argon2`, against which the kernel
/// is tested bit for bit (see the tests below).
#[derive(Default)]
pub struct Kernel {
    hasher: Option<argon2_rust::Hasher>,
}

impl Kernel {
    /// The instruction set the kernel uses on this CPU (`avx512`, `avx2`,
    /// `sse2`, `neon` or `scalar`).
    pub fn instruction_set() -> &'static str {
        argon2_rust::detected_backend().name()
    }

    /// Computes the raw Argon2 tag of `secret` and `salt` into `out` (whose
    /// length is the tag length), with the given parameters.
    pub fn compute(
        &mut self,
        algorithm: Algorithm,
        version: Version,
        params: &Params,
        secret: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let argon2 = kernel_config(algorithm, version, params, out.len())?;
        let hasher = match &mut self.hasher {
            Some(hasher) => {
                hasher.set_argon2(argon2);
                hasher
            }
            None => self.hasher.insert(argon2.hasher()),
        };
        hasher.hash_into(secret, salt, out).map_err(argon2_error)
    }

    /// Whether the thread's memory is allocated.
    fn holds_memory(&self) -> bool {
        self.hasher.is_some()
    }

    /// Gives the thread's memory back, wiped; the next hash allocates again.
    pub fn release(&mut self) {
        if let Some(hasher) = &mut self.hasher {
            hasher.clear();
        }
        self.hasher = None;
    }
}

/// The kernel's configuration for RustCrypto's parameters.
fn kernel_config(
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    tag_len: usize,
) -> Result<argon2_rust::Argon2> {
    let algorithm = match algorithm {
        Algorithm::Argon2d => argon2_rust::Algorithm::Argon2d,
        Algorithm::Argon2i => argon2_rust::Algorithm::Argon2i,
        Algorithm::Argon2id => argon2_rust::Algorithm::Argon2id,
    };
    let version = match version {
        Version::V0x10 => argon2_rust::Version::V0x10,
        Version::V0x13 => argon2_rust::Version::V0x13,
    };
    let tag_len = u32::try_from(tag_len).map_err(argon2_error)?;
    let params = argon2_rust::Params::builder()
        .memory(argon2_rust::params::Memory::kib(params.m_cost().into()))
        .passes(params.t_cost())
        .lanes(params.p_cost())
        // One thread per hash: the pool's threads are the parallelism.
        .threads(1)
        .tag_len(argon2_rust::params::TagLen::bytes(tag_len.into()))
        .build()
        .map_err(argon2_error)?;
    Ok(argon2_rust::Argon2::new(algorithm, version, params))
}

fn hash_with(params: &Params, secret: &[u8], kernel: &mut Kernel) -> Result<String> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    kernel.compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params,
        secret,
        &salt,
        &mut out,
    )?;
    phc_string(Algorithm::Argon2id, params, &salt, &out)
}

fn phc_string(algorithm: Algorithm, params: &Params, salt: &[u8], out: &[u8]) -> Result<String> {
    let salt = SaltString::encode_b64(salt).map_err(argon2_error)?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(argon2_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(out).map_err(argon2_error)?),
    };
    Ok(phc.to_string())
}

fn verify_with(
    params: &Params,
    secret: &[u8],
    verifier: &str,
    kernel: &mut Kernel,
) -> Result<Verification> {
    let Some(verifier) = super::foreign::native_argon2(verifier) else {
        // A hash imported from another system: checked here too, on this
        // bounded pool, and replaced with Argon2id after a match.
        let matches = super::foreign::verify(secret, verifier).unwrap_or_else(|reason| {
            tracing::warn!(%reason, "a stored imported password hash is unusable");
            false
        });
        // Many foreign formats (a salted MD5, an expired or unusable hash)
        // take microseconds where an unknown account costs one Argon2id:
        // one Argon2id more, so that a sign-in against such an account
        // takes no less time than one against an account that does not
        // exist.
        spend_one_hash(params, secret, kernel)?;
        return Ok(Verification {
            matches,
            needs_rehash: true,
        });
    };
    let (algorithm, version, stored, salt, expected) = match parse_native(verifier) {
        Ok(parsed) => parsed,
        Err(reason) => {
            // Malformed, or made under settings beyond today's bounds (or
            // written by hand): it matches nothing, after the time an
            // unknown account takes.
            tracing::warn!(%reason, "a stored password hash is one Sesame does not verify");
            spend_one_hash(params, secret, kernel)?;
            return Ok(Verification {
                matches: false,
                needs_rehash: true,
            });
        }
    };
    let mut out = vec![0u8; expected.len()];
    if stored.m_cost() > params.m_cost() {
        // More memory than Sesame's own hashes take (a hash imported from
        // another system, up to 1 GiB): within a budget shared by the pool,
        // in memory given back at once, so that sign-ins against such
        // accounts cannot make every thread keep that much.
        let Some(_held) = OVERSIZED.try_take(u64::from(stored.m_cost())) else {
            return Err(Error::Busy {
                retry_after_secs: 1,
            });
        };
        let mut once = Kernel::default();
        let computed = once.compute(algorithm, version, &stored, secret, &salt, &mut out);
        once.release();
        computed?;
    } else {
        kernel.compute(algorithm, version, &stored, secret, &salt, &mut out)?;
        // A hash made with less work than today's (before the parameters
        // were raised, or imported) would answer sooner than an account
        // that does not exist, whose check costs one hash at today's
        // parameters: the rest of that work is spent too.
        if let Some(rest) = rest_of_one_hash(params, &stored) {
            spend_one_hash(&rest, secret, kernel)?;
        }
    }
    // Output's equality is constant-time.
    let matches = Output::new(&out).map_err(argon2_error)? == expected;
    let needs_rehash = algorithm != Algorithm::Argon2id
        || version != Version::V0x13
        || !same_cost(&stored, params)
        || expected.len() != OUTPUT_LEN;
    Ok(Verification {
        matches,
        needs_rehash,
    })
}

/// A stored Argon2 PHC string read for verification: its algorithm,
/// version, parameters (output length included), salt and hash; `Err` for
/// one that is malformed or beyond [`check_stored_cost`].
fn parse_native(
    verifier: &str,
) -> std::result::Result<(Algorithm, Version, Params, Vec<u8>, Output), String> {
    let phc = PasswordHash::new(verifier).map_err(|e| e.to_string())?;
    let algorithm = Algorithm::try_from(phc.algorithm).map_err(|e| e.to_string())?;
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        return Err("the verifier lacks its salt or hash".into());
    };
    let stored = Params::try_from(&phc).map_err(|e| e.to_string())?;
    check_stored_cost(&stored)?;
    let version = phc
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| e.to_string())?
        // Without `v=`: the reference implementation's reading, version
        // 1.0 (such hashes predate the `v=` field; every 1.3 hash has it).
        .unwrap_or(Version::V0x10);
    let mut salt_buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| e.to_string())?
        .to_vec();
    if salt.len() < MIN_SALT_BYTES {
        return Err(format!(
            "a salt of {} bytes (Argon2 takes at least {MIN_SALT_BYTES})",
            salt.len()
        ));
    }
    let stored = Params::new(
        stored.m_cost(),
        stored.t_cost(),
        stored.p_cost(),
        Some(expected.len()),
    )
    .map_err(|e| e.to_string())?;
    Ok((algorithm, version, stored, salt, expected))
}

/// Whether Sesame verifies a stored Argon2 hash with these parameters:
/// bounded memory, work (memory × passes) and lanes, the same bounds at
/// import ([`crate::core::transfer`]) as at every login.
pub(crate) fn check_stored_cost(params: &Params) -> std::result::Result<(), String> {
    if params.m_cost() > MAX_STORED_MEMORY_KIB {
        return Err(format!(
            "asks for more than {MAX_STORED_MEMORY_KIB} KiB of memory"
        ));
    }
    if u64::from(params.m_cost()) * u64::from(params.t_cost()) > MAX_STORED_WORK_KIB {
        return Err(format!(
            "asks for more work than {MAX_STORED_WORK_KIB} KiB × passes (memory × iterations)"
        ));
    }
    if params.p_cost() > MAX_STORED_LANES {
        return Err(format!("asks for more than {MAX_STORED_LANES} lanes"));
    }
    Ok(())
}

/// One Argon2id with the configured parameters, whose result is dropped:
/// what a verification that cannot match spends, so that it takes as long
/// as one that could.
fn spend_one_hash(params: &Params, secret: &[u8], kernel: &mut Kernel) -> Result<()> {
    let mut spent = [0u8; OUTPUT_LEN];
    kernel.compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params,
        secret,
        b"sesame-padding-salt",
        &mut spent,
    )
}

/// The parameters of a hash that costs what one hash at `params` costs
/// beyond one at `stored` (an Argon2 hash's time goes with its memory times
/// its passes), if `stored` costs less; within `params`' own memory.
fn rest_of_one_hash(params: &Params, stored: &Params) -> Option<Params> {
    let work = |p: &Params| u64::from(p.m_cost()) * u64::from(p.t_cost());
    let rest = work(params).checked_sub(work(stored))?;
    let passes = params.t_cost();
    let least = 8 * u64::from(params.p_cost());
    let memory = u32::try_from((rest / u64::from(passes)).max(least)).ok()?;
    // Less than a tenth of a hash: not worth a pass over memory.
    if rest * 10 < work(params) {
        return None;
    }
    Params::new(memory, passes, params.p_cost(), Some(OUTPUT_LEN)).ok()
}

fn same_cost(a: &Params, b: &Params) -> bool {
    (a.m_cost(), a.t_cost(), a.p_cost()) == (b.m_cost(), b.t_cost(), b.p_cost())
}

/// A verifier with the configured parameters that no password matches
/// (random salt and random output, never produced by hashing anything).
fn dummy_verifier(params: &Params) -> Result<String> {
    let mut salt = [0u8; 16];
    let mut out = [0u8; OUTPUT_LEN];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut out);
    phc_string(Algorithm::Argon2id, params, &salt, &out)
}

#[cfg(test)]
mod tests {
    use argon2::Argon2;

    use super::*;

    /// RFC 9106 §5.3: Argon2id with a secret and associated data, 4 lanes.
    #[test]
    fn the_kernel_matches_the_rfc_9106_argon2id_vector() {
        let expected =
            hex::decode("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659")
                .unwrap();
        for backend in available_backends() {
            let params = argon2_rust::Params::builder()
                .memory(argon2_rust::params::Memory::kib(32))
                .passes(3)
                .lanes(4)
                .threads(1)
                .tag_len(argon2_rust::params::TagLen::bytes(32))
                .build()
                .unwrap();
            let mut tag = [0u8; 32];
            // SAFETY: `available_backends` names only backends this CPU runs.
            unsafe {
                argon2_rust::__internal::hash_with_backend(
                    backend,
                    argon2_rust::Algorithm::Argon2id,
                    argon2_rust::Version::V0x13,
                    &params,
                    &[1; 32],
                    &[2; 16],
                    &[3; 8],
                    &[4; 12],
                    &mut tag,
                )
            }
            .unwrap();
            assert_eq!(tag.to_vec(), expected, "{backend:?}");
        }
        // And through Sesame's own entry point (the dispatched backend), with
        // RustCrypto as the oracle for the same inputs without secret and data.
        let params = Params::new(32, 3, 4, Some(32)).unwrap();
        let mut ours = [0u8; 32];
        Kernel::default()
            .compute(
                Algorithm::Argon2id,
                Version::V0x13,
                &params,
                &[1; 32],
                &[2; 16],
                &mut ours,
            )
            .unwrap();
        let mut theirs = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(&[1; 32], &[2; 16], &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
    }

    fn available_backends() -> Vec<argon2_rust::Backend> {
        argon2_rust::Backend::ALL
            .iter()
            .copied()
            .filter(|b| b.is_available())
            .collect()
    }

    /// Every backend this CPU has, against RustCrypto, on random passwords
    /// and salts over the parameters Sesame accepts (and the older
    /// algorithms and version a stored hash may name): raw tags equal.
    #[test]
    fn every_backend_computes_what_rustcrypto_computes() {
        let backends = available_backends();
        eprintln!("argon2 backends exercised here: {backends:?}");
        let random = |n: usize| {
            let mut bytes = vec![0u8; n];
            OsRng.fill_bytes(&mut bytes);
            bytes
        };
        let cases = [
            (Algorithm::Argon2id, Version::V0x13, 8, 1, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 64, 1, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 256, 2, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 512, 3, 2, 32),
            (Algorithm::Argon2id, Version::V0x13, 1024, 2, 4, 64),
            (Algorithm::Argon2id, Version::V0x13, 19456, 2, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 96, 1, 3, 16),
            (Algorithm::Argon2i, Version::V0x13, 64, 3, 1, 32),
            (Algorithm::Argon2d, Version::V0x13, 64, 2, 2, 32),
            (Algorithm::Argon2id, Version::V0x10, 64, 2, 1, 32),
        ];
        for (algorithm, version, m, t, p, len) in cases {
            for round in 0..4 {
                let password = random(round * 7 % 40);
                let salt = random(8 + round * 5);
                let params = Params::new(m, t, p, Some(len)).unwrap();
                let mut expected = vec![0u8; len];
                Argon2::new(algorithm, version, params.clone())
                    .hash_password_into(&password, &salt, &mut expected)
                    .unwrap();
                let config = kernel_config(algorithm, version, &params, len).unwrap();
                for &backend in &backends {
                    let mut tag = vec![0u8; len];
                    // SAFETY: `available_backends` names only backends this CPU runs.
                    unsafe {
                        argon2_rust::__internal::hash_with_backend(
                            backend,
                            config.algorithm(),
                            config.version(),
                            config.params(),
                            &password,
                            &salt,
                            &[],
                            &[],
                            &mut tag,
                        )
                    }
                    .unwrap();
                    assert_eq!(
                        tag, expected,
                        "{backend:?} {algorithm:?} {version:?} m={m} t={t} p={p}"
                    );
                }
                // Sesame's own path (dispatched backend, reused memory).
                let mut kernel = Kernel::default();
                let mut tag = vec![0u8; len];
                kernel
                    .compute(algorithm, version, &params, &password, &salt, &mut tag)
                    .unwrap();
                assert_eq!(tag, expected);
            }
        }
    }

    /// PHC strings written through the kernel verify with RustCrypto, and
    /// RustCrypto's verify through the kernel.
    #[tokio::test]
    async fn phc_strings_verify_both_ways() {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let hasher =
            PasswordHasher::start(&cheap(), crate::metrics::Metrics::new().hashing()).unwrap();
        for password in ["correct horse battery", "ünïcødé pässwörd", ""] {
            let phc = hasher.hash(password).await.unwrap();
            Argon2::default()
                .verify_password(password.as_bytes(), &PasswordHash::new(&phc).unwrap())
                .unwrap();
        }
    }

    /// An Argon2 hash written without `v=` is version 1.0 (the reference
    /// implementation's reading; such hashes predate the field), and one
    /// whose salt is shorter than Argon2 takes matches nothing (it was an
    /// internal error, a 500, at every sign-in).
    #[tokio::test]
    async fn imported_argon2_without_version_or_with_a_short_salt() {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let hasher =
            PasswordHasher::start(&cheap(), crate::metrics::Metrics::new().hashing()).unwrap();
        let old = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"saltsaltsalt").unwrap();
        let phc = old
            .hash_password(b"old password", &salt)
            .unwrap()
            .to_string();
        let without_version = phc.replace("$v=16", "");
        assert_ne!(without_version, phc);
        let right = Password::presented("old password").unwrap();
        let checked = hasher.verify(&right, &without_version).await.unwrap();
        assert_eq!(
            checked,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );

        // RustCrypto refuses to make one; written by hand, as an import might carry it.
        let seven = SaltString::encode_b64(b"1234567").unwrap();
        assert!(
            Argon2::default()
                .hash_password(b"short salt", &seven)
                .is_err()
        );
        let good = Argon2::default()
            .hash_password(b"short salt", &SaltString::encode_b64(b"12345678").unwrap())
            .unwrap()
            .to_string();
        let short_salt = good.replace("$MTIzNDU2Nzg$", "$MTIzNDU2Nw$");
        assert_ne!(short_salt, good);
        let checked = hasher
            .verify(&Password::presented("short salt").unwrap(), &short_salt)
            .await
            .unwrap();
        assert!(!checked.matches);
    }

    /// A password typed in another form than NFC (a decomposed accent)
    /// matches a hash made of the bytes typed (another system's), asking
    /// for a rehash; Sesame's own hashes are of the NFC form, which either
    /// form matches.
    #[tokio::test]
    async fn a_password_typed_decomposed_matches_an_imported_hash_of_it() {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let hasher =
            PasswordHasher::start(&cheap(), crate::metrics::Metrics::new().hashing()).unwrap();
        let typed = "cafe\u{301} au lait";
        let imported = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(
            typed.as_bytes(),
            &SaltString::encode_b64(b"saltsaltsalt").unwrap(),
        )
        .unwrap()
        .to_string();
        let presented = Password::presented(typed).unwrap();
        assert_eq!(presented.expose(), "caf\u{e9} au lait");
        assert_eq!(
            hasher.verify(&presented, &imported).await.unwrap(),
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        let composed = Password::presented("caf\u{e9} au lait").unwrap();
        assert!(composed.expose_as_typed().is_none());
        assert!(!hasher.verify(&composed, &imported).await.unwrap().matches);
        let own = hasher.hash(presented.expose()).await.unwrap();
        for form in [&presented, &composed] {
            assert_eq!(
                hasher.verify(form, &own).await.unwrap(),
                Verification {
                    matches: true,
                    needs_rehash: false
                }
            );
        }
        let wrong = Password::presented("cafe\u{301} au laid").unwrap();
        assert!(!hasher.verify(&wrong, &imported).await.unwrap().matches);
    }

    fn cheap() -> HashingSettings {
        HashingSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            threads: 1,
            queue: 4,
        }
    }

    /// Every idle thread gives its memory back after its own idle time
    /// (here 300 ms), all at about the same time; none waits for the others
    /// to time out first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_threads_give_their_memory_back_each_on_its_own_time() {
        let metrics = crate::metrics::Metrics::new().hashing();
        let settings = HashingSettings {
            memory_kib: 8 * 1024,
            threads: 8,
            queue: 64,
            ..cheap()
        };
        let hasher = PasswordHasher::start(&settings, metrics.clone()).unwrap();
        let jobs: Vec<_> = (0..32)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(&format!("password {i}")).await })
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        let holding = metrics.threads_with_memory.get();
        assert!(holding >= 4, "{holding} threads took a job");
        let idle = std::time::Instant::now();
        while metrics.threads_with_memory.get() > 0 {
            assert!(
                idle.elapsed() < Duration::from_millis(1000),
                "{} of {holding} threads still hold their memory",
                metrics.threads_with_memory.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            idle.elapsed() >= Duration::from_millis(200),
            "released at once?"
        );
    }

    /// A trickle of logins, each sent once the one before is answered, is
    /// served by one thread: the others stay idle and take no memory
    /// (threads taking turns would each have kept theirs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickle_of_jobs_is_served_by_one_thread() {
        let metrics = crate::metrics::Metrics::new().hashing();
        let settings = HashingSettings {
            memory_kib: 1024,
            threads: 4,
            ..cheap()
        };
        let hasher = PasswordHasher::start(&settings, metrics.clone()).unwrap();
        let phc = hasher.hash("correct horse").await.unwrap();
        let password = Password::presented("correct horse").unwrap();
        for _ in 0..8 {
            assert!(hasher.verify(&password, &phc).await.unwrap().matches);
        }
        assert_eq!(metrics.threads_with_memory.get(), 1);
    }

    /// A job that panics (none is known to) fails its own request only:
    /// the thread serves the next one, and nothing stays counted as queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone_and_its_thread_serves_on() {
        let metrics = crate::metrics::Metrics::new().hashing();
        let hasher = PasswordHasher::start(&cheap(), metrics.clone()).unwrap();
        for _ in 0..2 {
            let (reply, answer) = oneshot::channel();
            hasher.submit(Job::Panic { reply }).unwrap();
            assert!(answer.await.is_err(), "its caller hears that it failed");
            let phc = tokio::time::timeout(Duration::from_secs(10), hasher.hash("correct horse"))
                .await
                .expect("the pool's one thread serves on")
                .unwrap();
            let password = Password::presented("correct horse").unwrap();
            assert!(hasher.verify(&password, &phc).await.unwrap().matches);
        }
        assert_eq!(metrics.queue.get(), 0);
    }

    #[tokio::test]
    async fn hash_then_verify_round_trips() {
        let hasher =
            PasswordHasher::start(&cheap(), crate::metrics::Metrics::new().hashing()).unwrap();
        let phc = hasher.hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let right = Password::presented("correct horse").unwrap();
        let wrong = Password::presented("correct horsf").unwrap();
        assert_eq!(
            hasher.verify(&right, &phc).await.unwrap(),
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        assert!(!hasher.verify(&wrong, &phc).await.unwrap().matches);
        hasher.verify_dummy("correct horse").await.unwrap();
        // A stored hash beyond the bounds (here, 2^32 - 1 passes) matches
        // nothing, without an error and without computing it.
        let endless = "$argon2id$v=19$m=64,t=4294967295,p=1$c2FsdHNhbHQ$\
            AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            hasher.verify(&right, endless).await.unwrap(),
            Verification {
                matches: false,
                needs_rehash: true
            }
        );
        // Nor does a malformed one (no lanes) fail the sign-in with an error.
        let malformed = "$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHQ$\
            AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!hasher.verify(&right, malformed).await.unwrap().matches);
    }

    /// Verifications beyond the configured memory share one budget: a
    /// share that does not fit waits until one is given back.
    /// A stored hash made with less work than today's parameters is
    /// followed by the rest of one of today's hashes, so that a wrong
    /// password for its account takes as long as one for a name that does
    /// not exist (one hash at today's parameters).
    #[test]
    fn a_cheaper_stored_hash_is_made_up_to_one_of_todays() {
        let params = |m, t| Params::new(m, t, 1, Some(OUTPUT_LEN)).unwrap();
        let today = params(65_536, 3);
        let rest = rest_of_one_hash(&today, &params(19_456, 2)).unwrap();
        assert_eq!((rest.m_cost(), rest.t_cost()), (52_565, 3));
        let work = |p: &Params| u64::from(p.m_cost()) * u64::from(p.t_cost());
        let total = work(&params(19_456, 2)) + work(&rest);
        assert!(total.abs_diff(work(&today)) < 3, "{total}");
        assert!(rest_of_one_hash(&today, &today).is_none());
        assert!(rest_of_one_hash(&today, &params(262_144, 3)).is_none());
        assert!(
            rest_of_one_hash(&today, &params(65_536, 2)).is_some(),
            "a third of a hash"
        );
        assert!(
            rest_of_one_hash(&today, &params(62_000, 3)).is_none(),
            "within a tenth"
        );
    }

    #[test]
    fn oversized_verifications_get_room_in_their_budget_or_none() {
        static BUDGET: Budget = Budget {
            used: Mutex::new(0),
        };
        let all = BUDGET.try_take(OVERSIZED_BUDGET_KIB).unwrap();
        assert!(
            BUDGET.try_take(64 * 1024).is_none(),
            "no room while the whole budget is held"
        );
        drop(all);
        let some = BUDGET.try_take(64 * 1024).unwrap();
        let more = BUDGET.try_take(64 * 1024).unwrap();
        drop((some, more));
        assert_eq!(*BUDGET.used.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn verifiers_with_other_parameters_verify_and_ask_for_rehash() {
        let old = PasswordHasher::start(
            &HashingSettings {
                memory_kib: 128,
                ..cheap()
            },
            crate::metrics::Metrics::new().hashing(),
        )
        .unwrap();
        let phc = old.hash("correct horse").await.unwrap();
        let new =
            PasswordHasher::start(&cheap(), crate::metrics::Metrics::new().hashing()).unwrap();
        let check = new
            .verify(&Password::presented("correct horse").unwrap(), &phc)
            .await
            .unwrap();
        assert!(check.matches && check.needs_rehash);
        // More memory than configured: computed apart, and still exact.
        let wrong = new
            .verify(&Password::presented("correct horsf").unwrap(), &phc)
            .await
            .unwrap();
        assert!(!wrong.matches);
        assert!(!new.is_current(&phc));
        assert!(old.is_current(&phc));
    }

    #[tokio::test]
    async fn verifies_hashes_made_by_the_argon2_crate_itself() {
        use argon2::PasswordHasher as _;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = Argon2::default()
            .hash_password(b"hunter22", &salt)
            .unwrap()
            .to_string();
        let hasher =
            PasswordHasher::start(&cheap(), crate::metrics::Metrics::new().hashing()).unwrap();
        let check = hasher
            .verify(&Password::presented("hunter22").unwrap(), &phc)
            .await
            .unwrap();
        assert!(check.matches && check.needs_rehash);
    }

    #[tokio::test]
    async fn hashes_nobody_waits_for_any_more_are_skipped() {
        let all = crate::metrics::Metrics::new();
        let metrics = all.hashing();
        let hasher = PasswordHasher::start(
            &HashingSettings {
                memory_kib: 16 * 1024,
                iterations: 2,
                queue: 16,
                ..cheap()
            },
            metrics.clone(),
        )
        .unwrap();
        // One hash keeps the only thread busy while six more queue behind
        // it, whose requests then go away (as a timed-out request's do).
        let first = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.hash("a long password").await }
        });
        tokio::task::yield_now().await;
        let gone: Vec<_> = (0..6)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("a long password").await })
            })
            .collect();
        tokio::task::yield_now().await;
        for task in &gone {
            task.abort();
        }
        for task in gone {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        let last = hasher.hash("a long password").await.unwrap();
        assert!(last.starts_with("$argon2id$"));
        assert!(first.await.unwrap().is_ok());
        let text = all.render(false);
        let hashed = text
            .lines()
            .find(|line| line.starts_with("sesame_hashing_duration_seconds_count"))
            .unwrap();
        assert!(hashed.ends_with(" 2"), "hashed for nobody: {hashed}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = PasswordHasher::start(
            &HashingSettings {
                memory_kib: 65536,
                iterations: 4,
                threads: 1,
                queue: 1,
                ..cheap()
            },
            crate::metrics::Metrics::new().hashing(),
        )
        .unwrap();
        let pending: Vec<_> = (0..6)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("a long password").await })
            })
            .collect();
        let mut busy = 0;
        for task in pending {
            if matches!(task.await.unwrap(), Err(Error::Busy { .. })) {
                busy += 1;
            }
        }
        assert!(busy >= 1, "expected at least one refusal");
    }
}
