//! HTTPS served by Sesame itself: rustls with TLS 1.3 and 1.2 (aws-lc-rs's
//! default suites: forward-secret AEAD only), HTTP/2 or HTTP/1.1 by ALPN.
//!
//! Every new handshake takes the certificate in service from
//! [`Certificates`]; a reload (SIGHUP, or the files changing on disk, as a
//! cert-manager or certbot renewal does) swaps it, so connections already
//! open keep theirs and none is dropped. A pair that does not load
//! (unreadable, not PEM, a key that is not the certificate's) is refused
//! with a logged error and the pair in service stays, and so is a renewal
//! whose certificate has already expired. A certificate that expires within
//! [`EXPIRY_WARNING`], or is not valid yet, is warned about when it is put
//! in service; its expiry is a metric to alert on.
//!
//! Handshakes are bounded: at most `max_handshakes` at once (a connection
//! beyond is closed at once) and each within `handshake_timeout`, so a flood
//! of clients that open TLS and stall cannot hold memory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::clock::{Clock, UnixTime, rfc3339};

/// Makes aws-lc-rs the process's TLS provider, for the libraries that take
/// the process's (the Redis client, over `rediss://`) whatever features a
/// build unifies; once is enough, and later calls change nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// HTTPS settings (`tls_cert`, `tls_key`, `[tls]`).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The `Strict-Transport-Security` value, `None` when turned off.
    pub hsts: Option<HeaderValue>,
    /// Longest a client may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// How often the files are checked for a change.
    pub watch_interval: Duration,
}

/// Why a certificate and key pair was not loaded. Messages name files,
/// never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A renewal whose certificate has already expired.
    #[error("the certificate in {cert} expired at {at}")]
    Expired {
        /// The certificate file.
        cert: String,
        /// Its `notAfter`, RFC 3339.
        at: String,
    },
}

/// How long before its end a certificate put in service is warned about.
pub const EXPIRY_WARNING: i64 = 14 * 86_400;

/// When a certificate may be used: its `notBefore` and `notAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first second it is valid.
    pub not_before: UnixTime,
    /// The last second it is valid.
    pub not_after: UnixTime,
}

impl Validity {
    /// The validity of a DER certificate; `None` when x509-parser cannot
    /// read it (rustls, which loaded it, is the judge of whether it serves).
    fn of(certificate: &CertificateDer<'_>) -> Option<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
        let validity = parsed.validity();
        Some(Self {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// What an operator should be told of it at `now`, if anything.
    pub fn concern(&self, now: UnixTime) -> Option<String> {
        if self.not_after < now {
            Some(format!(
                "expired at {}: clients refuse it",
                rfc3339(self.not_after)
            ))
        } else if self.not_before > now {
            Some(format!(
                "is not valid before {}: clients refuse it until then (is this host's clock \
                 right?)",
                rfc3339(self.not_before)
            ))
        } else if self.not_after - now < EXPIRY_WARNING {
            Some(format!(
                "expires at {}, in {} days: renew it",
                rfc3339(self.not_after),
                (self.not_after - now) / 86_400
            ))
        } else {
            None
        }
    }
}

/// The certificate in service, swapped in place by a reload.
#[derive(Debug)]
struct Certificates(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// What a file looked like when it was last loaded: a change of any part
/// (a rewrite, or a symbolic link pointed elsewhere) means a reload.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

/// Sesame's TLS: the acceptor, its certificate and the bounds on handshakes.
pub struct Tls {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    certificates: Arc<Certificates>,
    acceptor: TlsAcceptor,
    handshakes: Arc<Semaphore>,
    /// The files' stamps at the last load (or attempt).
    loaded: Mutex<(Stamp, Stamp)>,
    clock: Arc<dyn Clock>,
    /// `notAfter` of the certificate in service, for the metrics (0 when
    /// it could not be read).
    expiry: prometheus_client::metrics::gauge::Gauge,
    /// Reloads refused, for the metrics (a renewal gone wrong).
    refused_reloads: prometheus_client::metrics::counter::Counter,
}

/// The answer to plain HTTP on the HTTPS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 50\r\n\
connection: close\r\n\
\r\n\
This port speaks HTTPS only: use an https:// URL.\n";

/// A completed handshake: the stream, and whether the client chose HTTP/2.
pub struct Accepted {
    /// The decrypted stream.
    pub stream: TlsStream<crate::connection::Socket>,
    /// ALPN said `h2`.
    pub http2: bool,
}

impl Tls {
    /// Loads the pair as a start would, putting nothing in service (for
    /// `sesame config check`); its validity, when it could be read.
    pub fn check(settings: &TlsSettings) -> Result<Option<Validity>, TlsError> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        load_pair(&settings.cert, &settings.key, &provider).map(|(_, validity)| validity)
    }

    /// Loads the pair; an error here stops start-up. A certificate that
    /// expired is served (with a warning): refusing to start would not
    /// bring a valid one.
    pub fn new(settings: TlsSettings, clock: Arc<dyn Clock>) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = (stamp(&settings.cert), stamp(&settings.key));
        let (pair, validity) = load_pair(&settings.cert, &settings.key, &provider)?;
        let expiry = prometheus_client::metrics::gauge::Gauge::default();
        note_validity(&settings.cert, validity, clock.now(), &expiry);
        let certificates = Arc::new(Certificates(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            handshakes: Arc::new(Semaphore::new(settings.max_handshakes)),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            settings,
            provider,
            certificates,
            loaded: Mutex::new(stamps),
            clock,
            expiry,
            refused_reloads: prometheus_client::metrics::counter::Counter::default(),
        }))
    }

    /// The gauge holding the certificate's `notAfter`, for the registry.
    pub fn expiry_gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.expiry.clone()
    }

