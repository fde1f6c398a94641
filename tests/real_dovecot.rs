//! Full rollouts against a real Dovecot 2.3 director and three backends on loopback.
//!
//! Needs root (mount namespaces) and Debian's dovecot-core, dovecot-imapd and dovecot-lmtpd;
//! `.ci/run` installs them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Rig, now, rig, settings};
use dbu_lab::{self as lab, DIRECTOR_POD, ImapSession};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::engine;
use dovecot_upgrade_operator::machine::Decision;
use dovecot_upgrade_operator::settings::Settings;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_of_three_backends_through_a_real_director() {
    let mut rig = rig(1);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    let original: BTreeMap<String, u32> = lab
        .ring()
        .unwrap()
        .into_iter()
        .map(|h| (h.ip, h.vhosts))
        .collect();
    assert_eq!(
        original.values().copied().collect::<Vec<_>>(),
        vec![100, 50, 20]
    );

    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let s = settings(json!({"ordering": "FewestUsers"}));
    let exec = lab.exec();
    // the backend with the fewest mapped users goes first (highest ordinal on ties)
    let ring_at_start = lab.ring().unwrap();
    let first = lab
        .backend_names()
        .into_iter()
        .min_by_key(|pod| {
            let ip = lab.pod_ip(pod).unwrap();
            let users = ring_at_start.iter().find(|h| h.ip == ip).unwrap().users;
            let ordinal: u32 = pod.rsplit('-').next().unwrap().parse().unwrap();
            (users, std::cmp::Reverse(ordinal))
        })
        .unwrap();

    let mut notes = Vec::new();
    let mut steps_seen: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    let mut drain_checks: BTreeMap<String, String> = BTreeMap::new();
    let mut fresh = 20..=30u32;
    let mut rows = Vec::new();
    let out = engine::drive(
        &s,
        DovecotBackendUpgradeStatus::default(),
        &exec,
        lab,
        &engine::NetProbes,
        &now,
        Duration::from_secs(600),
        |o| {
            notes.extend(o.notes.iter().cloned());
            rows.push(format!(
                "{:?} {:?} {:?} {:?}",
                o.status.phase, o.status.progress, o.status.current, o.status.step
            ));
            for r in &o.status.backends {
                let seen = steps_seen.entry(r.pod.clone()).or_default();
                if seen.last() != Some(&r.step) {
                    seen.push(r.step);
                }
                // while drained and still running: a new user's login must go elsewhere
                if r.step == Step::WaitSessions && !drain_checks.contains_key(&r.pod) {
                    let user = format!("user{}", fresh.next().expect("enough fresh users"));
                    assert_eq!(lab.user_host(&user).unwrap(), None, "{user} is fresh");
                    let session = ImapSession::login(&dip, &user).expect("login during drain");
                    let host = lab
                        .user_host(&user)
                        .unwrap()
                        .expect("login mapped the user");
                    session.logout();
                    assert_ne!(host, r.ip, "login of {user} landed on drained {}", r.pod);
                    drain_checks.insert(r.pod.clone(), host);
                }
            }
        },
    )
    .await
    .unwrap();

    let st = &out.status;
    assert_eq!(
        st.phase,
        Some(Phase::Completed),
        "rows: {rows:#?}\nnotes: {notes:#?}"
    );
    assert_eq!(st.progress.as_deref(), Some("3/3"));
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(
        drain_checks.len(),
        3,
        "a login was checked during each drain"
    );

    // each backend walked every step, in runbook order, exactly once
    for pod in lab.backend_names() {
        assert_eq!(steps_seen[&pod], Step::ALL.to_vec(), "{pod}");
        for step in Step::ALL.iter().filter(|s| **s != Step::Done) {
            assert!(
                notes.iter().any(|n| n.reason == "StepSucceeded"
                    && n.message.starts_with(&format!("{pod}: {step} done"))),
                "{pod} {step} event"
            );
        }
        assert_eq!(lab.pod_revision(&pod).as_deref(), Some("rev-2"));
        let greeting = lab
            .run_in(&pod, &["doveconf", "-h", "login_greeting"])
            .unwrap();
        assert_eq!(
            greeting.trim(),
            "Lab rev-2 ready",
            "{pod} runs the new config"
        );
    }
    let order: Vec<&str> = notes
        .iter()
        .filter(|n| n.reason == "BackendStarted")
        .map(|n| n.message.split(':').next().unwrap())
        .collect();
    assert_eq!(order.len(), 3);
    assert_eq!(order[0], first, "fewest users first: {ring_at_start:?}");

    // the real director: every backend up with its original vhost count
    let ring = lab.ring().unwrap();
    assert_eq!(ring.len(), 3);
    for h in &ring {
        assert!(h.up, "{h:?}");
        assert_eq!(h.vhosts, original[&h.ip], "{h:?}");
    }

    // mail intact, and still flowing through the director
    let sent = &mut rig.sent;
    for (user, n) in sent.iter() {
        for pod in lab.backend_names() {
            assert_eq!(lab.inbox_count(&pod, user).unwrap(), *n, "{user} on {pod}");
        }
    }
    lab::lmtp_deliver(&dip, "user1", "after").unwrap();
    *sent.get_mut("user1").unwrap() += 1;
    let mut imap = ImapSession::login(&dip, "user1").unwrap();
    let lines = imap.command("SELECT INBOX").unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("* {} EXISTS", sent["user1"])),
        "{lines:?}"
    );
    imap.logout();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_verification_halts_and_keeps_the_backend_out() {
    let rig = rig(2);
    let lab = &rig.lab;
    // the new revision cannot read mail: verification must catch it
    lab.new_revision(
        "rev-broken",
        "mail_location = maildir:/nonexistent/%u/Maildir:INDEX=/var/dovecot/vmail/%u\nmail_attribute_dict =\n",
    );
    // a user whose INBOX exists only on the shared store
    let s = settings(json!({"verify": {"user": "user2"}}));
    let (out, _) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    let st = &out;
    assert_eq!(st.phase, Some(Phase::Failed));
    let stalled = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "BackendFailed")
    );
    let failed = st
        .backends
        .iter()
        .find(|r| r.failed)
        .expect("a failed backend");
    eprintln!("stalled as expected: {}", stalled.message);
    assert_eq!(failed.pod, "backend-2");
    assert_eq!(failed.step, Step::Verify);
    let err = failed.last_error.as_ref().unwrap();
    assert_eq!(err.argv[0], "doveadm");
    assert!(
        stalled.message.contains("backend-2") && stalled.message.contains("Verify"),
        "{}",
        stalled.message
    );
    // only one backend was touched, and it stays out of the ring
    assert_eq!(st.backends.len(), 1);
    let ring = lab.ring().unwrap();
    let b2 = ring.iter().find(|h| h.ip == failed.ip).unwrap();
    assert!(!b2.up && b2.vhosts == 0, "failed backend stays out: {b2:?}");
    for h in ring.iter().filter(|h| h.ip != failed.ip) {
        assert!(h.up && h.vhosts > 0, "others untouched: {h:?}");
    }
    assert_eq!(lab.pod_revision("backend-1").as_deref(), Some("rev-1"));
    assert_eq!(lab.pod_revision("backend-0").as_deref(), Some("rev-1"));
    // the director is still there for the others
    let _ = lab.doveadm(DIRECTOR_POD, &["director", "status"]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_comes_back_with_a_new_ip_replaces_its_ring_entry() {
    let rig = rig(4);
    let lab = &rig.lab;
    let old_ip = lab.pod_ip("backend-1").unwrap();
    let new_ip = "127.0.4.21";
    lab.move_on_recreate("backend-1", new_ip);
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let s = settings(json!({}));
    let (out, _) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(out.phase, Some(Phase::Completed), "{out:#?}");
    let rec = out.backends.iter().find(|r| r.pod == "backend-1").unwrap();
    assert_eq!(
        (rec.ip.as_str(), rec.new_ip.as_deref()),
        (old_ip.as_str(), Some(new_ip))
    );
    let ring: BTreeMap<String, (u32, bool)> = lab
        .ring()
        .unwrap()
        .into_iter()
        .map(|h| (h.ip, (h.vhosts, h.up)))
        .collect();
    assert_eq!(
        ring.get(new_ip),
        Some(&(50, true)),
        "new IP at the original count: {ring:?}"
    );
    assert!(!ring.contains_key(&old_ip), "old IP removed: {ring:?}");
    assert_eq!(ring.len(), 3);
    // and the moved backend serves mail
    assert_eq!(
        lab.inbox_count("backend-1", "user1").unwrap(),
        rig.sent["user1"]
    );
}

/// A rollout of backend-2 held in WaitSessions by a live IMAP session on it.
async fn held_in_drain(net: u8) -> (Rig, DovecotBackendUpgradeStatus, String, ImapSession) {
    let rig = rig(net);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    let target_ip = lab.pod_ip("backend-2").unwrap();
    // a long-lived session on backend-2 keeps its mapping alive, so the drain cannot finish
    let mut held = None;
    for u in 7..=30 {
        let user = format!("user{u}");
        let session = ImapSession::login(&dip, &user).unwrap();
        if lab.user_host(&user).unwrap().as_deref() == Some(target_ip.as_str()) {
            held = Some(session);
            break;
        }
        session.logout();
    }
    let held = held.expect("some user hashes to backend-2");
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "10m"}}));
    let exec = lab.exec();
    let mut status = DovecotBackendUpgradeStatus::default();
    for _ in 0..20 {
        let out = common::once(&s, status, &exec, lab).await;
        status = out.status;
        if status
            .backends
            .first()
            .is_some_and(|r| r.step == Step::WaitSessions)
        {
            break;
        }
    }
    let rec = &status.backends[0];
    assert_eq!(
        (rec.pod.as_str(), rec.step),
        ("backend-2", Step::WaitSessions)
    );
    let drained = lab
        .ring()
        .unwrap()
        .into_iter()
        .find(|h| h.ip == target_ip)
        .unwrap();
    assert_eq!(drained.vhosts, 0, "drained while the session holds on");
    (rig, status, target_ip, held)
}

