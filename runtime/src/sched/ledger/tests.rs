use super::*;
use crate::sched::{capacity::Reserve, key::Kind};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn ledger(memory_bytes: u64) -> Ledger {
    let total = Capacity {
        cpu_millis: 4000,
        memory_bytes,
        pids: 1000,
    };
    let none = Reserve {
        memory_percent: 0,
        memory_bytes: 0,
        cpu_millis: 0,
        pids: 0,
    };
    Ledger::new(NodeCapacity::new(total, &none))
}

fn mem(bytes: u64) -> Requests {
    Requests {
        cpu_millis: 100,
        memory_bytes: bytes,
        pids: 10,
    }
}

fn service(name: &str) -> InstanceKey {
    InstanceKey::new(Kind::Service, "shop", name, 0)
}

fn function(name: &str) -> InstanceKey {
    InstanceKey::new(Kind::Function, "shop", name, 0)
}

fn cache(name: &str) -> InstanceKey {
    InstanceKey::new(Kind::Cache, "shop", name, 0)
}

#[track_caller]
fn admitted(admission: Result<Admission>) -> Reservation {
    match admission.unwrap() {
        Admission::Admitted(reservation) => reservation,
        other => panic!("expected admitted, got {other:?}"),
    }
}

#[track_caller]
fn pending(admission: Result<Admission>) -> Shortfall {
    match admission.unwrap() {
        Admission::Pending { reason } => reason,
        other => panic!("expected pending, got {other:?}"),
    }
}

#[track_caller]
fn victims(admission: Result<Admission>) -> Vec<InstanceKey> {
    match admission.unwrap() {
        Admission::NeedsEviction { victims } => victims,
        other => panic!("expected eviction, got {other:?}"),
    }
}

fn keys(reservations: &[Reservation]) -> Vec<String> {
    reservations.iter().map(|r| r.key().to_string()).collect()
}

#[test]
fn admits_what_fits_and_counts_it() {
    let ledger = ledger(GIB);
    let held = admitted(ledger.admit(service("db"), mem(256 * MIB)));
    assert_eq!(held.key(), &service("db"));
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.used.memory_bytes, 256 * MIB);
    assert_eq!(snapshot.free.memory_bytes, 768 * MIB);
    assert_eq!(snapshot.free.cpu_millis, 3900);
    assert_eq!(snapshot.reserved.len(), 1);
}

#[test]
fn a_request_larger_than_the_node_is_rejected_for_good() {
    let ledger = ledger(22 * GIB + GIB / 10 + 1);
    let error = ledger.admit(service("cache"), mem(64 * GIB)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "service shop/cache asks for 64 GiB of memory, more than the node's 22.1 GiB after the \
         reserve; lower memory in the manifest"
    );
    let cpu = Requests {
        cpu_millis: 8000,
        ..mem(0)
    };
    let error = ledger.admit(service("cache"), cpu).unwrap_err();
    assert!(error.to_string().contains("asks for 8 CPUs"), "{error}");
    assert!(ledger.snapshot().pending.is_empty(), "never queued");
}

#[test]
fn what_fits_the_node_but_not_now_waits_with_a_reason() {
    let ledger = ledger(GIB);
    let _held = admitted(ledger.admit(service("db"), mem(GIB - 120 * MIB)));
    let reason = pending(ledger.admit(service("web"), mem(512 * MIB)));
    assert_eq!(
        reason.to_string(),
        "waiting for 512 MiB of memory; 120 MiB free"
    );
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.pending.len(), 1);
    assert_eq!(snapshot.pending[0].reason, reason.to_string());
}

#[test]
fn a_reason_names_every_short_resource() {
    let ledger = ledger(GIB);
    let _held = admitted(ledger.admit(service("db"), mem(GIB)));
    let both = Requests {
        cpu_millis: 3950,
        memory_bytes: MIB,
        pids: 1,
    };
    let reason = pending(ledger.admit(service("web"), both));
    assert_eq!(
        reason.to_string(),
        "waiting for 3950m of CPU and 1 MiB of memory; 3900m and 0 bytes free"
    );
}

