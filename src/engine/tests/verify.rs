//! Verify: doveadm reads and the LMTP probe at the new pod's IP.

use super::*;

/// The probe token Verify wrote into the record before its first delivery.
const TOKEN: &str = "backend-2.1800000000000";

/// A record at Verify whose probe token is written.
fn verifying() -> DovecotBackendUpgradeStatus {
    let mut st = at(Step::Verify);
    st.backends[0].probe_token = Some(TOKEN.into());
    st
}

#[tokio::test]
async fn verify_fails_when_the_mailbox_is_not_listed() {
    let s = settings();
    let list = s.backend.mailbox_list(&s.user);
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0)]))
        .once(
            "backend-2",
            s.backend.expunge_probe(&s.user, TOKEN),
            0,
            "",
            "",
        )
        .once("backend-2", list.clone(), 0, r#"[{"mailbox":"Trash"}]"#, "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    let out = once(&s, verifying(), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed);
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.argv, list);
    assert!(e.stderr.contains("not listed"), "{}", e.stderr);
}

/// Verify's doveadm checks as the script answers them, after the probe leftovers are removed.
fn verify_script(s: &Settings) -> Scripted {
    let b = &s.backend;
    ring_read(s, &ring_json(&[(0, 100, 0), (1, 50, 0)]))
        .once("backend-2", b.expunge_probe(&s.user, TOKEN), 0, "", "")
        .once(
            "backend-2",
            b.mailbox_list(&s.user),
            0,
            r#"[{"mailbox":"INBOX"}]"#,
            "",
        )
        .once(
            "backend-2",
            b.mailbox_status(&s.user, "INBOX"),
            0,
            r#"[{"mailbox":"INBOX","messages":"4"}]"#,
            "",
        )
        .once("backend-2", b.fetch_text(&s.user, "INBOX"), 0, "", "")
}

fn at_verify() -> (DovecotBackendUpgradeStatus, Fake) {
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let mut st = verifying();
    st.backends[0].new_ip = Some("127.0.0.99".into());
    (st, fake(world))
}

#[tokio::test]
async fn verify_delivers_a_probe_over_lmtp_to_the_new_pod_and_removes_it() {
    let s = settings();
    let exec = verify_script(&s).once(
        "backend-2",
        s.backend.expunge_probe(&s.user, TOKEN),
        0,
        "",
        "",
    );
    let (st, cluster) = at_verify();
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::RingRestore, "{rec:?}");
    let probed = cluster.probed.lock().unwrap().clone();
    assert_eq!(probed.len(), 1);
    assert_eq!(
        probed[0].0, "127.0.0.99:24",
        "the new pod's own IP, not the director"
    );
    assert!(
        probed[0].1.contains(&format!("X-DBU-Probe: {TOKEN}")),
        "{}",
        probed[0].1
    );
    // removed before and after: the expunge ran twice
    let expunges = exec
        .calls()
        .iter()
        .filter(|c| c.contains("expunge"))
        .count();
    assert_eq!(expunges, 2);
}

#[tokio::test]
async fn a_refused_lmtp_probe_fails_verify_naming_protocol_command_and_reply() {
    let s = settings();
    // the probe mail is expunged also after a failed probe
    let again = |e: Scripted| {
        e.once(
            "backend-2",
            s.backend.expunge_probe(&s.user, TOKEN),
            0,
            "",
            "",
        )
    };
    let exec = again(verify_script(&s));
    let (st, mut cluster) = at_verify();
    cluster.probe = Some(Err(crate::probe::ProbeFailure {
        command: "RCPT TO:<probe>".into(),
        reply: "550 5.1.1 <probe> User doesn't exist: probe".into(),
        transient: false,
    }));
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed);
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.step, Step::Verify);
    assert_eq!(e.argv, ["LMTP", "127.0.0.99:24", "RCPT TO:<probe>"]);
    assert!(e.stderr.starts_with("550 5.1.1"), "{e:?}");
    assert_eq!(e.reason.as_deref(), Some("ProbeFailed"));
    let expunges = exec
        .calls()
        .iter()
        .filter(|c| c.contains("expunge"))
        .count();
    assert_eq!(expunges, 2, "before the checks and after the failed probe");
    // an unreachable LMTP is retried, not failed at once
    let exec = again(verify_script(&s));
    let (st, mut cluster) = at_verify();
    cluster.probe = Some(Err(crate::probe::ProbeFailure {
        command: "connect".into(),
        reply: "no answer".into(),
        transient: true,
    }));
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!((rec.failed, rec.attempts), (false, 1));
}

#[tokio::test]
async fn verify_writes_its_probe_token_before_anything_is_delivered() {
    let s = settings();
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0)]));
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    let out = once(&s, at(Step::Verify), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::Verify);
    assert!(
        rec.probe_token
            .as_deref()
            .is_some_and(|t| t.starts_with("backend-2.")),
        "{rec:?}"
    );
    assert!(
        exec.calls().iter().all(|c| !c.contains("expunge")),
        "nothing expunged before the token is written: {:?}",
        exec.calls()
    );
    assert!(
        cluster.probed.lock().unwrap().is_empty(),
        "nothing delivered"
    );
    assert_eq!(out.requeue, Some(std::time::Duration::ZERO));
}