fn assert_back_unreplaced(lab: &lab::Lab, ip: &str) {
    let back = lab
        .ring()
        .unwrap()
        .into_iter()
        .find(|h| h.ip == ip)
        .unwrap();
    assert!(
        back.up && back.vhosts == 20,
        "back at its original count: {back:?}"
    );
    assert_eq!(
        lab.pod_revision("backend-2").as_deref(),
        Some("rev-1"),
        "not replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_rollout_mid_drain_puts_the_backend_back() {
    let (rig, status, ip, _held) = held_in_drain(5).await;
    let lab = &rig.lab;
    let s = settings(json!({}));
    let done = engine::cleanup(&s, &status, &lab.exec(), lab, &now, false)
        .await
        .unwrap();
    assert!(done.finished(), "{done:?}");
    assert!(
        done.notes.iter().any(|n| n.reason == "BackendRestored"),
        "{done:?}"
    );
    assert_back_unreplaced(lab, &ip);
    // its registration in the ring's lock went with it
    assert!(lab.ring_holders().is_empty(), "{:?}", lab.ring_holders());
}

/// Deleting while no director answers: the finalizer stays (cleanup pending, retried), and
/// once the director is back the backend returns at its original count; only then may it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_while_the_director_is_away_waits_until_the_backend_is_back() {
    let started = std::time::Instant::now();
    let (rig, status, ip, held) = held_in_drain(34).await;
    let lab = &rig.lab;
    let s = settings(json!({}));
    drop(held);
    lab.stop_pod(DIRECTOR_POD);
    let mut tries = 0;
    let done = loop {
        tries += 1;
        let done = engine::cleanup(&s, &status, &lab.exec(), lab, &now, false)
            .await
            .unwrap();
        if done.finished() || tries == 3 {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(!done.finished(), "the finalizer stays: {done:?}");
    assert!(
        done.pending_message().contains("backend-2")
            && done.pending_message().contains("force-delete"),
        "{}",
        done.pending_message()
    );
    assert_eq!(lab.ring_holders().len(), 1, "still registered as out");
    // the director comes back (it forgot the drain: a restarted director reads its config)
    lab.start_director(0).unwrap();
    let done = engine::cleanup(&s, &status, &lab.exec(), lab, &now, false)
        .await
        .unwrap();
    assert!(done.finished(), "{done:?}");
    assert_back_unreplaced(lab, &ip);
    assert!(lab.ring_holders().is_empty());
    common::report(
        "deleting waits for the director",
        started,
        &format!(
            "{tries} cleanup passes pending while the director was away; then restored at its original count"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_drain_puts_the_backend_back_and_starts_nothing() {
    let (rig, status, ip, _held) = held_in_drain(6).await;
    let lab = &rig.lab;
    let s = settings(json!({"abort": true}));
    let exec = lab.exec();
    let mut status = status;
    let mut notes = Vec::new();
    for _ in 0..5 {
        let out = engine::reconcile_once(&s, status, Some(2), &exec, lab, &engine::NetProbes, &now)
            .await
            .unwrap();
        notes.extend(out.notes);
        status = out.status;
        if status.phase == Some(Phase::Aborted) {
            break;
        }
    }
    assert_eq!(status.phase, Some(Phase::Aborted), "{notes:?}");
    assert!(
        notes.iter().any(|n| n.reason == "BackendRestored"),
        "{notes:?}"
    );
    assert!(status.backends.is_empty(), "{:?}", status.backends);
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "Aborted")
    );
    assert!(
        stalled.message.contains("no backend is drained"),
        "{stalled:?}"
    );
    assert_back_unreplaced(lab, &ip);
    for h in lab.ring().unwrap() {
        assert!(h.up && h.vhosts > 0, "nothing left drained: {h:?}");
    }
    // resuming re-plans from scratch
    let s = settings(json!({}));
    let out = engine::reconcile_once(&s, status, Some(3), &exec, lab, &engine::NetProbes, &now)
        .await
        .unwrap();
    // (its Claim may follow in the same pass)
    let first = out.decisions().next();
    assert!(matches!(first, Some(Decision::Begin(_))), "{first:?}");
}

/// A human takes the draining backend down while its users leave (say, to look at it): abort
/// puts it back at its vhost count and leaves it down, and says so. The operator undoes only
/// what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_down_during_the_drain_stays_after_abort() {
    let (rig, status, ip, _held) = held_in_drain(42).await;
    let lab = &rig.lab;
    lab.doveadm(DIRECTOR_POD, &["director", "down", &ip])
        .unwrap();
    let s = settings(json!({"abort": true}));
    let exec = lab.exec();
    let mut status = status;
    let mut notes = Vec::new();
    for _ in 0..5 {
        let out = common::once(&s, status, &exec, lab).await;
        notes.extend(out.notes);
        status = out.status;
        if status.phase == Some(Phase::Aborted) {
            break;
        }
    }
    assert_eq!(status.phase, Some(Phase::Aborted), "{notes:?}");
    let restored = notes
        .iter()
        .find(|n| n.reason == "BackendRestored")
        .expect("restored");
    assert!(
        restored
            .message
            .contains("left down: a human took it down during the rollout"),
        "{restored:?}"
    );
    let ring = common::ring_of(lab, DIRECTOR_POD);
    assert_eq!(
        ring[&ip],
        (20, false),
        "its count back, still down: {ring:?}"
    );
}

/// The same when the DBU is deleted mid-drain: its cleanup reads the ring first, and the
/// human's down stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_down_during_the_drain_stays_after_delete() {
    let (rig, status, ip, _held) = held_in_drain(43).await;
    let lab = &rig.lab;
    lab.doveadm(DIRECTOR_POD, &["director", "down", &ip])
        .unwrap();
    let s = settings(json!({}));
    let done = engine::cleanup(&s, &status, &lab.exec(), lab, &now, false)
        .await
        .unwrap();
    assert!(done.finished(), "{done:?}");
    assert!(
        done.notes
            .iter()
            .any(|n| n.reason == "BackendRestored" && n.message.contains("a human took it down")),
        "{done:?}"
    );
    assert_eq!(common::ring_of(lab, DIRECTOR_POD)[&ip], (20, false));
}

/// Outside any rollout, a backend pod deleted by hand comes back at a new IP: the ring still
/// names its old IP (users hashed there fail) and the new pod is unverified. The DBU of its
/// StatefulSet, completed, takes the old entry out at once, verifies the new pod, and only
/// then puts the new IP in at the recorded count and removes the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_by_hand_after_the_rollout_rejoins_only_after_verify() {
    use dovecot_upgrade_operator::engine::Cluster;
    let rig = rig(44);
    let lab = &rig.lab;
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let s = settings(json!({}));
    let (done, _) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(done.phase, Some(Phase::Completed), "{done:#?}");
    let old_ip = lab.pod_ip("backend-1").unwrap();
    let new_ip = "127.0.44.21";
    lab.move_on_recreate("backend-1", new_ip);
    let uid = lab.pod_uid("backend-1").unwrap();
    lab.delete_pod("backend-1", &uid).await.unwrap();
    let (after, notes) = common::finish(&s, &lab.exec(), lab, done).await;
    assert_eq!(after.phase, Some(Phase::Completed), "{after:#?}");
    let order: Vec<String> = notes
        .iter()
        .map(|n| format!("{} {}", n.reason, n.step.map_or("", |s| s.as_str())))
        .collect();
    let came_back = notes
        .iter()
        .find(|n| n.reason == "BackendStarted")
        .expect("started");
    assert!(
        came_back
            .message
            .contains(&format!("came back at {new_ip} (was {old_ip})")),
        "{came_back:?}"
    );
    let pos = |what: &str| order.iter().position(|o| o == what);
    assert!(
        pos("RingReasserted ").is_some_and(|r| pos("StepSucceeded Verify").is_some_and(|v| r < v))
            && pos("StepSucceeded Verify") < pos("StepSucceeded RingRestore"),
        "old entry out first, verified, then restored: {order:?}"
    );
    let ring = common::ring_of(lab, DIRECTOR_POD);
    assert_eq!(ring.get(new_ip), Some(&(50, true)), "{ring:?}");
    assert!(!ring.contains_key(&old_ip), "old IP removed: {ring:?}");
    assert_eq!(
        lab.inbox_count("backend-1", "user1").unwrap(),
        rig.sent["user1"]
    );
}

