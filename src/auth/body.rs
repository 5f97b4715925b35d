//! Reading the small bodies the layer's own endpoints take (a login, a
//! token request): bounded in size and in time, wiped when dropped.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};

/// The largest body an endpoint of the layer reads.
pub const MAX_BODY: usize = 8 * 1024;
/// How long such a body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the request's `Content-Type` is `expected` (parameters such as
/// `charset` ignored, case-insensitive).
pub(super) fn has_media_type(headers: &http::HeaderMap, expected: &str) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// Why a body could not be read.
pub(super) enum BodyError {
    /// Longer than [`MAX_BODY`].
    TooLarge,
    /// Not all there within [`BODY_TIMEOUT`].
    TooSlow,
    /// Reset, badly chunked, or otherwise broken.
    Unreadable,
}

/// Reads `body` whole, within the bounds.
pub(super) async fn read<B>(body: B) -> Result<zeroize::Zeroizing<Vec<u8>>, BodyError>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(Body::new(body), MAX_BODY),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(zeroize::Zeroizing::new(bytes.to_vec())),
        Ok(Err(error)) => {
            // http-body-util's LengthLimitError says "length limit
            // exceeded"; anything else (a reset, bad chunking) is broken.
            let too_large =
                std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                    .any(|e| e.to_string().contains("length limit exceeded"));
            Err(if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable
            })
        }
        Err(_) => Err(BodyError::TooSlow),
    }
}
