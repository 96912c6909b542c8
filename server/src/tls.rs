//! TLS: the operator's certificate, or a self-signed one made in the data
//! directory on first start.

use anyhow::{Context, bail};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// Where the certificate and key come from.
pub fn paths(config: &Config) -> (PathBuf, PathBuf) {
    match &config.tls {
        Some(t) => (t.cert.clone(), t.key.clone()),
        None => {
            let dir = config.data_dir.join("tls");
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
    }
}

/// Make the self-signed certificate if it is ours to make and missing.
fn ensure_self_signed(config: &Config, cert: &Path, key: &Path) -> anyhow::Result<()> {
    if config.tls.is_some() || (cert.exists() && key.exists()) {
        return Ok(());
    }
    let dir = cert.parent().context("certificate path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // The names and addresses a client on this machine uses: the README's
    // examples connect to 127.0.0.1.
    let names = vec![
        config.hostname.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let made =
        rcgen::generate_simple_self_signed(names).context("generate a self-signed certificate")?;
    write_private(key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, made.cert.pem()).with_context(|| format!("write {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate for {}", config.hostname);
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// The certificate every TLS handshake presents, swapped whole by a reload
/// (SIGHUP after certbot renewed the files): a handshake that starts after
/// the swap gets the new chain; a session already open keeps the keys it
/// negotiated, since rustls only asks the resolver during a handshake.
#[derive(Debug)]
pub struct Certificate {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

impl Certificate {
    /// Read the files again; on any error the certificate in use stays.
    /// Returns whether the chain changed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let fresh = Arc::new(load(&self.cert_path, &self.key_path)?);
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow::anyhow!("certificate lock poisoned"))?;
        let changed = current.cert != fresh.cert;
        *current = fresh;
        Ok(changed)
    }

    pub fn path(&self) -> &Path {
        &self.cert_path
    }
}

/// A certificate chain and its private key, checked to belong together.
fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("[tls] cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "[tls] cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!("[tls] cert: {} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "[tls] key: cannot read a PEM private key from {}",
            key.display()
        )
    })?;
    CertifiedKey::from_der(certs, key_der, &rustls::crypto::ring::default_provider())
        .context("[tls] the certificate and key do not match")
}

/// The TLS acceptor every listener shares, and the certificate behind it
/// (for reloads).
pub fn acceptor(config: &Config) -> anyhow::Result<(TlsAcceptor, Arc<Certificate>)> {
    let (cert, key) = paths(config);
    ensure_self_signed(config, &cert, &key)?;
    let certificate = Arc::new(Certificate {
        current: std::sync::RwLock::new(Arc::new(load(&cert, &key)?)),
        cert_path: cert,
        key_path: key,
    });
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    Ok((TlsAcceptor::from(Arc::new(server)), certificate))
}
