//! Private key files on disk (TLS keys, token signing keys).

/// Warns when a private key file (`what`, for the message) can be read by
/// its group or by everyone. Called wherever a key file is read: at
/// start-up and on every reload.
pub(crate) fn warn_if_readable_by_others(path: &std::path::Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    key = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "{what} is readable by its group or by everyone: `chmod 600` it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}