/// After Verify passed, and before RingRestore puts the pod in the ring, a new template arrives
/// and the pod is recreated (a human's delete, an eviction): the new pod, at a new IP, cannot
/// read mail. RingRestore acts only on the pod Verify verified: it sends the backend back to
/// Replace, the new pod is verified, fails, and stays out. Its IP never serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_recreated_with_a_broken_revision_after_replace_never_joins_the_ring() {
    let started = Instant::now();
    let rig = rig(53);
    let lab = &rig.lab;
    lab.new_revision("rev-2", "");
    let s = settings(json!({}));
    let exec = lab.exec();
    let st = common::until_step(&s, &exec, lab, Step::RingRestore).await;
    let pod = st.backends[0].pod.clone();
    let verified_uid = st.backends[0]
        .new_pod_uid
        .clone()
        .expect("Replace bound the pod");
    assert_eq!(lab.pod_uid(&pod), Some(verified_uid.clone()));
    // a new template that cannot read mail, and the verified pod recreated at a new IP
    lab.new_revision(
        "rev-broken",
        "mail_location = maildir:/nonexistent/%u/Maildir:INDEX=/var/dovecot/vmail/%u\nmail_attribute_dict =\n",
    );
    let new_ip = "127.0.53.42";
    lab.move_on_recreate(&pod, new_ip);
    engine::Cluster::delete_pod(lab, &pod, &verified_uid)
        .await
        .unwrap();
    assert_eq!(lab.pod_ip(&pod).as_deref(), Some(new_ip));
    let mut st = st;
    let mut notes = Vec::new();
    let end = Instant::now() + std::time::Duration::from_secs(120);
    while !engine::stalled(&st) {
        assert!(Instant::now() < end, "{st:#?}");
        let out = common::once(&s, st, &exec, lab).await;
        notes.extend(out.notes);
        st = out.status;
        let serving = lab
            .ring()
            .unwrap()
            .into_iter()
            .find(|h| h.ip == new_ip)
            .is_some_and(|h| h.up && h.vhosts > 0);
        assert!(!serving, "the unverified pod's IP never serves: {st:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let rewound = notes
        .iter()
        .find(|n| n.reason == "StepRewound")
        .expect("sent back to Replace");
    assert!(
        rewound.message.contains(&verified_uid) && rewound.message.contains("back to Replace"),
        "{}",
        rewound.message
    );
    let rec = &st.backends[0];
    assert_eq!(
        (rec.pod.as_str(), rec.step, rec.failed),
        (pod.as_str(), Step::Verify, true)
    );
    let ring = lab.ring().unwrap();
    assert!(
        ring.iter()
            .all(|h| h.ip != new_ip || (h.vhosts == 0 && !h.up)),
        "{ring:?}"
    );
    assert_eq!(st.backends.len(), 1, "nothing else started");
    common::report(
        "pod recreated after Replace is verified again",
        started,
        &format!(
            "{}; then Verify of the recreated pod failed: {} never served",
            rewound.message, new_ip
        ),
    );
}

/// A user keeps an IMAP session on backend-2 through the drain's ceiling (strategy Wait): the
/// runbook's order stops Dovecot with the user still mapped. The rollout is paused right then.
/// The pause starts nothing new, but it still takes the stopped backend down and flushes it,
/// so the user logs in again at once, on another backend, while the pause lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_right_after_stop_dovecot_fails_no_login() {
    hold_right_after_stop_dovecot(54, "pause", "Paused", |s| {
        let mut paused = s.clone();
        paused.paused = true;
        paused
    })
    .await;
}

