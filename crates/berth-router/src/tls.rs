//! TLS for the HTTPS listener: the certificate is chosen per connection by SNI from the
//! current snapshot (Ingress `tls` entries and their Secrets), with a self-signed fallback
//! for names no Secret covers.

use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{RouterError, snapshot::Snapshot};

#[derive(Debug)]
pub struct SniResolver {
    snapshot: Arc<ArcSwap<Snapshot>>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|name| self.snapshot.load().cert(name));
        Some(found.unwrap_or_else(|| Arc::clone(&self.fallback)))
    }
}

/// The HTTPS listener's configuration: SNI certificates, ALPN h2 then http/1.1.
pub fn server_config(snapshot: Arc<ArcSwap<Snapshot>>) -> Result<ServerConfig, RouterError> {
    let fallback = Arc::new(self_signed()?);
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| RouterError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { snapshot, fallback }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn self_signed() -> Result<CertifiedKey, RouterError> {
    let cert = rcgen::generate_simple_self_signed(vec!["berth-router.invalid".to_owned()])
        .map_err(|e| RouterError::Tls(e.to_string()))?;
    certified_key(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes())
}

/// A certificate chain and key from PEM, as a `kubernetes.io/tls` Secret holds them.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, RouterError> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| RouterError::Tls(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(RouterError::Tls("tls.crt holds no certificate".into()));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| RouterError::Tls(format!("tls.key: {e}")))?
        .ok_or_else(|| RouterError::Tls("tls.key holds no private key".into()))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| RouterError::Tls(format!("tls.key: {e}")))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// The certificate of a TLS Secret, if it holds a usable one.
pub fn from_secret(secret: &Secret) -> Option<CertifiedKey> {
    let data = secret.data.as_ref()?;
    let cert = data.get("tls.crt")?;
    let key = data.get("tls.key")?;
    match certified_key(&cert.0, &key.0) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(
                secret = %format!("{}/{}", secret.metadata.namespace.as_deref().unwrap_or(""), secret.metadata.name.as_deref().unwrap_or("")),
                error = %e, "ignoring TLS Secret"
            );
            None
        }
    }
}
