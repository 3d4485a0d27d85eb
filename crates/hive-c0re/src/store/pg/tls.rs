//! TLS to PostgreSQL with rustls (through tokio-postgres-rustls), checking
//! what libpq's `sslmode` says it checks:
//!
//! - `disable`: no TLS.
//! - `allow`, `prefer`: TLS when the server offers it, certificate unchecked
//!   (as libpq: this only guards against a passive eavesdropper).
//! - `require`: TLS or no connection; the certificate is checked against
//!   `sslrootcert` when one is given (as libpq does when it finds a root file).
//! - `verify-ca`: TLS; the chain must lead to `sslrootcert` (else the
//!   system's roots); the host name is not checked.
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!   Use this between hosts.
//!
//! rustls with the `ring` provider: pure Rust apart from ring, no system
//! OpenSSL to build against or keep in step.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::settings::SslMode;
use crate::store::{Result, StoreError};

/// The TLS connector for `mode`; `root_cert` is a PEM file of trusted CAs.
pub fn connector(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::Disable | SslMode::Allow | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(crate::tls::CertCheck::any(provider.clone()))
        }
        (SslMode::Require | SslMode::VerifyCa, root) => {
            Arc::new(AnyName(webpki(roots(root)?, provider.clone())?))
        }
        (SslMode::VerifyFull, root) => webpki(roots(root)?, provider.clone())?,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Settings(format!("TLS set-up failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots(root_cert: Option<&Path>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Settings(format!(
                        "could not read the CA certificates in sslrootcert {}: {e}",
                        path.display()
                    ))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Settings(format!(
                    "sslrootcert {} holds no usable CA certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(StoreError::Settings(
                    "this sslmode checks the server's certificate, and the system has no CA certificates: give the CA with sslrootcert=PATH in the database URL".into(),
                ));
            }
        }
    }
    Ok(store)
}

fn webpki(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| StoreError::Settings(format!("TLS set-up failed: {e}")))
}

/// `verify-ca`: the chain is checked, the name it is for is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
