//! Nothing stuck (issue 12): waits that end, on a real Dovecot 2.3 director and backends.
//!
//! Needs root (mount namespaces) and Debian's dovecot-core, dovecot-imapd and dovecot-lmtpd;
//! `.ci/run` installs them. Each test uses its own 127.0.3x.0/24.

mod common;

use std::time::Instant;

use common::{report, rig, settings};
use dbu_lab::ImapSession;
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase};
use serde_json::json;

/// A client that bypasses the director (straight to the backend) keeps a session the director
/// does not count: with no users mapped, the drain ceiling still ends the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_ceiling_holds_sessions_the_director_does_not_count() {
    let started = Instant::now();
    let rig = rig(31);
    let lab = &rig.lab;
    // backend-2 goes first (ordinal order); user3 logs in to it directly, not via the director
    let ip = lab.pod_ip("backend-2").unwrap();
    let mut bypass = ImapSession::login(&ip, "user3").expect("direct login");
    bypass.command("SELECT INBOX").unwrap();
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "15s"}}));
    let (st, notes) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    let ceiling = notes
        .iter()
        .find(|n| n.reason == "StepSucceeded" && n.message.contains("drain ceiling"))
        .expect("the ceiling ended the wait");
    assert!(
        ceiling.message.contains("sessions still on the backend"),
        "{}",
        ceiling.message
    );
    report(
        "drain ceiling holds bypassing sessions",
        started,
        &ceiling.message,
    );
}
