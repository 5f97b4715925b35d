//! Files from a directory (`[static]`), behind two checks ServeDir does not
//! make: no dotfiles (`.git/`, `.env`, `.htpasswd`) and no symlinks that
//! lead out of the root, unless the config allows them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tower_http::services::ServeDir;

/// `[static]`: where the files are and what may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSettings {
    /// The directory served.
    pub root: PathBuf,
    /// Serve files and directories whose name starts with `.`.
    pub allow_dotfiles: bool,
    /// Follow symlinks that lead outside `root`.
    pub follow_symlinks_outside_root: bool,
}

struct Guard {
    settings: StaticSettings,
    /// `root` with every symlink resolved, to compare resolved paths with.
    real_root: PathBuf,
}

/// A router serving `settings.root` as its fallback.
pub fn router<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    settings: StaticSettings,
) -> Router<S> {
    let real_root = settings
        .root
        .canonicalize()
        .unwrap_or_else(|_| settings.root.clone());
    let serve = ServeDir::new(&settings.root).append_index_html_on_directories(true);
    let guard = Arc::new(Guard {
        settings,
        real_root,
    });
    router.fallback_service(
        Router::new()
            .fallback_service(serve)
            .layer(middleware::from_fn_with_state(guard, check)),
    )
}

/// Refuses (404, as if absent) what the settings do not allow. The path is
/// already canonical (the auth layer made it so), so a dot segment cannot
/// hide behind an escape here.
async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let segments: Vec<Vec<u8>> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(crate::path::decode_segment)
        .collect();
    if !guard.settings.allow_dotfiles && segments.iter().any(|s| s.first() == Some(&b'.')) {
        return not_found();
    }
    if !guard.settings.follow_symlinks_outside_root {
        let mut full = guard.settings.root.clone();
        for segment in &segments {
            full.push(os_str(segment));
        }
        if !stays_inside(&guard.real_root, &full).await {
            return not_found();
        }
    }
    next.run(req).await
}

/// Whether `full` (and, for a directory, its `index.html`) resolves to a
/// place inside `real_root`. A path that does not exist is left to
/// ServeDir, which answers 404.
async fn stays_inside(real_root: &Path, full: &Path) -> bool {
    let Ok(real) = tokio::fs::canonicalize(full).await else {
        return true;
    };
    if !real.starts_with(real_root) {
        return false;
    }
    if real.is_dir()
        && let Ok(index) = tokio::fs::canonicalize(real.join("index.html")).await
    {
        return index.starts_with(real_root);
    }
    true
}

#[cfg(unix)]
fn os_str(bytes: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::OsStr::from_bytes(bytes)
}

#[cfg(not(unix))]
fn os_str(bytes: &[u8]) -> std::ffi::OsString {
    String::from_utf8_lossy(bytes).into_owned().into()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 Not Found\n").into_response()
}
