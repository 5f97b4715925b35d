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

/// A router serving `settings.root` as its fallback.
pub fn router<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    settings: StaticSettings,
) -> Router<S> {
    let serve = ServeDir::new(&settings.root).append_index_html_on_directories(true);
    router.fallback_service(
        Router::new()
            .fallback_service(serve)
            .layer(middleware::from_fn_with_state(Arc::new(settings), check)),
    )
}

/// Refuses (404, as if absent) what the settings do not allow. The path is
/// already canonical (the auth layer made it so), so a dot segment cannot
/// hide behind an escape here. `/.well-known/` (ACME challenges,
/// `security.txt`) is not a dotfile.
async fn check(State(settings): State<Arc<StaticSettings>>, req: Request, next: Next) -> Response {
    let segments: Vec<Vec<u8>> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(crate::path::decode_segment)
        .collect();
    let dotfile = segments
        .iter()
        .enumerate()
        .any(|(i, s)| s.first() == Some(&b'.') && !(i == 0 && s == b".well-known"));
    if dotfile && !settings.allow_dotfiles {
        return not_found();
    }
    if !settings.follow_symlinks_outside_root {
        let root = settings.root.clone();
        let inside = tokio::task::spawn_blocking(move || stays_inside(&root, &segments))
            .await
            .unwrap_or(false);
        if !inside {
            return not_found();
        }
    }
    next.run(req).await
}

/// Whether the file the segments name (and, for a directory, its
/// `index.html`) resolves to a place inside `root`, itself resolved now (a
/// deploy may have swapped a `current -> releases/N` link). A path that
/// does not exist is left to ServeDir, which answers 404. One blocking
/// call: it stats the file system several times.
fn stays_inside(root: &Path, segments: &[Vec<u8>]) -> bool {
    let Ok(real_root) = root.canonicalize() else {
        return false;
    };
    let mut full = root.to_path_buf();
    for segment in segments {
        full.push(os_str(segment));
    }
    let Ok(real) = full.canonicalize() else {
        return true;
    };
    if !real.starts_with(&real_root) {
        return false;
    }
    if real.is_dir()
        && let Ok(index) = real.join("index.html").canonicalize()
    {
        return index.starts_with(&real_root);
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
