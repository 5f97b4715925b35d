//! Running argon2 off the async runtime, with bounded concurrency and a
//! bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use argon2::Block;
use tokio::sync::Semaphore;

use super::{CredentialStore, Scheme};
use crate::secret::Password;

/// Why a verification could not be carried out (as opposed to failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Too many verifications are already waiting for a slot.
    #[error("verification queue is full")]
    QueueFull,
    /// This verification waited longer than allowed for a slot.
    #[error("verification waited too long for a slot")]
    TimedOut,
    /// The blocking pool or the semaphore was shut down: the server is
    /// stopping.
    #[error("verification pool is unavailable")]
    Unavailable,
}

/// Runs argon2 verifications off the async runtime: at most
/// `max_concurrent` at a time, at most `max_waiting` queued behind them,
/// each waiting at most `max_wait`. Past those bounds a verification is
/// refused at once, so a flood costs neither unbounded memory nor latency.
#[derive(Clone)]
pub struct Verifier {
    /// Swapped whole on reload; a verification uses the store it started with.
    store: Arc<ArcSwap<CredentialStore>>,
    permits: Arc<Semaphore>,
    /// One argon2 work area per permit, reused: resident memory stays at
    /// `max_concurrent` × the largest `m_cost`, however many verifications run.
    memory: Arc<std::sync::Mutex<Vec<Vec<Block>>>>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    max_wait: Duration,
}

/// Decrements the waiting count however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Verifications that may wait for a slot, unless told otherwise.
pub const DEFAULT_QUEUE: usize = 64;
/// How long one may wait for a slot, unless told otherwise.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// Builds a [`Verifier`]: every setting has a default.
#[derive(Clone)]
pub struct VerifierBuilder {
    store: Arc<CredentialStore>,
    max_concurrent: usize,
    max_waiting: usize,
    max_wait: Duration,
}

impl VerifierBuilder {
    /// How many argon2 computations may run at once (at least 1; default:
    /// the number of cores). Each one holds a core and its `m_cost` of
    /// memory for its whole run (19 MiB at OWASP's parameters), so more
    /// than the cores only adds queueing inside the thread pool.
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent.max(1);
        self
    }

    /// How many verifications may wait for a slot (default
    /// [`DEFAULT_QUEUE`]) and for how long (default [`DEFAULT_MAX_WAIT`]);
    /// past either, a verification is refused at once (the layer answers
    /// 503).
    pub fn queue(mut self, max_waiting: usize, max_wait: Duration) -> Self {
        self.max_waiting = max_waiting;
        self.max_wait = max_wait;
        self
    }

    /// The verifier.
    pub fn build(self) -> Verifier {
        Verifier {
            store: Arc::new(ArcSwap::new(self.store)),
            permits: Arc::new(Semaphore::new(self.max_concurrent)),
            memory: Arc::new(std::sync::Mutex::new(Vec::new())),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: self.max_waiting,
            max_wait: self.max_wait,
        }
    }
}

