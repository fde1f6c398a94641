//! The director ring as the unit of safety (issue 11), on a real Dovecot 2.3 director and backends.
//!
//! Needs root (mount namespaces) and Debian's dovecot-core, dovecot-imapd and dovecot-lmtpd;
//! `.ci/run` installs them. Each test uses its own 127.0.2x.0/24.

mod common;

use std::time::Instant;

use common::{now, report, rig, settings};
use dbu_lab::DIRECTOR_POD;
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::engine;
use dovecot_upgrade_operator::machine::Decision;
use dovecot_upgrade_operator::settings::Settings;
use serde_json::json;

/// After Replace gave the pod a new IP and Verify failed, a director that re-resolves
/// `director_mail_servers` shows the new IP up at its default vhosts: the failed backend would
/// serve users. The next reconcile takes it out again, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backend_that_reappears_at_its_new_ip_is_taken_out_again() {
    let started = Instant::now();
    let rig = rig(21);
    let lab = &rig.lab;
    let new_ip = "127.0.21.22";
    lab.move_on_recreate("backend-2", new_ip);
    // the new revision cannot read mail: Verify fails after Replace moved the pod
    lab.new_revision(
        "rev-broken",
        "mail_location = maildir:/nonexistent/%u/Maildir:INDEX=/var/dovecot/vmail/%u\nmail_attribute_dict =\n",
    );
    let s = settings(json!({"verify": {"user": "user2"}}));
    let exec = lab.exec();
    let (st, _) = common::finish(&s, &exec, lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(st.phase, Some(Phase::Failed), "{st:#?}");
    let failed = st
        .backends
        .iter()
        .find(|r| r.failed)
        .expect("a failed backend");
    assert_eq!(
        (failed.pod.as_str(), failed.step, failed.new_ip.as_deref()),
        ("backend-2", Step::Verify, Some(new_ip))
    );
    // the director re-resolves the backend's name: the new IP joins, up, at 100 vhosts
    lab.doveadm(DIRECTOR_POD, &["director", "add", new_ip, "100"])
        .unwrap();
    let up = lab.ring().unwrap().into_iter().find(|h| h.ip == new_ip);
    assert!(
        up.as_ref().is_some_and(|h| h.up && h.vhosts == 100),
        "{up:?}"
    );
    let out = common::once(&s, st, &exec, lab).await;
    assert!(
        matches!(&out.decision, Decision::Reassert { pod, .. } if pod == "backend-2"),
        "{:?}",
        out.decision
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.reason == "RingReasserted" && n.message.contains(new_ip)),
        "{:?}",
        out.notes
    );
    let h = lab
        .ring()
        .unwrap()
        .into_iter()
        .find(|h| h.ip == new_ip)
        .unwrap();
    assert!(!h.up && h.vhosts == 0, "taken out again: {h:?}");
    // and it stays failed: nothing puts it back without a human
    let out = common::once(&s, out.status, &exec, lab).await;
    assert!(
        matches!(out.decision, Decision::Stall { .. }),
        "{:?}",
        out.decision
    );
    report(
        "failed backend at a new IP is taken out again",
        started,
        &format!("{new_ip} up at 100 -> down at 0 in one reconcile"),
    );
}

/// A backend a human took out of the ring (`director down`) before the rollout is upgraded but
/// never brought back into service by the operator; the reason is in status and an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_an_admin_took_down_stays_down_after_the_rollout() {
    let started = Instant::now();
    let rig = rig(22);
    let lab = &rig.lab;
    let downed = lab.pod_ip("backend-1").unwrap();
    lab.doveadm(DIRECTOR_POD, &["director", "down", &downed])
        .unwrap();
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let s = settings(json!({"ordering": "FewestUsers"}));
    let (st, notes) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    for b in lab.backend_names() {
        assert_eq!(lab.pod_revision(&b).as_deref(), Some("rev-2"), "{b}");
    }
    let ring = common::ring_of(lab, DIRECTOR_POD);
    assert_eq!(
        ring[&downed],
        (50, false),
        "still down at its count: {ring:?}"
    );
    for (ip, (vhosts, up)) in &ring {
        if *ip != downed {
            assert!(*up && *vhosts > 0, "{ip}: {vhosts} {up}");
        }
    }
    let kept = notes
        .iter()
        .find(|n| n.reason == "BackendKeptDown")
        .expect("an Event says why it stays down");
    assert!(
        kept.warning && kept.message.starts_with("backend-1"),
        "{kept:?}"
    );
    let rec = st.backends.iter().find(|r| r.pod == "backend-1").unwrap();
    assert_eq!(rec.original_up, Some(false));
    assert!(
        rec.message
            .as_deref()
            .is_some_and(|m| m.contains("left down")),
        "{rec:?}"
    );
    report(
        "admin-downed backend stays down",
        started,
        &format!(
            "{downed} down at 50 before and after; Event {}",
            kept.reason
        ),
    );
}