/// A spec refused mid-rollout (custom reset commands the operator's policy does not allow)
/// holds like a pause: the steps that protect users still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_refused_right_after_stop_dovecot_fails_no_login() {
    hold_right_after_stop_dovecot(56, "refused spec", "InvalidSpec", |_| {
        let refused = common::spec(json!({
            "drain": {"strategy": "Wait", "pollInterval": "1s", "timeout": "3s"},
            "reset": {"commands": [["/bin/rm", "-rf", "/var/vmail"]]}
        }));
        let policy = dovecot_upgrade_operator::settings::Policy::default();
        let annotations = Default::default();
        assert!(
            dovecot_upgrade_operator::settings::for_dbu(&refused, &policy, &annotations, false)
                .is_err()
        );
        dovecot_upgrade_operator::settings::for_dbu(&refused, &policy, &annotations, true)
            .expect("protective settings")
    })
    .await;
}

/// Rolls backend-2 (with an IDLE client's user mapped to it) to RingRemove, then holds the
/// rollout with `hold(settings)`: RingRemove still runs, the hold shows as `shown`, and the
/// user logs in again at once on another backend.
async fn hold_right_after_stop_dovecot(
    net: u8,
    name: &str,
    shown: &str,
    hold: impl FnOnce(&Settings) -> Settings,
) {
    let started = Instant::now();
    let rig = rig(net);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    let target_ip = lab.pod_ip("backend-2").unwrap();
    let (user, session) = (7..=30)
        .find_map(|u| {
            let user = format!("user{u}");
            let session = ImapSession::login(&dip, &user).unwrap();
            if lab.user_host(&user).unwrap().as_deref() == Some(target_ip.as_str()) {
                return Some((user, session));
            }
            session.logout();
            None
        })
        .expect("some user hashes to backend-2");
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"strategy": "Wait", "pollInterval": "1s", "timeout": "3s"}}));
    let exec = lab.exec();
    let st = common::until_step(&s, &exec, lab, Step::RingRemove).await;
    assert_eq!(st.backends[0].pod, "backend-2");
    drop(session); // its connection went with Dovecot
    // the drain's ceiling moved every user before anything stopped; a user the director maps
    // to the stopped backend now came by other hands (a human's `director move`, a director
    // that forgot), and the hold must not leave it there
    lab.doveadm(DIRECTOR_POD, &["director", "move", &user, &target_ip])
        .expect("director move to the stopped backend");
    assert_eq!(
        lab.user_host(&user).unwrap().as_deref(),
        Some(target_ip.as_str()),
        "mapped to the stopped backend"
    );
    // held right after StopDovecot
    let held = hold(&s);
    let mut st = st;
    let mut decisions = Vec::new();
    for _ in 0..4 {
        let out = common::once(&held, st, &exec, lab).await;
        decisions.push(
            format!("{:?}", out.decision)
                .chars()
                .take(40)
                .collect::<String>(),
        );
        st = out.status;
    }
    assert_eq!(st.backends[0].step, Step::Reset, "{decisions:?}");
    assert!(
        decisions.last().is_some_and(|d| d.contains(shown)),
        "{decisions:?}"
    );
    // the user logs in again while held: on another backend, at once
    let again = ImapSession::login(&dip, &user).expect("no failed login while held");
    let now_on = lab.user_host(&user).unwrap();
    assert!(
        now_on.as_deref().is_some_and(|ip| ip != target_ip),
        "{now_on:?}"
    );
    again.logout();
    assert_eq!(st.backends.len(), 1, "nothing new started while held");
    common::report(
        &format!("{name} right after StopDovecot"),
        started,
        &format!(
            "{user} was mapped to the stopped backend-2; held: RingRemove ran (down + flush), then {}; {user} logged in again on {}",
            decisions.last().unwrap(),
            now_on.unwrap()
        ),
    );
}

