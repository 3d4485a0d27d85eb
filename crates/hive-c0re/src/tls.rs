//! The daemon's one check of a server's TLS certificate other than a
//! chain to trusted roots: any certificate (PostgreSQL's `prefer` and
//! `require` without a root file, as libpq), or only the one whose SHA-256
//! is pinned (a node shell's home node, named through the store). The
//! handshake's signatures are checked against the certificate either way.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Which server certificate a connection takes.
#[derive(Debug)]
pub struct CertCheck {
    /// The SHA-256 (lowercase hex) of the one certificate taken; None: any.
    pin: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl CertCheck {
    /// Any certificate.
    pub fn any(provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin: None,
            provider,
        }
    }

    /// Only the certificate whose SHA-256 is `fingerprint` (hex), whatever its names or issuer.
    pub fn pinned(fingerprint: &str, provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin: Some(fingerprint.to_ascii_lowercase()),
            provider,
        }
    }
}

impl ServerCertVerifier for CertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen = crate::hex::encode(&Sha256::digest(end_entity.as_ref()));
        if seen == *pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "its TLS certificate ({}) is not the one the node gave through the store ({})",
                &seen[..16],
                &pin[..pin.len().min(16)]
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
