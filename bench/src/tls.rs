//! The HTTPS rows' certificate: made for the run (127.0.0.1), written where
//! Sesame reads it, and a client connector that trusts it alone.

use std::sync::Arc;

use anyhow::Context;

/// The certificate's files (in a directory removed with this value) and a
/// connector that trusts it.
pub struct RunCertificate {
    pub dir: tempfile::TempDir,
    pub connector: tokio_rustls::TlsConnector,
}

impl RunCertificate {
    pub fn create() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let certificate =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("cert.pem"), certificate.pem())?;
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem())?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(certificate.der().clone())
            .context("the run's certificate")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The load generator speaks HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            dir,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sesame's environment for HTTPS with this certificate.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            (
                "SESAME_TLS_CERT",
                self.dir.path().join("cert.pem").display().to_string(),
            ),
            (
                "SESAME_TLS_KEY",
                self.dir.path().join("key.pem").display().to_string(),
            ),
        ]
    }
}
