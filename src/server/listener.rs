//! What a server accepts connections on: a TCP listener, or a Unix socket
//! whose file it made and removes again.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::ListenAddress;

/// A bound listener.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket (its file is removed when this is dropped).
    Unix(UnixSocket),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

/// An accepted connection.
pub(super) enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    /// Binds `address`. A Unix socket file left behind by a process that
    /// is gone is replaced; one another process still listens on, or a
    /// file that is not a socket, is an error.
    pub async fn bind(address: &ListenAddress) -> io::Result<Self> {
        match address {
            ListenAddress::Tcp(addr) => TcpListener::bind(addr).await.map(Self::Tcp),
            ListenAddress::Unix { path, mode } => UnixSocket::bind(path, *mode).map(Self::Unix),
        }
    }

    /// What it listens on, as a log line or a URL would name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            Self::Unix(socket) => format!("unix:{}", socket.path.display()),
        }
    }

    /// The TCP address, if it is a TCP listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(listener) => listener.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }

    pub(super) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(listener) => listener
                .accept()
                .await
                .map(|(tcp, peer)| Accepted::Tcp(tcp, peer)),
            Self::Unix(socket) => socket
                .listener
                .accept()
                .await
                .map(|(stream, _)| Accepted::Unix(stream)),
        }
    }
}

/// A listening Unix socket and its file.
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The file's device and inode when it was made: only that file is
    /// removed at the end (not one a later instance put in its place).
    identity: (u64, u64),
}

impl UnixSocket {
    fn bind(path: &Path, mode: u32) -> io::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the file exists and is not a socket (not removed)",
                ));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process listens on this socket",
                    ));
                }
                // Left behind by a process that is gone: nobody answers.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        let meta = std::fs::symlink_metadata(path)?;
        let socket = Self {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        };
        // The file is made under the umask (usually 755: only the owner may
        // connect), and only then opened up to `mode`: never wider between.
        // On failure `socket` is dropped, and the file with it.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(socket)
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
