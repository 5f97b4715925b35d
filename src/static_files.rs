//! Files from a directory (`[static]`), behind two checks ServeDir does not
//! make: no dotfiles (`.git/`, `.env`, `.htpasswd`) and no symlinks that
//! lead out of the root, unless the config allows them.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tower_http::services::ServeDir;

pub use crate::config::StaticSettings;

/// A router serving `settings.root` as its fallback.
pub fn router<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    settings: StaticSettings,
) -> Router<S> {
    // 16 KiB read chunks (64 KiB by default): what a response the client
    // is slow to take pins, per stream, until send_timeout.
    let serve = ServeDir::new(&settings.root)
        .append_index_html_on_directories(true)
        .with_buf_chunk_size(16 * 1024);
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
    if !(settings.follow_symlinks_outside_root && settings.allow_dotfiles) {
        let settings = Arc::clone(&settings);
        let allowed =
            tokio::task::spawn_blocking(move || resolves_to_allowed(&settings, &segments))
                .await
                .unwrap_or(false);
        if !allowed {
            return not_found();
        }
    }
    next.run(req).await
}

/// Whether the file the segments name (and, for a directory, its
/// `index.html`) resolves, through any symlinks, to a place the settings
/// allow: inside `root` (itself resolved now: a deploy may have swapped a
/// `current -> releases/N` link), and not a dotfile there (a link named
/// `notes.txt` may point at `.env`). A path that does not exist is left to
/// ServeDir, which answers 404. One blocking call: it stats the file system
/// several times.
fn resolves_to_allowed(settings: &StaticSettings, segments: &[Vec<u8>]) -> bool {
    let Ok(real_root) = settings.root.canonicalize() else {
        return false;
    };
    let mut full = settings.root.clone();
    for segment in segments {
        full.push(os_str(segment));
    }
    let Ok(real) = full.canonicalize() else {
        return true;
    };
    let allowed = |real: &Path| match real.strip_prefix(&real_root) {
        Err(_) => settings.follow_symlinks_outside_root,
        Ok(inside) => settings.allow_dotfiles || !has_dotfile(inside),
    };
    if !allowed(&real) {
        return false;
    }
    if real.is_dir()
        && let Ok(index) = real.join("index.html").canonicalize()
    {
        return allowed(&index);
    }
    true
}

/// Whether a path relative to the root has a component starting with `.`
/// (other than a leading `.well-known`).
fn has_dotfile(relative: &Path) -> bool {
    relative.components().enumerate().any(|(i, c)| {
        let name = c.as_os_str().as_encoded_bytes();
        name.first() == Some(&b'.') && !(i == 0 && name == b".well-known")
    })
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