#[test]
fn a_key_cannot_hold_two_reservations() {
    let ledger = ledger(GIB);
    let _held = admitted(ledger.admit(service("db"), mem(MIB)));
    let error = ledger.admit(service("db"), mem(MIB)).unwrap_err();
    assert_eq!(error, Rejection::AlreadyAdmitted { key: service("db") });
}

#[test]
fn asking_again_keeps_a_waiters_place_and_cancel_removes_it() {
    let ledger = ledger(GIB);
    let _held = admitted(ledger.admit(service("db"), mem(GIB)));
    pending(ledger.admit(service("a"), mem(MIB)));
    pending(ledger.admit(service("b"), mem(MIB)));
    pending(ledger.admit(service("a"), mem(MIB)));
    let order: Vec<_> = (ledger.snapshot().pending.iter())
        .map(|p| p.key.workload.clone())
        .collect();
    assert_eq!(order, ["a", "b"]);
    assert!(ledger.cancel(&service("a")));
    assert!(!ledger.cancel(&service("a")));
    assert_eq!(ledger.snapshot().pending.len(), 1);
}

#[test]
fn release_hands_capacity_to_the_oldest_waiter_that_now_fits() {
    let ledger = ledger(1000 * MIB);
    let a = admitted(ledger.admit(service("a"), mem(500 * MIB)));
    let x = admitted(ledger.admit(service("x"), mem(500 * MIB)));
    pending(ledger.admit(service("big"), mem(800 * MIB)));
    pending(ledger.admit(service("mid"), mem(400 * MIB)));
    pending(ledger.admit(service("small"), mem(300 * MIB)));

    let granted = ledger.release(x);
    assert_eq!(
        keys(&granted),
        ["service shop/mid#0"],
        "big does not fit yet"
    );
    let granted_later = ledger.release(a);
    assert_eq!(keys(&granted_later), ["service shop/small#0"]);
    drop(granted);
    assert!(
        ledger.take_admitted().is_empty(),
        "700 MiB free, big needs 800"
    );
    drop(granted_later);
    let last = ledger.take_admitted();
    assert_eq!(keys(&last), ["service shop/big#0"], "a drop hands out too");
    assert!(ledger.snapshot().pending.is_empty());
}

#[test]
fn release_serves_higher_priorities_first() {
    let ledger = ledger(GIB);
    let held = admitted(ledger.admit(service("db"), mem(GIB)));
    pending(ledger.admit(function("api"), mem(GIB)));
    pending(ledger.admit(service("web"), mem(GIB)));
    let granted = ledger.release(held);
    assert_eq!(keys(&granted), ["service shop/web#0"]);
    let order: Vec<_> = ledger
        .snapshot()
        .pending
        .iter()
        .map(|p| p.priority)
        .collect();
    assert_eq!(order, [Priority::Function]);
}

#[test]
fn a_dropped_reservation_gives_its_capacity_back() {
    let ledger = ledger(GIB);
    {
        let _held = admitted(ledger.admit(service("db"), mem(GIB)));
        pending(ledger.admit(service("web"), mem(GIB / 2)));
        // The instance's task panics or returns early: the guard still drops.
    }
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.used.memory_bytes, GIB / 2, "web took half");
    let taken = ledger.take_admitted();
    assert_eq!(keys(&taken), ["service shop/web#0"]);
    assert!(ledger.take_admitted().is_empty());
    drop(taken);
    assert_eq!(ledger.snapshot().used, Capacity::ZERO);
}

#[test]
fn a_reservation_dropped_in_a_panicking_thread_is_released() {
    let ledger = ledger(GIB);
    let held = admitted(ledger.admit(service("db"), mem(GIB)));
    let outcome = std::thread::spawn(move || {
        let _held = held;
        panic!("instance crashed");
    })
    .join();
    assert!(outcome.is_err());
    assert_eq!(ledger.snapshot().used, Capacity::ZERO);
}