/// Reconciles one DBU to its end like the controller, but kills the pass at random moments
/// (`kill_one_in` passes, after a random delay): the status of a killed pass is lost, as when
/// the operator dies before its status patch. Each pass decides with the settings `bind` gives
/// then (the controller binds the DBU to its ring before every pass). Returns the final status
/// and how many passes died.
async fn drive_with_kills(
    bind: &(dyn Fn() -> Settings + Sync),
    cluster: &dbu_lab::LabView<'_>,
    exec: &dyn dovecot_upgrade_operator::exec::PodExec,
    seed: u64,
    kill_one_in: u64,
    busy_waits: &std::sync::atomic::AtomicUsize,
) -> (DovecotBackendUpgradeStatus, usize) {
    let mut status = DovecotBackendUpgradeStatus::default();
    let mut rng = seed;
    let mut next = move || {
        // xorshift: reproducible per seed, no dependency
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let end = Instant::now() + std::time::Duration::from_secs(600);
    let mut killed = 0;
    loop {
        assert!(Instant::now() < end, "rollout did not finish: {status:#?}");
        let s = bind();
        let pass = engine::reconcile_once(
            &s,
            status.clone(),
            Some(1),
            exec,
            cluster,
            &engine::NetProbes,
            &now,
        );
        let out = if kill_one_in > 0 && next() % kill_one_in == 0 {
            let after = std::time::Duration::from_millis(next() % 800);
            match tokio::time::timeout(after, pass).await {
                Ok(out) => out.unwrap(),
                Err(_) => {
                    killed += 1;
                    continue;
                }
            }
        } else {
            pass.await.unwrap()
        };
        if matches!(
            &out.decision,
            Decision::Wait { reason, .. } if *reason == "RingBusy"
        ) {
            busy_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let done = out.decision == Decision::Complete || engine::stalled(&out.status);
        status = out.status;
        cluster.publish(&status);
        if done {
            return (status, killed);
        }
        let wait = out
            .requeue
            .unwrap_or(std::time::Duration::from_secs(1))
            .min(std::time::Duration::from_secs(1));
        tokio::time::sleep(wait).await;
    }
}

/// Samples both directors every 200 ms until `stop`: the most hosts out of service (vhosts 0 or
/// down) at once, and whether some host was ever left without any up host with vhosts > 0.
fn sample_ring(
    lab: &dbu_lab::Lab,
    directors: &[&str],
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, bool, usize) {
    let (mut most_out, mut ever_empty, mut samples) = (0, false, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for d in directors {
            let Ok(out) = lab.doveadm(d, &["-f", "json", "director", "status"]) else {
                continue; // a director busy syncing: the next sample counts
            };
            let Ok(ring) = dovecot_upgrade_operator::dovecot::parse_director_status(&out) else {
                continue;
            };
            samples += 1;
            let out_now = ring.iter().filter(|h| h.vhosts == 0 || !h.up).count();
            most_out = most_out.max(out_now);
            ever_empty |= !ring.iter().any(|h| h.up && h.vhosts > 0);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    (most_out, ever_empty, samples)
}

/// What two rollouts driven at once saw.
struct TwoRuns {
    statuses: Vec<DovecotBackendUpgradeStatus>,
    killed: Vec<usize>,
    /// The most hosts out of service at once on any director, whether some director ever had
    /// no host serving, and how many samples of a director were read.
    most_out: usize,
    ever_empty: bool,
    samples: usize,
    busy_waits: usize,
}

/// Drives two DBUs at once (each pass bound afresh, passes killed at random with `kill_one_in`)
/// while both directors are sampled every 200 ms.
fn two_at_once(
    lab: &dbu_lab::Lab,
    dbus: [(&(dyn Fn() -> Settings + Sync), &dbu_lab::LabView<'_>); 2],
    net: u8,
    kill_one_in: u64,
) -> TwoRuns {
    let exec = lab.exec();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let busy = std::sync::atomic::AtomicUsize::new(0);
    let [(bind_a, va), (bind_b, vb)] = dbus;
    let ((most_out, ever_empty, samples), ((a, ka), (b, kb))) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_ring(lab, &["director-0", "director-1"], &stop));
        let rollouts = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                tokio::join!(
                    drive_with_kills(
                        bind_a,
                        va,
                        &exec,
                        0x9e37_79b9 + u64::from(net),
                        kill_one_in,
                        &busy
                    ),
                    drive_with_kills(
                        bind_b,
                        vb,
                        &exec,
                        0x7f4a_7c15 + u64::from(net),
                        kill_one_in,
                        &busy
                    ),
                )
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (sampler.join().unwrap(), rollouts)
    });
    TwoRuns {
        statuses: vec![a, b],
        killed: vec![ka, kb],
        most_out,
        ever_empty,
        samples,
        busy_waits: busy.load(std::sync::atomic::Ordering::Relaxed),
    }
}

async fn two_dbus_one_ring(net: u8, kill_one_in: u64) {
    let started = Instant::now();
    let rig = common::rig_with(|d| {
        let mut s = dbu_lab::LabSpec::new(d, net, vec![100, 50, 100, 50]);
        s.pool_b = 2;
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let before = common::ring_of(lab, DIRECTOR_POD);
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let sa = settings(json!({}));
    let sb = settings(json!({"backends": {"statefulSet": dbu_lab::POOL_B}}));
    let (va, vb) = (
        lab.view(dbu_lab::STATEFULSET, "mail/a"),
        lab.view(dbu_lab::POOL_B, "mail/b"),
    );
    let run = two_at_once(
        lab,
        [(&|| sa.clone(), &va), (&|| sb.clone(), &vb)],
        net,
        kill_one_in,
    );
    let (a, b) = (&run.statuses[0], &run.statuses[1]);
    let (most_out, ever_empty, samples, ka, kb) = (
        run.most_out,
        run.ever_empty,
        run.samples,
        run.killed[0],
        run.killed[1],
    );
    for (name, st) in [("a", a), ("b", b)] {
        assert_eq!(st.phase, Some(Phase::Completed), "DBU {name}: {st:#?}");
    }
    for pod in lab.backend_names() {
        assert_eq!(lab.pod_revision(&pod).as_deref(), Some("rev-2"), "{pod}");
    }
    assert!(samples > 10, "the ring was sampled ({samples})");
    assert!(
        most_out <= 1,
        "at most one backend of the ring out at once, saw {most_out}"
    );
    assert!(!ever_empty, "some host always had vhosts > 0");
    assert_eq!(
        common::ring_of(lab, DIRECTOR_POD),
        before,
        "the ring is whole again"
    );
    assert!(
        lab.ring_holders().is_empty(),
        "the lock is released: {:?}",
        lab.ring_holders()
    );
    let waits = run.busy_waits;
    assert!(waits > 0, "the two DBUs met at the lock");
    // slots in order of waiting: with two backends each, the DBUs take turns (the one that
    // just released a slot never takes the next from the one waiting)
    let mut claims: Vec<String> = Vec::new();
    let mut before: Vec<(String, String)> = Vec::new();
    for w in lab.ring_writes() {
        let now: Vec<(String, String)> = w.iter().map(|h| (h.dbu.clone(), h.pod.clone())).collect();
        claims.extend(
            now.iter()
                .filter(|h| !before.contains(h))
                .map(|h| h.0.clone()),
        );
        before = now;
    }
    if kill_one_in == 0 {
        assert_eq!(claims.len(), 4, "one claim per backend: {claims:?}");
        assert!(
            claims.windows(2).all(|p| p[0] != p[1]),
            "the waiting DBU gets the next slot: {claims:?}"
        );
    }
    report(
        if kill_one_in > 0 {
            "two DBUs, one ring, operator killed at random"
        } else {
            "two DBUs, one ring"
        },
        started,
        &format!(
            "4 backends in 2 StatefulSets, 2 directors: most out at once {most_out} over {samples} samples; {waits} RingBusy waits; {} passes killed",
            ka + kb
        ),
    );
}

/// Two StatefulSets whose pods are hosts of one director ring, a DBU each, applied at once:
/// never more than one backend of the ring out at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dbus_of_one_ring_take_turns() {
    two_dbus_one_ring(23, 0).await;
}

/// The same with the operator killed at random moments while both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dbus_of_one_ring_take_turns_across_operator_kills() {
    two_dbus_one_ring(24, 2).await;
}

/// A ring member dies while a backend is drained and about to be stopped: the other director
/// says `ring syncing`, so nothing on the backend is stopped (one director may still send users
/// there) until every director says `ring synced` again; then the rollout goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_stopped_on_a_backend_while_the_ring_is_split() {
    let started = Instant::now();
    let rig = common::rig_with(|d| {
        let mut s = dbu_lab::LabSpec::new(d, 25, vec![100, 50, 20]);
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let before = common::ring_of(lab, DIRECTOR_POD);
    lab.new_revision("rev-2", "");
    let s = settings(json!({}));
    let exec = lab.exec();
    let st = common::until_step(&s, &exec, lab, Step::StopLmtp).await;
    let pod = st.backends[0].pod.clone();
    lab.stop_pod("director-1");
    let split = || {
        lab.doveadm(DIRECTOR_POD, &["-f", "json", "director", "ring", "status"])
            .is_ok_and(|o| !o.contains("\"ring synced\""))
    };
    for _ in 0..50 {
        if split() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(split(), "director-0 notices the dead member");
    let mut st = st;
    for _ in 0..3 {
        let out = common::once(&s, st, &exec, lab).await;
        assert!(
            matches!(&out.decision, Decision::Wait { reason, .. } if *reason == "RingNotSynced"),
            "{:?}",
            out.decision
        );
        st = out.status;
        assert_eq!(st.backends[0].step, Step::StopLmtp, "nothing stopped");
    }
    // LMTP still accepts on the drained backend: nothing was stopped
    let ip = lab.pod_ip(&pod).unwrap();
    dbu_lab::lmtp_deliver(&ip, "user1", "while split").expect("LMTP still open");
    lab.start_director(1).unwrap();
    lab.wait_ring_synced().unwrap();
    let (st, _) = common::finish(&s, &exec, lab, st).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    assert_eq!(
        common::ring_of(lab, DIRECTOR_POD),
        before,
        "the ring is whole again"
    );
    report(
        "nothing stopped while the ring is split",
        started,
        &format!("{pod} held at StopLmtp while director-1 was dead; completed after it came back"),
    );
}

/// A backend that a deleted DBU left out after its Dovecot was stopped (at Reset) has nobody
/// but the ring. Every director goes down and comes back (they forget `update 0` and `down`,
/// and show it up at its default count); the ring's own pass, on the real directors, takes it
/// out again on both, says so in an Event, and the next pass finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_keeps_a_left_out_backend_out_when_every_director_restarts() {
    let started = Instant::now();
    let rig = common::rig_with(|d| {
        let mut s = dbu_lab::LabSpec::new(d, 27, vec![100, 50, 20]);
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let ip = lab.pod_ip("backend-2").unwrap();
    // what the DBU did before it was deleted at Reset: drained, down, flushed, Dovecot stopped
    for args in [
        ["director", "update", ip.as_str(), "0"].as_slice(),
        &["director", "down", &ip],
        &["director", "flush", &ip],
    ] {
        lab.doveadm(DIRECTOR_POD, args).unwrap();
    }
    lab.stop_pod("backend-2");
    let mut rec = dbu_core::fixtures::record(2, Step::Reset, common::now(), "rev-1", 20);
    (rec.pod, rec.ip) = ("backend-2".into(), ip.clone());
    let ring: dovecot_upgrade_operator::api::DovecotRing = serde_json::from_value(json!({
        "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
        "metadata": {"name": "mail", "namespace": "lab", "generation": 1},
        "spec": {"directors": {"selector": {"matchLabels": {"app": "director"}}},
                 "backends": [{"statefulSet": "backend"}]},
        "status": {"outCount": 1, "out": [{"dbu": "lab/gone", "pod": "backend-2", "ip": ip,
            "maxUnavailable": 1, "leftOut": {"statefulSet": "backend", "record": rec}}]}
    }))
    .unwrap();
    // every director restarts: none keeps the state for the other
    lab.stop_pod("director-0");
    lab.stop_pod("director-1");
    lab.start_director(0).unwrap();
    lab.start_director(1).unwrap();
    lab.wait_ring_synced().unwrap();
    let forgot = common::ring_of(lab, "director-1")[&ip];
    assert!(forgot.0 > 0 && forgot.1, "the directors forgot: {forgot:?}");
    let world = ring_world(lab, 2, 2);
    let engine::RingPassed {
        status: st, notes, ..
    } = engine::ring_pass(&ring, &world, &lab.exec(), now()).await;
    assert!(
        notes
            .iter()
            .any(|n| n.reason == "RingReasserted" && n.message.contains("left out at Reset")),
        "{notes:?}"
    );
    assert!(
        notes.iter().all(|n| n.reason != "RingReassertFailed"),
        "{notes:?}"
    );
    let ran = notes.len();
    for d in ["director-0", "director-1"] {
        assert_eq!(common::ring_of(lab, d)[&ip], (0, false), "{d}");
    }
    // the next pass: nothing to do, the ring agrees and shows who holds the host out
    let ring = dovecot_upgrade_operator::api::DovecotRing {
        status: Some(st),
        ..ring
    };
    let engine::RingPassed {
        status: st, notes, ..
    } = engine::ring_pass(&ring, &world, &lab.exec(), now()).await;
    assert_eq!(notes, vec![], "nothing more to re-assert");
    assert_eq!(st.synced.as_deref(), Some("True"), "{st:#?}");
    let host = st.hosts.iter().find(|h| h.ip == ip).unwrap();
    assert!(
        (host.vhosts, host.up) == (0, false)
            && host
                .out
                .as_deref()
                .is_some_and(|o| o.contains("left out at Reset")),
        "{host:?}"
    );
    report(
        "left-out backend kept out by the ring",
        started,
        &format!(
            "both directors restarted and showed {ip} at {} vhosts up; the ring's pass ran {} command(s): 0 vhosts, down on both",
            forgot.0, ran
        ),
    );
}

/// A DovecotRing object in the lab's namespace (as the ring store holds it).
fn ring_object(name: &str, selector: serde_json::Value, backends: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
        "metadata": {"name": name, "namespace": "lab", "uid": format!("ring-{name}"), "generation": 1},
        "spec": {"directors": {"selector": selector},
                 "backends": backends.iter().map(|b| json!({"statefulSet": b})).collect::<Vec<_>>(),
                 "maxUnavailable": 1}
    })
}

/// The settings the controller binds a DBU with `patch` (over the lab's spec) to, from the
/// lab's pods (with their labels) and these rings: the controller's own resolution.
fn bind_in_lab(
    lab: &dbu_lab::Lab,
    name: &str,
    patch: &serde_json::Value,
    rings: &[serde_json::Value],
) -> Result<Settings, String> {
    fn objs<K: serde::de::DeserializeOwned>(v: Vec<serde_json::Value>) -> Vec<K> {
        v.into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect()
    }
    let stores = dovecot_upgrade_operator::controller::Stores::from_objects(
        vec![],
        objs(lab.pod_objects()),
        vec![],
        objs(rings.to_vec()),
    );
    let dbu = dbu_core::fixtures::dbu(json!({"name": name, "namespace": "lab"}), patch.clone());
    dovecot_upgrade_operator::controller::bind_read_only(
        &stores,
        &dbu,
        "lab",
        settings(patch.clone()),
    )
}

/// One director ring (two directors in zones a and b), two StatefulSets, one DovecotRing. DBU a
/// names the ring; DBU b is from before rings (its own director selector, zone b) and is found
/// through its StatefulSet. A second ring object whose selector is written differently but picks
/// the same directors is refused for both, naming both rings; once it is gone both bind to
/// `mail`, and the ring's selector is edited mid-rollout (matchLabels to matchExpressions):
/// every pass of either DBU stays bound to the one record, with passes killed at random. Both
/// directors sampled every 200 ms: never more than one backend out, never none serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_to_one_ring_and_its_selector_edited_mid_rollout() {
    let started = Instant::now();
    let net = 45;
    let rig = common::rig_with(|d| {
        let mut s = dbu_lab::LabSpec::new(d, net, vec![100, 50, 100, 50]);
        s.pool_b = 2;
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let before = common::ring_of(lab, DIRECTOR_POD);
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let by_app = json!({"matchLabels": {"app": "director"}});
    let by_zone =
        json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "a"]}]});
    let mail = ring_object("mail", by_app, &[dbu_lab::STATEFULSET, dbu_lab::POOL_B]);
    let patch_a = json!({"ring": "mail", "director": null});
    let patch_b = json!({"backends": {"statefulSet": dbu_lab::POOL_B},
                         "director": {"selector": {"matchLabels": {"zone": "b"}}}});
    // a second ring object for the same directors, written another way: refused for both
    let twice = [
        mail.clone(),
        ring_object("mail-zones", by_zone.clone(), &[]),
    ];
    for (dbu, patch) in [("a", &patch_a), ("b", &patch_b)] {
        let why = bind_in_lab(lab, dbu, patch, &twice).expect_err("refused");
        assert!(
            why.contains("DovecotRing mail ") || why.contains("mail and"),
            "{dbu}: {why}"
        );
        assert!(why.contains("mail-zones"), "names both rings: {why}");
    }
    // the human deletes the second object; mid-rollout the ring's selector is rewritten
    let rings = std::sync::Mutex::new(vec![mail]);
    let bound = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let edited = std::sync::atomic::AtomicBool::new(false);
    let bind = |dbu: &str, patch: &serde_json::Value| {
        if lab.ring_writes().len() >= 3 && !edited.swap(true, std::sync::atomic::Ordering::SeqCst) {
            rings.lock().unwrap()[0]["spec"]["directors"]["selector"] = by_zone.clone();
        }
        let s = bind_in_lab(lab, dbu, patch, &rings.lock().unwrap()).expect("bound");
        *bound
            .lock()
            .unwrap()
            .entry(s.ring.clone().unwrap_or_default())
            .or_default() += 1;
        s
    };
    let (va, vb) = (
        lab.view(dbu_lab::STATEFULSET, "lab/a"),
        lab.view(dbu_lab::POOL_B, "lab/b"),
    );
    let run = two_at_once(
        lab,
        [
            (&|| bind("a", &patch_a), &va),
            (&|| bind("b", &patch_b), &vb),
        ],
        net,
        3,
    );
    for (name, st) in [("a", &run.statuses[0]), ("b", &run.statuses[1])] {
        assert_eq!(st.phase, Some(Phase::Completed), "DBU {name}: {st:#?}");
    }
    for pod in lab.backend_names() {
        assert_eq!(lab.pod_revision(&pod).as_deref(), Some("rev-2"), "{pod}");
    }
    assert!(
        edited.load(std::sync::atomic::Ordering::SeqCst),
        "the selector was edited mid-rollout"
    );
    let bound = bound.into_inner().unwrap();
    assert_eq!(
        bound.keys().collect::<Vec<_>>(),
        ["mail"],
        "every pass of both DBUs bound to the one ring: {bound:?}"
    );
    assert!(run.samples > 10, "the ring was sampled ({})", run.samples);
    assert!(
        run.most_out <= 1,
        "at most one backend of the ring out at once, saw {}",
        run.most_out
    );
    assert!(!run.ever_empty, "some host always had vhosts > 0");
    assert_eq!(common::ring_of(lab, DIRECTOR_POD), before, "whole again");
    assert_eq!(common::ring_of(lab, "director-1"), before, "whole again");
    assert!(lab.ring_holders_of("mail").is_empty(), "released");
    let claims: std::collections::BTreeSet<String> = lab
        .ring_writes()
        .iter()
        .flatten()
        .map(|h| h.dbu.clone())
        .collect();
    assert_eq!(
        claims.into_iter().collect::<Vec<_>>(),
        ["lab/a", "lab/b"],
        "both took their slots from the one record"
    );
    report(
        "two routes to one ring, selector edited mid-rollout",
        started,
        &format!(
            "both DBUs bound to `mail` on all {} passes; most out at once {} over {} samples; {} RingBusy waits; {} passes killed",
            bound["mail"],
            run.most_out,
            run.samples,
            run.busy_waits,
            run.killed.iter().sum::<usize>()
        ),
    );
}

