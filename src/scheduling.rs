//! `[server] cpu_scheduling`: the scheduling policy of the binary's threads.
//!
//! Why it exists: beside a proxy on the same CPU (nginx `auth_request`),
//! each decision request wakes gatehouse, and under the default policy the
//! wake-up preempts the proxy halfway through its work: two context
//! switches per request for both. Under `SCHED_BATCH` a wake-up does not
//! preempt, so the proxy finishes its turn and gatehouse then answers all
//! the decisions waiting for it in one go (README, "Behind nginx").

use crate::config::CpuScheduling;

/// Applies `policy` to the calling thread, before the runtime starts: the
/// threads it starts later inherit it. `Default` changes nothing (a
/// process started under `chrt` keeps what it was given); `Batch`
/// replaces whatever policy the process had, a real-time one included.
pub fn apply(policy: CpuScheduling) -> std::io::Result<()> {
    match policy {
        CpuScheduling::Default => Ok(()),
        CpuScheduling::Batch => batch(),
    }
}

#[cfg(target_os = "linux")]
fn batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // pthread_setschedparam rather than sched_setscheduler: musl's
    // sched_setscheduler always fails with ENOSYS.
    // SAFETY: pthread_self() is the calling thread, alive for the call;
    // `param` is a valid sched_param that outlives it.
    let result =
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_BATCH, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(result))
    }
}

#[cfg(not(target_os = "linux"))]
fn batch() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SCHED_BATCH is Linux only",
    ))
}
