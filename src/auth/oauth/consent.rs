//! The pages the authorization endpoint shows a person, and the form
//! tokens that keep its consent form from being submitted by anyone else
//! (CSRF).
//!
//! Every page is built from fixed text and HTML-escaped values, and sent
//! with `X-Frame-Options: DENY`, a CSP that allows no script, style,
//! frame or foreign form target, `Cache-Control: no-store` and
//! `Referrer-Policy: no-referrer` (a code in a URL must not leak onward).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};
use ring::hmac;

use crate::sync::lock;

/// How long a consent form may be left open before it is submitted.
pub(super) const FORM_TTL: u64 = 600;
/// The most spent form tokens remembered (they expire after `FORM_TTL`):
/// about 40 MB at most, and 800 submissions a second, sustained, by
/// signed-in users, to fill.
const MAX_SPENT: usize = 500_000;
const NONCE: usize = 16;
const TAG: usize = 32;

/// Signed, single-use, short-lived form tokens, each bound to one user,
/// one client and one authorization request.
pub(super) struct FormTokens {
    key: hmac::Key,
    /// Nonces already used, until they expire.
    spent: Mutex<HashMap<[u8; NONCE], u64>>,
}

impl FormTokens {
    /// Under a random per-process key: a restart voids open forms.
    pub(super) fn new() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            spent: Mutex::default(),
        })
    }

    fn tag(
        &self,
        shared_key: Option<&[u8; 32]>,
        nonce: &[u8],
        expires: u64,
        user: &str,
        client: &str,
        request: &[u8; 32],
    ) -> hmac::Tag {
        // Replicas sharing a store share its key: a form shown by one is
        // accepted by another.
        let shared = shared_key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k));
        let mut context = hmac::Context::with_key(shared.as_ref().unwrap_or(&self.key));
        context.update(b"gatehouse consent form\0");
        context.update(nonce);
        context.update(&expires.to_be_bytes());
        // Length-prefixed: no two (user, client) pairs read the same.
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user.as_bytes());
        context.update(&(client.len() as u64).to_be_bytes());
        context.update(client.as_bytes());
        context.update(request);
        context.sign()
    }

    /// A token for the form `user` is shown for `client`'s `request`,
    /// under the shared key when there is one.
    pub(super) fn issue(
        &self,
        shared_key: Option<&[u8; 32]>,
        user: &str,
        client: &str,
        request: &[u8; 32],
        now: u64,
    ) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce)?;
        let expires = now.saturating_add(FORM_TTL);
        let tag = self.tag(shared_key, &nonce, expires, user, client, request);
        let mut bytes = Vec::with_capacity(NONCE + 8 + TAG);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&expires.to_be_bytes());
        bytes.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Whether `token` was issued for this user, client and request, has
    /// not expired and was not used before here; it is spent either way.
    /// Returns its nonce and expiry, for a shared store to spend it across
    /// replicas too.
    pub(super) fn redeem(
        &self,
        shared_key: Option<&[u8; 32]>,
        token: &str,
        user: &str,
        client: &str,
        request: &[u8; 32],
        now: u64,
    ) -> Option<([u8; NONCE], u64)> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != NONCE + 8 + TAG {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE);
        let (expires, tag) = rest.split_at(8);
        let expires = <[u8; 8]>::try_from(expires).map(u64::from_be_bytes).ok()?;
        if expires <= now || expires > now.saturating_add(FORM_TTL) {
            return None;
        }
        let expected = self.tag(shared_key, nonce, expires, user, client, request);
        let good: bool = subtle::ConstantTimeEq::ct_eq(expected.as_ref(), tag).into();
        if !good {
            return None;
        }
        let nonce = <[u8; NONCE]>::try_from(nonce).ok()?;
        let mut spent = lock(&self.spent);
        if spent.contains_key(&nonce) {
            return None;
        }
        if spent.len() >= MAX_SPENT {
            spent.retain(|_, until| *until > now);
            if spent.len() >= MAX_SPENT {
                // Fail closed: a token that cannot be marked spent could
                // be used again.
                return None;
            }
        }
        spent.insert(nonce, expires);
        Some((nonce, expires))
    }

    /// Forgets spent tokens that have expired anyway.
    pub(super) fn prune(&self, now: u64) {
        lock(&self.spent).retain(|_, until| *until > now);
    }
}

/// `text` with `& < > " '` escaped, for HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The CSP `form-action` sources for a consent form whose approval
/// redirects to `redirect_uri`: `'self'` and the redirect's origin, since
/// browsers apply `form-action` to the redirect that follows a submission.
/// `None` when the origin cannot be written as a CSP source (an IPv6
/// literal such as `[::1]`, which CSP host-sources do not accept): the
/// directive is then left out, or the redirect would be blocked. The page
/// has no script and every value is escaped, so no other form can appear.
pub(super) fn form_action(redirect_uri: &str) -> Option<String> {
    if redirect_uri == super::authorize::OOB {
        return Some("'self'".into());
    }
    let parsed: http::Uri = redirect_uri.parse().ok()?;
    let scheme = parsed.scheme_str()?;
    let authority = parsed.authority()?.as_str();
    authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        .then(|| format!("'self' {scheme}://{authority}"))
}

