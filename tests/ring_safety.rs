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
    let out = engine::reconcile_once(&s, st, Some(1), &exec, lab, &now)
        .await
        .unwrap();
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
    let out = engine::reconcile_once(&s, out.status, Some(1), &exec, lab, &now)
        .await
        .unwrap();
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
