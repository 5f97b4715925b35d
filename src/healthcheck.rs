//! `gatehouse healthcheck`: asks the local server's `/healthz` whether it is
//! up, for container health checks in images that have no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use gatehouse::config::{Config, TlsSettings};

/// Why the server is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// No connection, no TLS, or no answer in time.
    #[error("{addr}: {reason}")]
    Unreachable {
        /// Where it looked.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// An answer other than 200.
    #[error("{addr}: /healthz answered `{status}`")]
    Status {
        /// Where it looked.
        addr: SocketAddr,
        /// The status line.
        status: String,
    },
}

/// Where the server of `config` can be reached from this host: its listen
/// address, with an unspecified IP replaced by loopback.
pub fn local_addr(config: &Config) -> SocketAddr {
    let listen = config.server.listen;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `/healthz` on `addr` within `timeout`. The certificate is not
/// verified: this asks our own process over loopback whether it answers,
/// and its certificate names the public host, not 127.0.0.1.
pub async fn check(addr: SocketAddr, tls: bool, timeout: Duration) -> Result<(), Unhealthy> {
    let unreachable = |reason: String| Unhealthy::Unreachable { addr, reason };
    let status = tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        if tls {
            let config = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate))
                .with_no_client_auth();
            let name = ServerName::from(addr.ip());
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            status_line(stream).await
        } else {
            status_line(tcp).await
        }
    })
    .await
    .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
    .map_err(unreachable)?;
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(Unhealthy::Status { addr, status })
    }
}

/// Whether `config` serves TLS.
pub fn uses_tls(config: &Config) -> bool {
    !matches!(config.tls, TlsSettings::Disabled)
}

async fn status_line<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<String, String> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    while len < buf.len() {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 || buf[..len + n].contains(&b'\n') {
            len += n;
            break;
        }
        len += n;
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        gatehouse::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