/// Fills a 1000 MiB node: a busy service (200), an idle cache (200), two idle function
/// instances (300 each, `old` idle before `new`).
fn crowded() -> (Ledger, Vec<Reservation>) {
    let ledger = ledger(1000 * MIB);
    let db = admitted(ledger.admit(service("db"), mem(200 * MIB)));
    let new = admitted(ledger.admit(function("new"), mem(300 * MIB)));
    let old = admitted(ledger.admit(function("old"), mem(300 * MIB)));
    let code = admitted(ledger.admit(cache("code"), mem(200 * MIB)));
    old.set_idle(true);
    new.set_idle(true);
    code.set_idle(true);
    (ledger, vec![db, new, old, code])
}

#[test]
fn a_service_that_does_not_fit_names_caches_then_longest_idle_functions() {
    let (ledger, _held) = crowded();
    let named = victims(ledger.admit(service("web"), mem(400 * MIB)));
    assert_eq!(named, [cache("code"), function("old")]);
}

#[test]
fn eviction_takes_only_as_many_victims_as_needed() {
    let (ledger, _held) = crowded();
    let named = victims(ledger.admit(service("web"), mem(150 * MIB)));
    assert_eq!(named, [cache("code")]);
    let named = victims(ledger.admit(service("web"), mem(600 * MIB)));
    assert_eq!(
        named,
        [function("old"), function("new")],
        "code already named"
    );
}

#[test]
fn a_function_may_evict_caches_but_not_other_functions() {
    let (ledger, _held) = crowded();
    let named = victims(ledger.admit(function("api"), mem(200 * MIB)));
    assert_eq!(named, [cache("code")]);
    pending(ledger.admit(function("api2"), mem(300 * MIB)));
}

#[test]
fn busy_instances_and_services_are_never_victims() {
    let (ledger, held) = crowded();
    for reservation in &held[1..] {
        reservation.set_idle(false);
    }
    let reason = pending(ledger.admit(service("web"), mem(100 * MIB)));
    assert_eq!(
        reason.to_string(),
        "waiting for 100 MiB of memory; 0 bytes free"
    );
}

#[test]
fn when_even_eviction_is_not_enough_it_waits() {
    let (ledger, _held) = crowded();
    pending(ledger.admit(service("web"), mem(900 * MIB)));
    let named = victims(ledger.admit(service("small"), mem(100 * MIB)));
    assert_eq!(
        named,
        [cache("code")],
        "nothing was marked by the failed try"
    );
}

#[test]
fn what_victims_free_is_kept_for_the_retry() {
    let (ledger, mut held) = crowded();
    pending(ledger.admit(cache("queued"), mem(200 * MIB)));
    let named = victims(ledger.admit(service("web"), mem(200 * MIB)));
    assert_eq!(named, [cache("code")]);
    let code = held.pop().unwrap();
    assert!(ledger.release(code).is_empty(), "not handed to the queue");
    let web = admitted(ledger.admit(service("web"), mem(200 * MIB)));
    assert_eq!(web.key(), &service("web"));
    assert_eq!(ledger.snapshot().pending.len(), 1);
}

#[test]
fn the_snapshot_serialises_for_the_api() {
    let (ledger, _held) = crowded();
    pending(ledger.admit(service("web"), mem(900 * MIB)));
    let json = serde_json::to_value(ledger.snapshot()).unwrap();
    assert_eq!(json["free"]["memory_bytes"], 0);
    assert_eq!(json["reserved"][1]["key"]["kind"], "function");
    assert_eq!(json["reserved"][1]["idle"], true);
    assert_eq!(
        json["pending"][0]["reason"],
        "waiting for 900 MiB of memory; 0 bytes free"
    );
}

#[test]
fn a_victim_that_gets_busy_again_is_withdrawn_from_the_eviction() {
    let (ledger, mut held) = crowded();
    let code = held.pop().unwrap();
    let named = victims(ledger.admit(service("web"), mem(200 * MIB)));
    assert_eq!(named, [cache("code")]);
    code.set_idle(true);
    pending(ledger.admit(function("other"), mem(200 * MIB)));
    code.set_idle(false);
    pending(ledger.admit(cache("queued"), mem(200 * MIB)));
    let granted = ledger.release(code);
    assert_eq!(
        keys(&granted),
        ["function shop/other#0"],
        "handed out as usual"
    );
}
