//! Nothing stuck (issue 12): waits that end, on a real Dovecot 2.3 director and backends.
//!
//! Needs root (mount namespaces) and Debian's dovecot-core, dovecot-imapd and dovecot-lmtpd;
//! `.ci/run` installs them. Each test uses its own 127.0.3x.0/24.

mod common;

use std::time::Instant;

use common::{report, rig, settings};
use dbu_lab::{ImapSession, LabSpec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
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

/// What a client sees of `user`'s mail through `ip`: UIDVALIDITY, UIDs with flags and keywords,
/// subscriptions. \Recent is left out: it belongs to the session, not to the mail.
fn mail_seen(ip: &str, user: &str) -> Vec<String> {
    let mut s = ImapSession::login(ip, user).expect("login");
    let mut seen = Vec::new();
    for cmd in [
        // not UIDNEXT: Verify's LMTP probe delivers (and removes) one message per backend
        "STATUS INBOX (UIDVALIDITY MESSAGES)",
        "STATUS Work (UIDVALIDITY MESSAGES)",
        "LSUB \"\" \"*\"",
        "SELECT INBOX",
        "UID FETCH 1:* (FLAGS)",
    ] {
        let lines = s.command(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        if cmd.starts_with("SELECT") {
            continue;
        }
        seen.extend(lines.into_iter().map(|l| l.trim().replace("\\Recent", "")));
    }
    s.logout();
    seen
}

/// Keywords, a subscription, a second folder and a sieve script for `user`, set through `ip`.
fn give_mail_metadata(ip: &str, user: &str, home: &std::path::Path) {
    let mut s = ImapSession::login(ip, user).expect("login");
    for cmd in [
        "CREATE Work",
        "SUBSCRIBE Work",
        "SELECT INBOX",
        "STORE 1 +FLAGS ($Label1 \\Seen)",
        "STORE 2 +FLAGS (Project-X)",
    ] {
        s.command(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    s.logout();
    std::fs::write(
        home.join(".dovecot.sieve"),
        "require \"fileinto\"; fileinto \"Work\";\n",
    )
    .unwrap();
}

/// The shipped example's layout (mail, CONTROL and home on the shared store, INDEX per pod):
/// the default reset wipes only the index, and a client sees the same UIDVALIDITY, UIDs,
/// keywords and subscriptions afterwards, through the director, on two different backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_the_shipped_layout_keeps_every_bit_of_mail_metadata() {
    let started = Instant::now();
    let rig = rig(32);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    let home = rig._dir.path().join("shared-mail").join("user1");
    give_mail_metadata(&dip, "user1", &home);
    let before = mail_seen(&dip, "user1");
    assert!(before.iter().any(|l| l.contains("$Label1")), "{before:?}");
    assert!(before.iter().any(|l| l.contains("Work")), "{before:?}");
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "15s"}}));
    let (st, notes) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}\n{notes:#?}");
    // the index was wiped on every backend (the runbook's cache reset ran)...
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.message.contains(": Reset done"))
            .count(),
        3
    );
    // ...and the mail metadata is unchanged, read from two different backends
    let first = mail_seen(&dip, "user1");
    let host = lab.user_host("user1").unwrap().expect("user1 mapped");
    let other = (0..3)
        .map(|i| lab.spec.backend_ip(i))
        .find(|ip| *ip != host)
        .unwrap();
    lab.doveadm(
        dbu_lab::DIRECTOR_POD,
        &["director", "move", "user1", &other],
    )
    .unwrap();
    assert_eq!(lab.user_host("user1").unwrap().as_deref(), Some(&*other));
    let second = mail_seen(&dip, "user1");
    assert_eq!(first, before, "after the rollout, on {host}");
    assert_eq!(second, before, "after the rollout, on {other}");
    assert!(home.join(".dovecot.sieve").exists(), "sieve script kept");
    report(
        "shipped layout keeps mail metadata",
        started,
        &format!("UIDVALIDITY, UIDs, keywords, subscriptions unchanged on {host} and {other}"),
    );
}

