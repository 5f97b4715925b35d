//! rustls server configuration: from PEM files, or a self-signed certificate
//! for local development.
//!
//! One crypto provider (ring) is compiled in and passed explicitly, so
//! `ServerConfig` never depends on a process-wide default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsSettings};

/// The certificate new handshakes get; swapped on reload, so new
/// connections see a new certificate while open ones keep theirs.
#[derive(Debug)]
pub struct CertificateSlot {
    current: ArcSwap<CertifiedKey>,
}

impl CertificateSlot {
    /// Replaces the certificate for handshakes from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertificateSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A ready TLS setup, and what a user needs to know about it.
pub struct TlsSetup {
    /// The rustls config: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.
    pub server_config: Arc<ServerConfig>,
    /// Where the certificate lives, to swap it on reload.
    pub certificate: Arc<CertificateSlot>,
    /// Set when the certificate was generated at start-up.
    pub self_signed: Option<SelfSigned>,
}

/// A certificate generated at start-up.
pub struct SelfSigned {
    /// Where the certificate was written, for `curl --cacert`; `None` if the
    /// file could not be written (the fingerprint still identifies it).
    pub cert_path: Option<PathBuf>,
    /// Whether the certificate and key a previous start wrote were reused.
    pub reused: bool,
    /// Why the certificate could not be written, if it could not.
    pub write_error: Option<String>,
    /// SHA-256 of the certificate (DER), as colon-separated hex.
    pub fingerprint: String,
}

/// The crypto provider gatehouse uses everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the TLS setup for `settings`; `None` when TLS is disabled.
/// `config` is the config file, named in errors.
pub fn setup(settings: &TlsSettings, config: &Path) -> Result<Option<TlsSetup>, ConfigError> {
    match settings {
        TlsSettings::Disabled => Ok(None),
        TlsSettings::Files { cert, key } => {
            let certified = load_certified_key(cert, key, config)?;
            let (server_config, certificate) = server_config(certified)
                .map_err(|e| ConfigError::invalid(config, "[tls]", e.to_string()))?;
            Ok(Some(TlsSetup {
                server_config,
                certificate,
                self_signed: None,
            }))
        }
        TlsSettings::SelfSigned { cert_out } => {
            let (certified, written) = match reuse_self_signed(cert_out) {
                Some(certified) => (certified, Ok(Written::Reused)),
                None => {
                    let (certified, written) = generate_self_signed(cert_out, config)?;
                    (certified, written.map(|()| Written::New))
                }
            };
            let fingerprint = fingerprint(certified.end_entity_cert().map_or(&[][..], |c| c));
            let (server_config, certificate) = server_config(certified)
                .map_err(|e| ConfigError::invalid(config, "[tls] self_signed", e.to_string()))?;
            let (cert_path, reused, write_error) = match written {
                Ok(written) => (Some(cert_out.clone()), written == Written::Reused, None),
                Err(error) => (None, false, Some(error)),
            };
            Ok(Some(TlsSetup {
                server_config,
                certificate,
                self_signed: Some(SelfSigned {
                    cert_path,
                    reused,
                    write_error,
                    fingerprint,
                }),
            }))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Written {
    New,
    Reused,
}

/// Where the self-signed certificate's key is kept: next to the
/// certificate, as `<name>.key`, readable by the owner only.
pub fn self_signed_key_path(cert_out: &Path) -> PathBuf {
    cert_out.with_extension("key")
}

/// The certificate and key a previous start wrote, if both are there and
/// belong together: reusing them keeps clients that trusted the file
/// working across restarts.
fn reuse_self_signed(cert_out: &Path) -> Option<CertifiedKey> {
    let key_path = self_signed_key_path(cert_out);
    let chain = CertificateDer::pem_file_iter(cert_out)
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(&key_path).ok()?;
    match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(certified) => {
            crate::key_file::warn_if_readable_by_others(&key_path, "the TLS private key");
            Some(certified)
        }
        Err(error) => {
            tracing::info!(cert = %cert_out.display(), %error, "the saved self-signed certificate does not match its key: making a new one");
            None
        }
    }
}

/// Makes a certificate for localhost, 127.0.0.1 and ::1 and writes it (and
/// its key, mode 0600) next to the config; a write failure is reported,
/// not fatal: the fingerprint still identifies the certificate.
fn generate_self_signed(
    cert_out: &Path,
    config: &Path,
) -> Result<(CertifiedKey, Result<(), String>), ConfigError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let invalid = |m: String| ConfigError::invalid(config, "[tls] self_signed", m);
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| invalid(format!("cannot generate a certificate: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(generated.signing_key.serialize_pem());
    let key_path = self_signed_key_path(cert_out);
    // The key first: a certificate on disk without its key is never reused.
    let written = crate::files::write_atomically(&key_path, key_pem.as_bytes(), true)
        .and_then(|()| {
            crate::files::write_atomically(cert_out, generated.cert.pem().as_bytes(), false)
        })
        .map_err(|(path, e)| format!("cannot write {}: {e}", path.display()));
    let key_der = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| invalid(format!("generated key unusable: {e}")))?;
    let certified =
        CertifiedKey::from_der(vec![generated.cert.der().clone()], key_der, &provider())
            .map_err(|e| invalid(e.to_string()))?;
    Ok((certified, written))
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    config: &Path,
) -> Result<CertifiedKey, ConfigError> {
    let chain = read_certificates(cert, config, "[tls] cert")?;
    let key_der = read_key(key, config)?;
    crate::key_file::warn_if_readable_by_others(key, "the TLS private key");
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        ConfigError::invalid(
            config,
            "[tls] key",
            format!(
                "{} does not fit the certificate {}: {e}",
                key.display(),
                cert.display()
            ),
        )
    })
}

fn server_config(
    certified: CertifiedKey,
) -> Result<(Arc<ServerConfig>, Arc<CertificateSlot>), rustls::Error> {
    let slot = Arc::new(CertificateSlot {
        current: ArcSwap::from_pointee(certified),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&slot) as Arc<dyn ResolvesServerCert>);
    // Without this, clients fall back to HTTP/1.1 and h2 silently disappears.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), slot))
}

/// Reads the PEM certificates in `path` (at least one); errors name `key`
/// in `config`.
pub(crate) fn read_certificates(
    path: &Path,
    config: &Path,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |m: String| ConfigError::invalid(config, key, m);
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            bad(format!(
                "{} is not a PEM certificate chain: {e}",
                path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(chain)
}

fn read_key(path: &Path, config: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let message = match e {
            rustls_pki_types::pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
            other => format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {other}",
                path.display()
            ),
        };
        ConfigError::invalid(config, "[tls] key", message)
    })
}

/// SHA-256 of a DER certificate as `AB:CD:...`, the form browsers show.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
