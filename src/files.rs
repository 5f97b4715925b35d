//! Writing files that others read: whole or not at all, never through a
//! planted name.

use std::path::{Path, PathBuf};

/// 16 random hex digits, for file names nobody can guess in advance.
pub(crate) fn random_suffix() -> std::io::Result<String> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(crate::hex::encode(&random))
}

/// Writes `bytes` to a new temporary file beside `path` (a random name,
/// created exclusively, so no planted file or symlink is followed; mode
/// 0600 on Unix when `private`), then renames it over `path`: a reader sees
/// the old file or the new one, never half of one. The temporary file is
/// removed if anything fails.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    private: bool,
) -> Result<(), (PathBuf, std::io::Error)> {
    let fail = |e| (path.to_owned(), e);
    let suffix = random_suffix().map_err(fail)?;
    let name = path
        .file_name()
        .map_or_else(|| "gatehouse".into(), |n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(".{name}.{suffix}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let written = options.open(&temp).and_then(|mut file| {
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    });
    let result = written.and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(fail)
}