/// The old example's layout (CONTROL= and home on the per-pod volume): the guard stops the
/// first backend at Reset before anything is deleted; it stays out of the ring, Stalled says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reset_guard_stops_before_deleting_control_files_and_home() {
    let started = Instant::now();
    let rig = common::rig_with(|d| LabSpec {
        legacy_layout: true,
        ..LabSpec::new(d, 33, vec![100, 50, 20])
    });
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    // user3's mail: on whichever backend the director maps it to
    let vmail_of = |pod: &str| rig._dir.path().join("pods").join(pod).join("vmail");
    let host = lab.user_host("user3").unwrap();
    let pods = lab.backend_names();
    let pod_of_home = pods
        .iter()
        .find(|p| lab.pod_ip(p) == host)
        .cloned()
        .unwrap_or_else(|| "backend-2".into());
    give_mail_metadata(&dip, "user3", &vmail_of(&pod_of_home).join("user3"));
    let files_before: Vec<_> = pods.iter().map(|p| count_files(&vmail_of(p))).collect();
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "15s"}}));
    let (st, notes) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    let stalled = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "ResetWouldDeleteMailData"),
        "{st:#?}"
    );
    // backend-2 goes first (ordinal order): stopped at Reset, kept out, nothing deleted
    assert!(stalled.message.contains("backend-2"), "{}", stalled.message);
    assert!(
        stalled.message.contains("/var/dovecot/vmail"),
        "{}",
        stalled.message
    );
    let rec = &st.backends[0];
    assert_eq!((rec.pod.as_str(), rec.step), ("backend-2", Step::Reset));
    let ring = lab.ring().unwrap();
    let b2 = ring
        .iter()
        .find(|h| h.ip == lab.spec.backend_ip(2))
        .unwrap();
    assert_eq!((b2.vhosts, b2.up), (0, false), "kept out of the ring");
    let files_after: Vec<_> = pods.iter().map(|p| count_files(&vmail_of(p))).collect();
    assert_eq!(files_after, files_before, "nothing deleted");
    assert!(
        !notes.iter().any(|n| n.message.contains("Reset done")),
        "{notes:#?}"
    );
    report(
        "reset guard stops the old layout",
        started,
        &format!(
            "{}; files per pod vmail unchanged: {files_after:?}",
            stalled.message
        ),
    );
}

fn count_files(dir: &std::path::Path) -> usize {
    walk(dir).len()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A DBU deleted with a backend left out (replaced, before Verify): the ring's lock keeps it
/// as out, and the next DBU of the StatefulSet adopts it first, finishes it (Verify, back at
/// its original count) and then rolls the rest, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_finishes_a_backend_its_deleted_predecessor_left_out() {
    let started = Instant::now();
    let rig = rig(35);
    let lab = &rig.lab;
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "15s"}}));
    let exec = lab.exec();
    let st = common::until_step(&s, &exec, lab, Step::Verify).await;
    let done = dovecot_upgrade_operator::engine::cleanup(&s, &st, &exec, lab, &common::now, false)
        .await
        .unwrap();
    assert!(done.finished(), "{done:?}");
    assert!(
        done.notes.iter().any(|n| n.reason == "BackendLeftOut"),
        "{done:?}"
    );
    let holders = lab.ring_holders();
    assert_eq!(holders.len(), 1);
    assert!(holders[0].left_out.is_some(), "kept as out: {holders:?}");
    let ip2 = lab.pod_ip("backend-2").unwrap();
    let b2 = lab
        .ring()
        .unwrap()
        .into_iter()
        .find(|h| h.ip == ip2)
        .unwrap();
    assert_eq!((b2.vhosts, b2.up), (0, false), "still out");
    // the successor: a new DBU (same StatefulSet, same name re-applied is a new one too)
    let successor = lab.view("backend", "lab/rollout");
    let (st, notes) = common::finish(
        &s,
        &exec,
        &successor,
        DovecotBackendUpgradeStatus::default(),
    )
    .await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    let adopted = notes
        .iter()
        .position(|n| n.reason == "BackendAdopted")
        .expect("adopted");
    let first_begin = notes.iter().position(|n| n.reason == "BackendStarted");
    assert!(
        first_begin.is_none_or(|b| b > adopted),
        "adopted before anything starts"
    );
    let ring = lab.ring().unwrap();
    for (i, want) in [100, 50, 20].into_iter().enumerate() {
        let ip = lab.spec.backend_ip(i);
        let h = ring.iter().find(|h| h.ip == ip).unwrap();
        assert_eq!((h.vhosts, h.up), (want, true), "{ip}");
    }
    assert!(lab.ring_holders().is_empty(), "{:?}", lab.ring_holders());
    report(
        "successor adopts a left-out backend",
        started,
        &notes[adopted].message,
    );
}

