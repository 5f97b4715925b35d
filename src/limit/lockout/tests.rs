use super::*;

fn policy(max: u32) -> LockoutPolicy {
    LockoutPolicy {
        max_failures: max,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(30),
        max_tracked: 1000,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fail(l: &Lockouts, a: IpAddr, user: &str, now: Instant) -> Option<LockedOut> {
    let attempt = l.begin(a, user, now).expect("admitted");
    l.finish(attempt, false, now)
}

#[test]
fn locks_after_max_failures_and_unlocks_after_duration() {
    let l = Lockouts::new(policy(3));
    let (a, t0) = (ip("192.0.2.1"), Instant::now());
    assert_eq!(fail(&l, a, "alice", t0), None);
    assert_eq!(fail(&l, a, "alice", t0), None);
    assert_eq!(fail(&l, a, "alice", t0), Some(LockedOut::Both));
    assert_eq!(
        l.begin(a, "alice", t0).unwrap_err(),
        Refusal::Locked(Duration::from_secs(30))
    );
    assert_eq!(
        l.address_locked(a, t0 + Duration::from_secs(10)),
        Some(Duration::from_secs(20))
    );
    // Another username from the same address is locked too (address record).
    assert!(matches!(l.begin(a, "bob", t0), Err(Refusal::Locked(_))));
    let later = t0 + Duration::from_secs(31);
    assert_eq!(l.address_locked(a, later), None);
    let attempt = l.begin(a, "alice", later).expect("verification resumes");
    assert_eq!(l.finish(attempt, true, later), None);
}

#[test]
fn another_address_is_not_locked_out() {
    let l = Lockouts::new(policy(2));
    let t0 = Instant::now();
    fail(&l, ip("192.0.2.1"), "alice", t0);
    fail(&l, ip("192.0.2.1"), "alice", t0);
    assert!(l.begin(ip("192.0.2.1"), "alice", t0).is_err());
    // The owner of "alice" elsewhere is unaffected by the attacker's failures.
    let attempt = l
        .begin(ip("192.0.2.2"), "alice", t0)
        .expect("other address admitted");
    l.finish(attempt, true, t0);
}

#[test]
fn pending_attempts_count_against_the_bound() {
    let l = Lockouts::new(policy(2));
    let (a, t0) = (ip("192.0.2.1"), Instant::now());
    let first = l.begin(a, "x", t0).unwrap();
    let second = l.begin(a, "y", t0).unwrap();
    assert_eq!(l.begin(a, "z", t0).unwrap_err(), Refusal::Busy);
    l.finish(first, true, t0);
    l.finish(second, true, t0);
    assert!(l.begin(a, "z", t0).is_ok());
}

#[test]
fn success_does_not_reset_the_address_record() {
    let l = Lockouts::new(policy(3));
    let (a, t0) = (ip("192.0.2.1"), Instant::now());
    fail(&l, a, "victim", t0);
    fail(&l, a, "victim", t0);
    let own = l.begin(a, "attacker", t0).unwrap();
    l.finish(own, true, t0);
    assert_eq!(fail(&l, a, "victim", t0), Some(LockedOut::Both));
}

#[test]
fn failures_outside_the_window_are_forgotten() {
    let l = Lockouts::new(policy(2));
    let (a, t0) = (ip("192.0.2.1"), Instant::now());
    fail(&l, a, "alice", t0);
    assert_eq!(fail(&l, a, "alice", t0 + Duration::from_secs(61)), None);
}

#[test]
fn disabled_when_max_failures_is_zero() {
    let l = Lockouts::new(policy(0));
    let (a, t0) = (ip("192.0.2.1"), Instant::now());
    for _ in 0..10 {
        assert_eq!(fail(&l, a, "alice", t0), None);
    }
    assert_eq!(l.tracked(), (0, 0));
}

#[test]
fn memory_stays_bounded_under_a_million_addresses() {
    let mut p = policy(5);
    p.max_tracked = 10_000;
    let l = Lockouts::new(p);
    let t0 = Instant::now();
    for i in 0..1_000_000u32 {
        let a = IpAddr::from(i.to_be_bytes());
        fail(&l, a, "alice", t0);
    }
    let (addresses, users) = l.tracked();
    assert!(
        addresses <= 10_000 && users <= 10_000,
        "{addresses} {users}"
    );
    l.prune(t0 + Duration::from_secs(3600));
    assert_eq!(l.tracked(), (0, 0));
}

#[test]
fn locked_records_survive_a_flood_of_new_addresses() {
    let mut p = policy(1);
    p.max_tracked = 100;
    let l = Lockouts::new(p);
    let t0 = Instant::now();
    let attacker = ip("198.51.100.1");
    fail(&l, attacker, "alice", t0);
    for i in 0..10_000u32 {
        let a = IpAddr::from((i + 1).to_be_bytes());
        if let Ok(attempt) = l.begin(a, "alice", t0) {
            l.finish(attempt, true, t0);
        }
    }
    assert!(matches!(
        l.begin(attacker, "alice", t0),
        Err(Refusal::Locked(_))
    ));
}

#[test]
fn a_table_full_of_live_locks_fails_closed_for_new_addresses() {
    let mut p = policy(1);
    p.max_tracked = 10;
    let l = Lockouts::new(p);
    let t0 = Instant::now();
    // Ten addresses, each locked out by one failure: every record is live.
    for i in 0..10u32 {
        let a = IpAddr::from((i + 1).to_be_bytes());
        fail(&l, a, "alice", t0);
    }
    // Before the fix a new address went on untracked, so it could guess
    // without limit while the table stayed full.
    let newcomer = ip("203.0.113.50");
    assert_eq!(l.begin(newcomer, "alice", t0).unwrap_err(), Refusal::Full);
    // Once the locks expire, the newcomer is tracked again.
    let later = t0 + Duration::from_secs(3600);
    let attempt = l.begin(newcomer, "alice", later).expect("room again");
    l.finish(attempt, false, later);
    assert!(l.address_locked(newcomer, later).is_some());
}

#[test]
fn unknown_address_failures_are_per_user_and_a_login_does_not_clear_them() {
    let l = Lockouts::new(policy(3));
    let now = Instant::now();
    let attempt = |user: &str, ok: bool| {
        let a = l.begin_unknown_address(user, now).unwrap();
        l.finish(a, ok, now)
    };
    assert_eq!(attempt("bob", false), None);
    assert_eq!(attempt("bob", false), None);
    // bob's own login, between the attacker's guesses, clears nothing.
    assert_eq!(attempt("bob", true), None);
    assert_eq!(attempt("bob", false), Some(LockedOut::User));
    assert!(matches!(
        l.begin_unknown_address("bob", now),
        Err(Refusal::Locked(_))
    ));
    // Another user, and the address table, are untouched.
    assert!(l.begin_unknown_address("alice", now).is_ok());
    assert_eq!(l.tracked().0, 0);
}

#[test]
fn the_lock_free_check_sees_every_lock_and_is_free_while_none() {
    let lockouts = Lockouts::new(LockoutPolicy {
        max_failures: 2,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(60),
        max_tracked: 100,
    });
    let address: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(lockouts.address_locked_now(address), None);
    let now = Instant::now();
    for _ in 0..2 {
        let attempt = lockouts.begin(address, "alice", now).unwrap();
        let _ = lockouts.finish(attempt, false, now);
    }
    assert!(lockouts.address_locked_now(address).is_some());
    // Pruning keeps a live lock, and the check still sees it.
    lockouts.prune(Instant::now());
    assert!(lockouts.address_locked_now(address).is_some());
    // Once everything is stale and pruned, a new record is seen again.
    let later = now + Duration::from_secs(200);
    lockouts.prune(later);
    assert_eq!(lockouts.tracked().0, 0);
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    for _ in 0..2 {
        let attempt = lockouts.begin(other, "bob", later).unwrap();
        let _ = lockouts.finish(attempt, false, later);
    }
    assert!(lockouts.address_locked_now(other).is_some());
}