/// An HTML page with the security headers. `form_action`: the CSP's
/// `form-action` sources; `None` leaves the directive out.
pub(super) fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    form_action: Option<&str>,
) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    );
    let mut response = Response::new(Body::from(html));
    *response.status_mut() = status;
    let csp = format!(
        "default-src 'none';{} frame-ancestors 'none'; base-uri 'none'",
        form_action
            .map(|sources| format!(" form-action {sources};"))
            .unwrap_or_default()
    );
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::try_from(csp) {
        headers.insert(http::header::CONTENT_SECURITY_POLICY, csp);
    }
    security_headers(headers);
    response
}

/// The headers every answer of the authorization endpoint carries.
pub(super) fn security_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    crate::auth::response::no_store(headers);
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
}

/// What the consent page shows and submits.
pub(super) struct Consent<'a> {
    pub(super) user: &'a str,
    pub(super) client_name: &'a str,
    pub(super) scopes: &'a str,
    pub(super) redirect_uri: &'a str,
    /// The form's hidden fields: the request as validated, and the token.
    pub(super) fields: Vec<(&'static str, &'a str)>,
}

/// The consent page: who asks, for what, Approve or Deny.
pub(super) fn consent_page(consent: &Consent<'_>) -> Response {
    let client = escape(consent.client_name);
    let mut body = format!(
        "<h1>Authorize {client}?</h1>\n<p>You are signed in as <strong>{}</strong>. \
         <strong>{client}</strong> asks to act for you with these scopes:</p>\n<ul>\n",
        escape(consent.user)
    );
    for scope in consent.scopes.split(' ').filter(|s| !s.is_empty()) {
        let _ = writeln!(body, "<li>{}</li>", escape(scope));
    }
    let _ = write!(
        body,
        "</ul>\n<p>Approving sends you to <code>{}</code>.</p>\n\
         <form method=\"post\" action=\"{}\">\n",
        escape(consent.redirect_uri),
        super::AUTHORIZE_PATH
    );
    for (name, value) in &consent.fields {
        let _ = writeln!(
            body,
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        );
    }
    body.push_str(
        "<button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>\n",
    );
    page(
        StatusCode::OK,
        &format!("Authorize {}", consent.client_name),
        &body,
        form_action(consent.redirect_uri).as_deref(),
    )
}

/// The out-of-band page: the code, for the person to copy.
pub(super) fn code_page(client_name: &str, code: &str, ttl: u64) -> Response {
    let body = format!(
        "<h1>Authorization code</h1>\n<p>Copy this code and paste it into {}:</p>\n\
         <p><code id=\"authorization-code\">{}</code></p>\n\
         <p>It works once, within {ttl} seconds.</p>\n",
        escape(client_name),
        escape(code)
    );
    page(StatusCode::OK, "Authorization code", &body, Some("'self'"))
}

/// An error shown to the person, never sent to the client's redirect URI.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h1>This authorization request cannot go on</h1>\n<p>{}</p>\n",
        escape(message)
    );
    page(status, "Authorization error", &body, Some("'self'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_token_is_bound_and_works_once() {
        let forms = FormTokens::new().unwrap();
        let request = [7u8; 32];
        let token = forms.issue(None, "alice", "app", &request, 1000).unwrap();
        let redeem = |token: &str, user: &str, client: &str, request: &[u8; 32], now: u64| {
            forms.redeem(None, token, user, client, request, now)
        };
        assert!(
            redeem(&token, "bob", "app", &request, 1001).is_none(),
            "another user"
        );
        assert!(
            redeem(&token, "alice", "other", &request, 1001).is_none(),
            "another client"
        );
        assert!(
            redeem(&token, "alice", "app", &[8; 32], 1001).is_none(),
            "another request"
        );
        assert!(
            redeem(&token, "alice", "app", &request, 1000 + FORM_TTL).is_none(),
            "expired"
        );
        assert!(redeem(&token, "alice", "app", &request, 1001).is_some());
        assert!(
            redeem(&token, "alice", "app", &request, 1002).is_none(),
            "spent"
        );
        assert!(redeem("", "alice", "app", &request, 1002).is_none());
        assert!(redeem("%%%", "alice", "app", &request, 1002).is_none());
    }

    #[test]
    fn a_shared_key_makes_tokens_good_at_every_replica() {
        let one = FormTokens::new().unwrap();
        let two = FormTokens::new().unwrap();
        let request = [7u8; 32];
        let key = [9u8; 32];
        let own = one.issue(None, "alice", "app", &request, 1000).unwrap();
        assert!(
            two.redeem(None, &own, "alice", "app", &request, 1001)
                .is_none()
        );
        let shared = one
            .issue(Some(&key), "alice", "app", &request, 1000)
            .unwrap();
        assert!(
            two.redeem(None, &shared, "alice", "app", &request, 1001)
                .is_none()
        );
        assert!(
            two.redeem(Some(&key), &shared, "alice", "app", &request, 1001)
                .is_some()
        );
    }

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn form_action_allows_the_redirect_origin() {
        assert_eq!(
            form_action("http://127.0.0.1:8080/cb?x=1").as_deref(),
            Some("'self' http://127.0.0.1:8080")
        );
        assert_eq!(
            form_action("https://app.example/cb").as_deref(),
            Some("'self' https://app.example")
        );
        assert_eq!(
            form_action("urn:ietf:wg:oauth:2.0:oob").as_deref(),
            Some("'self'")
        );
        assert_eq!(form_action("http://[::1]:8080/cb"), None);
    }
}