/// A revision whose LMTP service is off passes the doveadm checks (they read the store), but
/// Verify's LMTP probe to the new pod's own IP fails: the backend stays out and the rollout
/// halts naming the protocol and the reply. A good revision's probe leaves no mail behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_probes_lmtp_on_the_new_pod_and_leaves_no_probe_mail() {
    let started = Instant::now();
    let rig = rig(36);
    let lab = &rig.lab;
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "15s"}}));
    let user = s.user.clone();
    let count = |lab: &dbu_lab::Lab| lab.inbox_count("backend-0", &user).unwrap();
    // mail of the verify user that carries the probe header but is not this rollout's probe:
    // another DBU's probe in flight (same pod name, another time), and the user's own
    let dip = lab.spec.director_ip();
    for (subject, header) in [
        (
            "another DBU's probe",
            "X-DBU-Probe: backend-2.1700000000000",
        ),
        ("the user's own", "X-DBU-Probe: kept by the user"),
    ] {
        dbu_lab::lmtp_deliver_with(&dip, &user, subject, &[header]).unwrap();
    }
    let before = count(lab);
    lab.new_revision("rev-2", "protocols = imap");
    let (st, notes) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    let stalled = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.status, "True", "{st:#?}");
    assert!(
        stalled.message.contains("step Verify") && stalled.message.contains("LMTP"),
        "{}",
        stalled.message
    );
    let rec = &st.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Verify, true));
    let ip = lab.pod_ip(&rec.pod).unwrap();
    let h = lab
        .ring()
        .unwrap()
        .into_iter()
        .find(|h| h.ip == ip)
        .unwrap();
    assert_eq!((h.vhosts, h.up), (0, false), "kept out of the ring");
    let refused = stalled.message.clone();
    // a fixed revision and a retry: the probe passes, and no probe message stays
    lab.new_revision("rev-3", "");
    let mut retry = s.clone();
    retry.retry_token = Some("1".into());
    let (st, more) = common::finish(&retry, &lab.exec(), lab, st).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}\n{notes:#?}");
    assert!(
        more.iter().any(|n| n
            .message
            .contains("LMTP on port 24 accepted a probe message")),
        "{more:#?}"
    );
    assert_eq!(
        count(lab),
        before,
        "no probe message left in the verify user's INBOX, and none of the others removed"
    );
    report("LMTP probe", started, &refused);
}

/// The probes, except that the first LMTP probe is cut off right after the message was accepted,
/// as if the operator died before it could record Verify done or remove the message.
struct CutAfterDelivery {
    cut: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl dovecot_upgrade_operator::engine::Probes for CutAfterDelivery {
    async fn lmtp(
        &self,
        ip: &str,
        port: u16,
        timeout: std::time::Duration,
        user: &str,
        message: &str,
    ) -> Result<(), dovecot_upgrade_operator::probe::ProbeFailure> {
        dovecot_upgrade_operator::probe::lmtp(ip, port, timeout, user, message).await?;
        if self.cut.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(dovecot_upgrade_operator::probe::ProbeFailure {
                command: ".".into(),
                reply: "cut off after the message was accepted (test)".into(),
                transient: true,
            });
        }
        Ok(())
    }
    async fn imap(
        &self,
        target: &dovecot_upgrade_operator::probe::ImapTarget,
        input: dbu_core::imap::ProbeInput,
    ) -> Result<(), dovecot_upgrade_operator::probe::ProbeFailure> {
        dovecot_upgrade_operator::probe::imap(target, input).await
    }
}

/// The operator is cut off in the middle of the probe (the message delivered, Verify not
/// recorded): the next pass finishes Verify and leaves no probe message behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_cut_off_midway_leaves_no_probe_mail() {
    let started = Instant::now();
    let rig = rig(37);
    let lab = &rig.lab;
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "15s"}}));
    let before = lab.inbox_count("backend-0", &s.user).unwrap();
    lab.new_revision("rev-2", "");
    let cut = CutAfterDelivery {
        cut: std::sync::atomic::AtomicBool::new(true),
    };
    let (st, notes) = common::finish_probing(
        &s,
        &lab.exec(),
        lab,
        &cut,
        DovecotBackendUpgradeStatus::default(),
    )
    .await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    assert!(
        notes
            .iter()
            .any(|n| n.reason == "StepRetrying" && n.message.contains("Verify")),
        "the cut-off probe was retried: {notes:#?}"
    );
    assert_eq!(
        lab.inbox_count("backend-0", &s.user).unwrap(),
        before,
        "no probe message left"
    );
    report(
        "probe cut off midway",
        started,
        "retried; no probe mail left",
    );
}
