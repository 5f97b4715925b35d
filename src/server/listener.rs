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
            ListenAddress::Unix { path, mode } => {
                UnixSocket::bind(path, *mode).await.map(Self::Unix)
            }
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
    /// Binds `path`. The socket is made in a fresh private folder beside
    /// it and given `mode` there, so it is never reachable with wider
    /// permissions (whatever the umask), then hard-linked into place, which
    /// fails rather than replace anything that appeared meanwhile. The
    /// folder it is in must not be writable by others (unless sticky):
    /// they could swap the private folder, or the socket, by name.
    async fn bind(path: &Path, mode: u32) -> io::Result<Self> {
        let stale = match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the file exists and is not a socket (not removed)",
                ));
            }
            Ok(meta) => {
                // A live socket answers, or with a full backlog refuses
                // to wait (EAGAIN); one left behind by a process that is
                // gone refuses the connection.
                let probe = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    UnixStream::connect(path),
                )
                .await;
                match probe {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another process listens on this socket",
                        ));
                    }
                }
                Some((meta.dev(), meta.ino()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let private = Private::create(parent)?;
        let ours = std::fs::symlink_metadata(&private.0)?.uid();
        let folder = std::fs::metadata(parent)?;
        let shared = folder.mode() & 0o022 != 0 && folder.mode() & 0o1000 == 0;
        if shared || (folder.uid() != ours && folder.uid() != 0) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "its folder can be written by another user (and is not sticky): the socket could be swapped",
            ));
        }
        let staged = private.0.join("s");
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        let meta = std::fs::symlink_metadata(&staged)?;
        if let Some(identity) = stale {
            // Only the file that was probed: not one put there since.
            let now = std::fs::symlink_metadata(path)?;
            if (now.dev(), now.ino()) == identity {
                std::fs::remove_file(path)?;
            }
        }
        std::fs::hard_link(&staged, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process made this file while gatehouse was binding it",
                )
            } else {
                e
            }
        })?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        })
    }
}

/// A folder only this process may enter, removed (with whatever is left
/// in it) when dropped.
struct Private(PathBuf);

impl Private {
    fn create(parent: &Path) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let name = format!(
            ".gatehouse-{:x}-{}",
            std::process::id(),
            crate::hex::encode(&random)
        );
        let dir = parent.join(name);
        // mkdir fails on anything already there, a symlink included.
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