/// The lab's pods as the ring pass sees them: `directors` directors, `backends` backends.
fn ring_world(lab: &dbu_lab::Lab, directors: usize, backends: usize) -> engine::RingWorld {
    engine::RingWorld {
        directors: (0..directors)
            .map(|i| {
                let d = format!("director-{i}");
                let dip = lab.pod_ip(&d);
                (d, dip)
            })
            .collect(),
        backends: (0..backends)
            .map(|i| {
                let name = lab.spec.backend_name(i);
                dbu_core::machine::face::BackendPod {
                    ip: lab.pod_ip(&name),
                    ready: lab.pod_ready(&name),
                    name,
                }
            })
            .collect(),
        conflict: None,
    }
}

/// Where the deleted DBU leaves its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeftAt {
    StopDovecot,
    RingRemove,
    /// Stalled by the reset guard (the old example's layout), then deleted.
    ResetGuard,
}

/// A DBU deleted with its backend left out at `at`. Meanwhile both directors restart (they
/// forget `update 0` and `down`): the ring's own pass takes the backend out again on both. A
/// new DBU of the StatefulSet takes it over before anything else, through a lost status write
/// and a lost compare-and-swap of the ring's record at the hand-over, finishes it from where
/// it was left, then rolls the rest; the ring ends as it began.
async fn left_out_then_finished_first(net: u8, at: LeftAt) {
    let started = Instant::now();
    let rig = common::rig_with(|d| {
        let mut s = dbu_lab::LabSpec::new(d, net, vec![100, 50, 20]);
        s.directors = 2;
        s.legacy_layout = at == LeftAt::ResetGuard;
        s
    });
    let lab = &rig.lab;
    let before = common::ring_of(lab, DIRECTOR_POD);
    lab.new_revision("rev-2", "");
    let first = settings(json!({}));
    let exec = lab.exec();
    let step = match at {
        LeftAt::StopDovecot => Step::StopDovecot,
        LeftAt::RingRemove => Step::RingRemove,
        LeftAt::ResetGuard => Step::Reset,
    };
    let (st, _) = common::until(
        &first,
        &exec,
        lab,
        DovecotBackendUpgradeStatus::default(),
        std::time::Duration::from_secs(120),
        |st| match at {
            LeftAt::ResetGuard => engine::stalled(st),
            _ => st.backends.first().is_some_and(|r| r.step == step),
        },
    )
    .await;
    let mut st = st;
    if at == LeftAt::StopDovecot {
        // the operator dies right after `doveadm stop` took effect, before its status write:
        // the record still says StopDovecot, and Dovecot is stopped
        loop {
            let out = common::once(&first, st.clone(), &exec, lab).await;
            if out.status.backends[0].step != Step::StopDovecot {
                break;
            }
            st = out.status;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    let rec = st.backends[0].clone();
    assert_eq!(rec.step, step, "{st:#?}");
    let (pod, ip) = (rec.pod.clone(), rec.ip.clone());
    // the DBU is deleted
    let done = engine::cleanup(&first, &st, &exec, lab, &now, false)
        .await
        .unwrap();
    assert!(done.finished(), "{done:?}");
    let holders = lab.ring_holders();
    assert!(
        holders.len() == 1 && holders[0].pod == pod && holders[0].left_out.is_some(),
        "the ring keeps it as left out: {holders:?}"
    );
    // every director restarts and forgets; the ring's pass takes the backend out again
    for d in ["director-0", "director-1"] {
        lab.stop_pod(d);
    }
    lab.start_director(0).unwrap();
    lab.start_director(1).unwrap();
    lab.wait_ring_synced().unwrap();
    let forgot = common::ring_of(lab, "director-1")[&ip];
    let ring: dovecot_upgrade_operator::api::DovecotRing = serde_json::from_value(json!({
        "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
        "metadata": {"name": "mail", "namespace": "lab", "generation": 1},
        "spec": {"directors": {"selector": {"matchLabels": {"app": "director"}}},
                 "backends": [{"statefulSet": "backend"}]},
        "status": {"outCount": 1, "out": holders}
    }))
    .unwrap();
    let notes = engine::ring_pass(&ring, &ring_world(lab, 2, 3), &exec, now())
        .await
        .notes;
    assert!(
        notes.iter().any(|n| n.reason == "RingReasserted"),
        "{notes:?}"
    );
    for d in ["director-0", "director-1"] {
        assert_eq!(common::ring_of(lab, d)[&ip], (0, false), "{d}: out again");
    }
    // what the restarted directors hold now: the other hosts at their configured count (the
    // operator never changed them), the left-out one taken out again
    let mut want = common::ring_of(lab, DIRECTOR_POD);
    assert_eq!(
        before[&ip],
        (rec.original_vhosts, true),
        "the record keeps its count"
    );
    want.insert(ip.clone(), before[&ip]);
    // a new DBU; after Reset's guard stall its author turned the reset off
    let mut next = settings(match at {
        LeftAt::ResetGuard => json!({"reset": {"enabled": false}}),
        _ => json!({}),
    });
    // its first pass takes the backend over; that status write is lost (a 409)
    let out = common::once(&next, DovecotBackendUpgradeStatus::default(), &exec, lab).await;
    assert!(
        matches!(&out.decision, Decision::Adopt { records } if records.iter().any(|r| r.pod == pod)),
        "{:?}",
        out.decision
    );
    assert_eq!(lab.ring_holders(), holders, "nothing lost with the status");
    // and its first claim of the ring's record loses the compare-and-swap
    lab.conflict_next_ring_writes(1);
    let (mut st, mut notes) =
        common::finish(&next, &exec, lab, DovecotBackendUpgradeStatus::default()).await;
    if at == LeftAt::ResetGuard {
        // a failed backend is taken over as failed: it stays out until its author retries
        let held = st.backends.iter().find(|r| r.pod == pod).unwrap();
        assert!(engine::stalled(&st) && held.failed, "{st:#?}");
        for d in ["director-0", "director-1"] {
            assert_eq!(common::ring_of(lab, d)[&ip], (0, false), "{d}: still out");
        }
        next.retry_token = Some("1".into());
        let more;
        (st, more) = common::finish(&next, &exec, lab, st).await;
        notes.extend(more);
    }
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}\n{notes:#?}");
    assert_eq!(
        lab.conflicts_due(),
        0,
        "the injected conflict was met: {notes:#?}"
    );
    let adopted = notes
        .iter()
        .position(|n| n.reason == "BackendAdopted" && n.message.starts_with(&pod))
        .expect("taken over");
    let started_other = notes.iter().position(|n| n.reason == "BackendStarted");
    assert!(
        started_other.is_none_or(|b| b > adopted),
        "taken over before any other backend starts: {notes:#?}"
    );
    let finished = st.backends.iter().find(|r| r.pod == pod).unwrap();
    assert_eq!(finished.step, Step::Done, "{finished:?}");
    for b in lab.backend_names() {
        assert_eq!(lab.pod_revision(&b).as_deref(), Some("rev-2"), "{b}");
    }
    for d in ["director-0", "director-1"] {
        assert_eq!(common::ring_of(lab, d), want, "{d}: whole again");
    }
    assert!(lab.ring_holders().is_empty(), "{:?}", lab.ring_holders());
    report(
        &format!("left out at {step:?}, finished first by the next DBU"),
        started,
        &format!(
            "{pod} kept out across the deletion and both directors' restart (they showed {}/{}); taken over through a lost status write and a lost CAS; ring whole",
            forgot.0,
            if forgot.1 { "up" } else { "down" }
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_out_at_stop_dovecot_is_finished_first_by_the_next_dbu() {
    left_out_then_finished_first(46, LeftAt::StopDovecot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_out_at_ring_remove_is_finished_first_by_the_next_dbu() {
    left_out_then_finished_first(47, LeftAt::RingRemove).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_out_at_a_reset_guard_stall_is_finished_first_by_the_next_dbu() {
    left_out_then_finished_first(48, LeftAt::ResetGuard).await;
}

/// A director pod is recreated at a new IP while a backend drains: its own ring names the new
/// address, the other director's still the old one, so the two do not form one ring. The
/// rollout stops nothing on the draining backend and starts no other, naming the director,
/// until an admin joins the new address to the ring; then it goes on and completes. Both
/// directors are read after every pass: never more than one backend out on either view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_director_back_at_a_new_ip_holds_the_rollout_until_the_ring_is_whole() {
    let started = Instant::now();
    let net = 49;
    let rig = common::rig_with(|d| {
        let mut s = dbu_lab::LabSpec::new(d, net, vec![100, 50, 20]);
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let before = common::ring_of(lab, DIRECTOR_POD);
    lab.new_revision("rev-2", "");
    let s = settings(json!({}));
    let exec = lab.exec();
    let mut st = common::until_step(&s, &exec, lab, Step::WaitSessions).await;
    let pod = st.backends[0].pod.clone();
    let (old_ip, new_ip) = (lab.spec.director_ip_of(1), format!("127.0.{net}.30"));
    lab.stop_pod("director-1");
    lab.start_director_at(1, &new_ip).unwrap();
    let most_out = |lab: &dbu_lab::Lab| {
        ["director-0", "director-1"]
            .iter()
            .map(|d| {
                common::ring_of(lab, d)
                    .values()
                    .filter(|(v, up)| *v == 0 || !*up)
                    .count()
            })
            .max()
            .unwrap()
    };
    // the drain runs its course (users expire); then the step that would stop something waits
    let mut held = Vec::new();
    for _ in 0..90 {
        if held
            .iter()
            .filter(|(r, _): &&(String, String)| r == "RingSplit")
            .count()
            >= 5
        {
            break;
        }
        let out = common::once(&s, st, &exec, lab).await;
        st = out.status;
        assert!(
            most_out(lab) <= 1,
            "{:?}",
            common::ring_of(lab, "director-1")
        );
        assert!(
            st.backends[0].step <= Step::StopLmtp && st.backends.len() == 1,
            "nothing stopped, nothing else started: {st:#?}"
        );
        if let Decision::Wait {
            reason, message, ..
        } = &out.decision
        {
            held.push((reason.to_string(), message.clone()));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let (reason, message) = held.last().cloned().expect("the rollout waits");
    assert!(
        reason == "RingSplit" && message.contains("director-1"),
        "waits naming the director: {held:#?}"
    );
    // LMTP still accepts on the drained backend: nothing was stopped
    let ip = lab.pod_ip(&pod).unwrap();
    dbu_lab::lmtp_deliver(&ip, "user1", "while split").expect("LMTP still open");
    // the admin joins the new address to the ring and drops the old one
    lab.doveadm(DIRECTOR_POD, &["director", "ring", "add", &new_ip])
        .unwrap();
    lab.doveadm(DIRECTOR_POD, &["director", "ring", "remove", &old_ip])
        .unwrap();
    lab.wait_ring_synced().unwrap();
    let end = Instant::now() + std::time::Duration::from_secs(300);
    loop {
        assert!(Instant::now() < end, "not completed: {st:#?}");
        let out = common::once(&s, st, &exec, lab).await;
        st = out.status;
        assert!(most_out(lab) <= 1);
        if out.decision == Decision::Complete || engine::stalled(&st) {
            break;
        }
        tokio::time::sleep(
            out.requeue
                .unwrap_or(std::time::Duration::from_secs(1))
                .min(std::time::Duration::from_secs(1)),
        )
        .await;
    }
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    for d in ["director-0", "director-1"] {
        let ring = common::ring_of(lab, d);
        for (ip, (v, up)) in &ring {
            assert!(*up && *v > 0, "{d}: {ip} serving");
        }
        assert_eq!(ring[&ip], before[&ip], "{d}: {pod} back at its count");
    }
    report(
        "director back at a new IP holds the rollout",
        started,
        &format!(
            "director-1 {old_ip} -> {new_ip} during {pod}'s drain: held at {:?} with {reason} for {} passes (\"{}\"); completed once the ring was whole",
            Step::StopLmtp,
            held.iter().filter(|h| h.0 == reason).count(),
            dbu_core::text::bounded(&message, 160)
        ),
    );
}

/// A StatefulSet whose ordinals start at 10 (`spec.ordinals.start`): pods backend-10 to
/// backend-12. When Replace deletes a pod (absent for 2 s), its record is not closed as "scaled away" (its
/// ordinal is still in the StatefulSet's range): RingRestore and the rest run, and the next
/// backend starts only then. The director sampled every 200 ms: never two out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_with_ordinals_from_10_rolls_out_one_backend_at_a_time() {
    let started = Instant::now();
    let rig = common::rig_with(|d| dbu_lab::LabSpec {
        ordinals_start: 10,
        // a deleted pod is absent for a moment before the StatefulSet brings it back
        recreate_after: Some(std::time::Duration::from_secs(2)),
        ..dbu_lab::LabSpec::new(d, 52, vec![100, 50, 20])
    });
    let lab = &rig.lab;
    let before = common::ring_of(lab, DIRECTOR_POD);
    lab.new_revision("rev-2", "");
    let s = settings(json!({}));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ((most_out, ever_empty, samples), (st, notes)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_ring(lab, &[DIRECTOR_POD], &stop));
        let run = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                // three backends take about 20 s; a record closed as removed never completes
                let exec = lab.exec();
                let finish = common::finish(&s, &exec, lab, DovecotBackendUpgradeStatus::default());
                tokio::time::timeout(std::time::Duration::from_secs(150), finish)
                    .await
                    .expect("the rollout completes")
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (sampler.join().unwrap(), run)
    });
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    assert!(
        notes.iter().all(|n| n.reason != "BackendRemoved"),
        "no record closed as removed: {notes:#?}"
    );
    let names = lab.backend_names();
    assert_eq!(names, ["backend-10", "backend-11", "backend-12"]);
    for b in &names {
        assert_eq!(lab.pod_revision(b).as_deref(), Some("rev-2"), "{b}");
        let rec = st.backends.iter().find(|r| &r.pod == b).unwrap();
        assert_eq!((rec.step, rec.removed), (Step::Done, false), "{rec:?}");
    }
    assert!(
        samples > 10 && most_out <= 1 && !ever_empty,
        "{most_out} out at most over {samples}"
    );
    assert_eq!(common::ring_of(lab, DIRECTOR_POD), before, "whole again");
    report(
        "ordinals from 10",
        started,
        &format!(
            "backend-10..12 rolled; most out at once {most_out} over {samples} samples; no record closed as removed"
        ),
    );
}

/// A vhost count a human sets on a backend while it is out for its upgrade is the count it goes
/// back at (not the one recorded when it started), with an Event that says so; meanwhile the
/// backend stays drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_count_set_by_hand_during_the_upgrade_is_kept() {
    let started = Instant::now();
    let rig = rig(64);
    let lab = &rig.lab;
    lab.new_revision("rev-2", "");
    let s = settings(json!({}));
    let exec = lab.exec();
    let st = common::until_step(&s, &exec, lab, Step::WaitSessions).await;
    let pod = st.backends[0].pod.clone();
    let ip = lab.pod_ip(&pod).unwrap();
    let recorded = st.backends[0].original_vhosts;
    let set = if recorded == 40 { 60 } else { 40 };
    lab.doveadm(DIRECTOR_POD, &["director", "update", &ip, &set.to_string()])
        .unwrap();
    // the next pass writes the count to the record and acts on nothing else
    let out = common::once(&s, st, &exec, lab).await;
    assert!(
        matches!(out.decision, Decision::Wait { .. }),
        "the count is recorded first: {:?}",
        out.decision
    );
    let rec = &out.status.backends[0];
    assert_eq!(rec.original_vhosts, set, "{rec:?}");
    let kept = out
        .notes
        .iter()
        .find(|n| n.reason == "BackendVhostsKept")
        .expect("an Event names the count kept");
    assert!(kept.message.contains(&pod), "{kept:?}");
    // then the backend is drained again, and the rollout finishes
    let out = common::once(&s, out.status, &exec, lab).await;
    assert_eq!(
        common::ring_of(lab, DIRECTOR_POD)[&ip].0,
        0,
        "drained again"
    );
    let (st, _) = common::finish(&s, &exec, lab, out.status).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    let ring = common::ring_of(lab, DIRECTOR_POD);
    let now_ip = lab.pod_ip(&pod).unwrap();
    assert_eq!(
        ring[&now_ip],
        (set, true),
        "back at the human's count: {ring:?}"
    );
    report(
        "a human's vhost count during the upgrade",
        started,
        &format!(
            "{pod} recorded at {recorded}, set to {set} by hand at WaitSessions, back at {set}"
        ),
    );
}