/// The number of cores this process may use (1 if that cannot be known).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Verifier {
    /// A verifier over `store` with the defaults: as many argon2
    /// computations at once as there are cores, up to [`DEFAULT_QUEUE`]
    /// more waiting for at most [`DEFAULT_MAX_WAIT`].
    pub fn new(store: Arc<CredentialStore>) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`, to change the defaults of [`new`](Self::new).
    pub fn builder(store: Arc<CredentialStore>) -> VerifierBuilder {
        VerifierBuilder {
            store,
            max_concurrent: available_cores(),
            max_waiting: DEFAULT_QUEUE,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }

    /// This verifier (sharing its slots and queue count) with another queue
    /// bound and wait.
    pub fn with_queue(mut self, max_waiting: usize, max_wait: Duration) -> Self {
        self.max_waiting = max_waiting;
        self.max_wait = max_wait;
        self
    }

    /// The store this verifier checks against now.
    pub fn store(&self) -> Arc<CredentialStore> {
        self.store.load_full()
    }

    /// The store now, without touching its reference count: for the request
    /// path, which only needs it for the duration of one lookup.
    pub(crate) fn current_store(&self) -> arc_swap::Guard<Arc<CredentialStore>> {
        self.store.load()
    }

    /// Replaces the store (a reload): verifications that start from now on
    /// use `store`; clones of this verifier share the change.
    pub fn replace_store(&self, store: Arc<CredentialStore>) {
        self.store.store(store);
    }

    /// Verifies `password` for `username` on the blocking pool.
    pub async fn verify(&self, username: String, password: Password) -> Result<bool, VerifyError> {
        self.verify_timed(username, password).await.map(|v| v.ok)
    }

    /// Like [`verify`](Self::verify), also telling how long it took and
    /// what it was checked against.
    pub async fn verify_timed(
        &self,
        username: String,
        password: Password,
    ) -> Result<Verification, VerifyError> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(VerifyError::Unavailable),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(VerifyError::QueueFull);
                }
                let _waiting = Waiting(&self.waiting);
                tokio::time::timeout(self.max_wait, Arc::clone(&self.permits).acquire_owned())
                    .await
                    .map_err(|_| VerifyError::TimedOut)?
                    .map_err(|_| VerifyError::Unavailable)?
            }
        };
        let store = self.store.load_full();
        let pool = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = crate::sync::lock(&pool).pop().unwrap_or_default();
            let started = std::time::Instant::now();
            let ok = store.verify_with_memory(&username, &password, &mut memory);
            let took = started.elapsed();
            crate::sync::lock(&pool).push(memory);
            Verification {
                ok,
                took,
                scheme: store.scheme_of(&username),
                checked: store
                    .stored_hash(&username)
                    .map(|(_, fingerprint)| *fingerprint),
            }
        })
        .await
        .map_err(|_| VerifyError::Unavailable)
    }
}

/// What one verification found. The scheme and the fingerprint are those
/// of the hash the password was checked against, from the same snapshot of
/// the store: a reload between a caller's own look at the store and the
/// check would otherwise let the caller file a success (in the cache, in
/// the legacy-login counter) under the wrong hash.
pub struct Verification {
    /// Whether the password matched.
    pub ok: bool,
    /// How long the hash itself took (waiting for a slot excluded).
    pub took: Duration,
    /// The stored hash's scheme (`None`: an unknown user).
    pub scheme: Option<Scheme>,
    /// The stored hash's fingerprint (`None`: an unknown user).
    pub(crate) checked: Option<[u8; 32]>,
}

#[cfg(test)]
mod tests {
    use argon2::Params;

    use super::*;
    use crate::credentials::{hash_password, parse_phc};

    fn store_with(users: &[(&str, &str)]) -> CredentialStore {
        let cheap = Params::new(64, 1, 1, None).unwrap();
        CredentialStore::new(users.iter().map(|(u, p)| {
            let text = hash_password(&Password::new((*p).into()), cheap.clone()).unwrap();
            ((*u).to_owned(), parse_phc(&text).unwrap())
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn verifier_verifies_off_the_runtime() {
        let verifier = Verifier::builder(Arc::new(store_with(&[("alice", "secret")])))
            .max_concurrent(2)
            .build();
        let ok = verifier
            .verify("alice".into(), Password::new("secret".into()))
            .await;
        assert_eq!(ok, Ok(true));
        let unknown = verifier
            .verify("eve".into(), Password::new("secret".into()))
            .await;
        assert_eq!(unknown, Ok(false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifier_refuses_past_its_queue() {
        // A costly hash keeps the single slot busy while others queue.
        let slow = Params::new(32 * 1024, 4, 1, None).unwrap();
        let text = hash_password(&Password::new("pw".into()), slow).unwrap();
        let store =
            CredentialStore::new([("alice".to_owned(), parse_phc(&text).unwrap())]).unwrap();
        let verifier = Verifier::builder(Arc::new(store))
            .max_concurrent(1)
            .queue(2, Duration::from_secs(30))
            .build();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let v = verifier.clone();
                tokio::spawn(
                    async move { v.verify("alice".into(), Password::new("pw".into())).await },
                )
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let full = results
            .iter()
            .filter(|r| **r == Err(VerifyError::QueueFull))
            .count();
        let ok = results.iter().filter(|r| **r == Ok(true)).count();
        assert_eq!((ok, full), (3, 3), "{results:?}");

        let impatient = verifier.clone().with_queue(10, Duration::from_millis(1));
        let busy = verifier.clone();
        let hold = tokio::spawn(async move {
            busy.verify("alice".into(), Password::new("pw".into()))
                .await
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let timed_out = impatient
            .verify("alice".into(), Password::new("pw".into()))
            .await;
        assert_eq!(timed_out, Err(VerifyError::TimedOut));
        assert_eq!(hold.await.unwrap(), Ok(true));
    }
}
