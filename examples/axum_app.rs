//! gatehouse's layer in your own axum app.
//!
//! Run it with `cargo run --example axum_app`, then
//! `curl -u alice:correct-horse http://127.0.0.1:3000/`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{Router, routing::get};
use gatehouse::auth::{AuthenticatedUser, BasicAuthLayer};
use gatehouse::credentials::{CredentialStore, Verifier, default_params, hash_password, parse_phc};
use gatehouse::secret::Password;

async fn hello(user: AuthenticatedUser) -> String {
    format!("hi {}\n", user.name())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real app loads its hashes (`gatehouse hash-password` prints one):
    // `CredentialStore::from_users_file("users")` reads `name:$argon2id$...`
    // lines. Here alice's hash is made in code, with OWASP's parameters.
    let alice = hash_password(&Password::new("correct-horse".into()), default_params())?;
    let store = CredentialStore::new([("alice".to_owned(), parse_phc(&alice)?)])?;

    // Verifications run at most one per core at once; rate limits and
    // lockouts have safe defaults (see BasicAuthLayer::builder).
    let auth = BasicAuthLayer::builder("my app", Verifier::new(Arc::new(store)))
        .public_paths(["/healthz"])
        .build()?;

    let app = Router::new()
        .route("/", get(hello))
        .route("/healthz", get(|| async { "ok\n" }))
        // `layer`, not `route_layer`: unknown paths get 401, not 404.
        .layer(auth);

    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // With connect info, limits and lockouts can tell clients apart.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