    /// The counter of refused reloads, for the registry.
    pub fn refused_reloads(&self) -> prometheus_client::metrics::counter::Counter {
        self.refused_reloads.clone()
    }

    /// `Strict-Transport-Security`, unless turned off.
    pub fn hsts(&self) -> Option<&HeaderValue> {
        self.settings.hsts.as_ref()
    }

    /// Reads the files again and puts the pair in service; on an error the
    /// pair in service stays (and the error is returned, for the log). A
    /// certificate that has expired is an error: a renewal gone wrong (an
    /// old file restored, a failed issuance), never better than the one in
    /// service.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Held until the pair is in service: of two reloads at once (a
        // SIGHUP and the watch), the one that read the files first must
        // not put its older pair in service after the other.
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        *loaded = (stamp(&self.settings.cert), stamp(&self.settings.key));
        let (pair, validity) = load_pair(&self.settings.cert, &self.settings.key, &self.provider)?;
        let now = self.clock.now();
        if let Some(validity) = validity
            && validity.not_after < now
        {
            return Err(TlsError::Expired {
                cert: self.settings.cert.display().to_string(),
                at: rfc3339(validity.not_after),
            });
        }
        note_validity(&self.settings.cert, validity, now, &self.expiry);
        *self
            .certificates
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// Reloads, logging the outcome.
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.settings.cert.display(),
                "TLS certificate reloaded ({why})"
            ),
            Err(error) => {
                self.refused_reloads.inc();
                tracing::error!(
                    %error,
                    "TLS certificate not reloaded ({why}); the one in service stays"
                );
            }
        }
    }

    /// Checks the files every `watch_interval` and reloads when they
    /// changed; stops when the server is gone.
    pub fn spawn_watch(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.settings.watch_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tls) = weak.upgrade() else { return };
                let now = (stamp(&tls.settings.cert), stamp(&tls.settings.key));
                let changed = *tls.loaded.lock().unwrap_or_else(PoisonError::into_inner) != now;
                if changed {
                    tls.reload_and_log("the files changed");
                }
            }
        });
    }

    /// The server's side of a handshake, bounded in number and time;
    /// `None` when refused, failed or too slow (logged at debug level: a
    /// scanner's noise is not an operator's concern).
    /// `write_timeout`: see [`crate::connection::Socket`].
    pub async fn accept(&self, stream: TcpStream, write_timeout: Duration) -> Option<Accepted> {
        let Ok(_permit) = Arc::clone(&self.handshakes).try_acquire_owned() else {
            tracing::debug!("too many TLS handshakes in progress; connection closed");
            return None;
        };
        let handshake = async {
            // A client speaking plain HTTP to this port gets told so
            // (a TLS connection starts with a handshake record, 0x16).
            let mut first = [0_u8; 1];
            if stream.peek(&mut first).await? == 1 && first[0] != 0x16 {
                let mut stream = stream;
                let mut scratch = [0_u8; 4096];
                let _ = stream.read(&mut scratch).await;
                let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
                let _ = stream.shutdown().await;
                // What the client still sends is read (for a second at
                // most) rather than left unread: closing on unread data
                // resets the connection, losing the answer on its way.
                let drain = async { while stream.read(&mut scratch).await.is_ok_and(|n| n > 0) {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                return Err(std::io::Error::other("plain HTTP on the HTTPS port"));
            }
            self.acceptor
                .accept(crate::connection::socket(stream, write_timeout))
                .await
        };
        match tokio::time::timeout(self.settings.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => {
                let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                Some(Accepted { stream, http2 })
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// Puts a certificate's `notAfter` in the gauge and warns of what is wrong
/// with its validity, if anything.
fn note_validity(
    cert: &Path,
    validity: Option<Validity>,
    now: UnixTime,
    expiry: &prometheus_client::metrics::gauge::Gauge,
) {
    let Some(validity) = validity else {
        expiry.set(0);
        tracing::warn!(
            cert = %cert.display(),
            "cannot read the TLS certificate's validity: its expiry is not watched"
        );
        return;
    };
    expiry.set(validity.not_after);
    if let Some(concern) = validity.concern(now) {
        tracing::warn!(cert = %cert.display(), "the TLS certificate {concern}");
    }
}

/// Reads a certificate chain and its key, checking that they belong
/// together; the first certificate's validity, when it can be read.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Option<Validity>), TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let pem_error = |path: &Path, what: &str, error: rustls::pki_types::pem::Error| {
        use rustls::pki_types::pem::Error;
        file_error(
            path,
            match error {
                Error::Io(error) => format!("cannot read it: {error}"),
                Error::NoItemsFound => format!("holds no PEM {what}"),
                _ => format!("is not a readable PEM file ({what} expected)"),
            },
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, "certificate", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, "certificate", e))?;
    if chain.is_empty() {
        return Err(file_error(cert, "holds no PEM certificate".into()));
    }
    let validity = chain.first().and_then(Validity::of);
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;
    let pair = CertifiedKey::from_der(chain, private, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        },
        rustls::Error::General(reason) => file_error(key, reason),
        other => TlsError::Rustls(other),
    })?;
    Ok((pair, validity))
}

#[cfg(test)]
mod tests {
    use super::{EXPIRY_WARNING, Validity};

    /// What is said of a certificate at `now`: nothing while it has more
    /// than two weeks left, then its end, its expiry, or that it is not
    /// valid yet.
    #[test]
    fn a_certificate_is_warned_about_near_its_end_after_it_and_before_it() {
        let validity = Validity {
            not_before: 1_000_000,
            not_after: 1_000_000 + 90 * 86_400,
        };
        assert_eq!(validity.concern(1_000_000), None);
        assert_eq!(validity.concern(validity.not_after - EXPIRY_WARNING), None);
        let soon = validity
            .concern(validity.not_after - 3 * 86_400 + 1)
            .unwrap();
        assert!(soon.contains("in 2 days: renew it"), "{soon}");
        assert_eq!(
            validity.concern(validity.not_after),
            Some(soon_at_end(&validity))
        );
        let expired = validity.concern(validity.not_after + 1).unwrap();
        assert!(expired.starts_with("expired at ") && expired.ends_with("clients refuse it"));
        let early = validity.concern(validity.not_before - 1).unwrap();
        assert!(
            early.starts_with("is not valid before 1970-01-12T13:46:40Z"),
            "{early}"
        );
    }

    /// On its last second it is still valid, with 0 days left.
    fn soon_at_end(validity: &Validity) -> String {
        format!(
            "expires at {}, in 0 days: renew it",
            crate::clock::rfc3339(validity.not_after)
        )
    }
}