/// RingRestore adds a backend that stays down (a human's `down`, kept) at 0 vhosts, downs it,
/// then gives it its count, so it never takes users between two commands: `director add` at 0
/// is accepted by the real director and shows the host at 0 vhosts, up, until `down` and
/// `update`.
#[test]
fn a_host_added_at_zero_vhosts_takes_no_users_until_its_count() {
    let rig = rig(65);
    let lab = &rig.lab;
    let ip = "127.0.65.99";
    let status = |lab: &lab::Lab| {
        lab.run_in(DIRECTOR_POD, &["doveadm", "director", "status"])
            .expect("director status")
    };
    let row = |out: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(ip))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
    };
    lab.run_in(DIRECTOR_POD, &["doveadm", "director", "add", ip, "0"])
        .expect("add at 0");
    let first = status(lab);
    assert_eq!(
        row(&first).as_deref(),
        Some(&*format!("{ip} 0 up")),
        "{first}"
    );
    lab.run_in(DIRECTOR_POD, &["doveadm", "director", "down", ip])
        .expect("down");
    lab.run_in(DIRECTOR_POD, &["doveadm", "director", "update", ip, "50"])
        .expect("update");
    let last = status(lab);
    assert_eq!(
        row(&last).as_deref(),
        Some(&*format!("{ip} 50 down")),
        "{last}"
    );
}
