//! Rollouts under faults against a real Dovecot ring: live traffic, crashes, director restarts,
//! a dead ring member, failed verification, flaky exec, Dovecot dying on its own.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{finish, report, rig, rig_with, ring_of, settings, until};
use dbu_lab::faults::{FaultKind, FaultyExec};
use dbu_lab::traffic::{Traffic, TrafficSpec};
use dbu_lab::{ImapSession, Lab, LabSpec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::engine::{self, Cluster};
use dovecot_upgrade_operator::machine::{Decision, Note};
use serde_json::json;

fn at(status: &DovecotBackendUpgradeStatus, pod: &str, step: Step) -> bool {
    status
        .backends
        .iter()
        .any(|r| r.pod == pod && r.step == step)
}

fn started_once(notes: &[Note], pods: &[String]) {
    for pod in pods {
        let n = notes
            .iter()
            .filter(|n| n.reason == "BackendStarted" && n.message.starts_with(&format!("{pod}:")))
            .count();
        assert_eq!(n, 1, "{pod} started exactly once");
    }
}

fn all_back(lab: &Lab, director: &str, want: &BTreeMap<String, u32>) {
    let ring = ring_of(lab, director);
    for (ip, v) in want {
        assert_eq!(
            ring.get(ip),
            Some(&(*v, true)),
            "{director}: {ip} back at {v}: {ring:?}"
        );
    }
}

/// Vhost count per backend IP, as director-0 has it now.
fn vhosts(lab: &Lab) -> BTreeMap<String, u32> {
    ring_of(lab, "director-0")
        .into_iter()
        .map(|(ip, (v, _))| (ip, v))
        .collect()
}

/// Holds an IMAP session on backend-2 (so its drain cannot end), moves to revision rev-2, and
/// reconciles until backend-2 sits in WaitSessions.
async fn drain_backend_2_with_a_session_held(
    lab: &Lab,
    s: &dovecot_upgrade_operator::settings::Settings,
    exec: &dbu_lab::LocalExec,
) -> (Option<ImapSession>, DovecotBackendUpgradeStatus, Vec<Note>) {
    let ip2 = lab.pod_ip("backend-2").unwrap();
    let held = users_hashed_to(lab, &ip2)
        .into_iter()
        .find_map(|u| ImapSession::login(&lab.spec.director_ip(), &u).ok());
    assert!(held.is_some(), "a session on backend-2");
    lab.new_revision("rev-2", "");
    let (status, notes) = until(
        s,
        exec,
        lab,
        DovecotBackendUpgradeStatus::default(),
        Duration::from_secs(60),
        |st| at(st, "backend-2", Step::WaitSessions),
    )
    .await;
    (held, status, notes)
}

/// Users the director hashes to `ip` right now.
fn users_hashed_to(lab: &Lab, ip: &str) -> Vec<String> {
    (1..=lab.spec.users)
        .map(|u| format!("user{u}"))
        .filter(|u| {
            let out = lab
                .doveadm("director-0", &["-f", "json", "director", "status", u])
                .unwrap();
            out.contains(&format!("\"hashed\":\"{ip}\""))
        })
        .collect()
}

/// Scenario 1: two directors, three backends, IMAP and LMTP traffic through the whole rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_clean_rollout_with_live_traffic() {
    let t0 = Instant::now();
    let rig = rig_with(|d| {
        let mut s = LabSpec::new(d, 10, vec![100, 50, 20]);
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let original = vhosts(lab);
    // all traffic goes to users of backend-0: backends 2 and 1 drain early, backend-0 hits the ceiling
    let ip0 = lab.pod_ip("backend-0").unwrap();
    let users = users_hashed_to(lab, &ip0);
    assert!(
        users.len() >= 8,
        "enough users hash to backend-0: {users:?}"
    );
    let before: BTreeMap<String, u64> = users
        .iter()
        .map(|u| (u.clone(), rig.sent.get(u).copied().unwrap_or(0)))
        .collect();
    let traffic = Traffic::start(TrafficSpec {
        directors: vec![lab.spec.director_ip_of(0), lab.spec.director_ip_of(1)],
        long_lived: users[0..3].to_vec(),
        loopers: users[3..5].to_vec(),
        recipients: users[..8].to_vec(),
        lmtp_interval: Duration::from_millis(100),
        max_duration: Duration::from_secs(400),
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "20s"}}));
    let (status, notes) =
        finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = traffic.stop();

    assert_eq!(
        status.phase,
        Some(Phase::Completed),
        "{status:#?}\n{notes:#?}"
    );
    let pods = lab.backend_names();
    started_once(&notes, &pods);
    for pod in &pods {
        assert_eq!(lab.creations(pod), 2, "{pod} replaced exactly once");
        assert_eq!(lab.pod_revision(pod).as_deref(), Some("rev-2"));
    }
    let drain = |pod: &str| {
        notes
            .iter()
            .find(|n| {
                n.reason == "StepSucceeded"
                    && n.message.starts_with(&format!("{pod}: WaitSessions done"))
            })
            .map(|n| n.message.clone())
            .unwrap()
    };
    assert!(
        drain("backend-2").contains("no users left"),
        "{}",
        drain("backend-2")
    );
    assert!(
        drain("backend-1").contains("no users left"),
        "{}",
        drain("backend-1")
    );
    assert!(
        drain("backend-0").contains("drain ceiling reached"),
        "{}",
        drain("backend-0")
    );
    // flush kicked the long-lived sessions; they came back elsewhere
    assert!(stats.reconnects >= 3, "{stats:#?}");
    assert!(
        stats.perm_failures.is_empty() && stats.given_up == 0,
        "{stats:#?}"
    );
    // no accepted message lost (and none invented beyond the uncertain ones)
    for (user, n0) in &before {
        let got = lab.inbox_count("backend-1", user).unwrap();
        let acc = n0 + stats.accepted.get(user).copied().unwrap_or(0);
        assert!(
            got >= acc && got <= acc + stats.uncertain,
            "{user}: fetched {got}, accepted {acc}, {stats:#?}"
        );
    }
    for d in ["director-0", "director-1"] {
        all_back(lab, d, &original);
    }
    let accepted: u64 = stats.accepted.values().sum();
    report(
        "1 clean rollout, live traffic, 2 directors",
        t0,
        &format!(
            "{accepted} messages accepted, all fetched; {} LMTP 4xx retried, {} with an uncertain outcome (retried; a duplicate is possible, a loss is not); {} IMAP logins ok, {} failed; {} kicked sessions reconnected; drains: b2/b1 early, b0 at the 20s ceiling",
            stats.temp_failures,
            stats.uncertain,
            stats.logins_ok,
            stats.logins_failed,
            stats.reconnects
        ),
    );
}

/// Scenario 2: the operator dies just before and just after every step of every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_crash_before_and_after_every_step() {
    let t0 = Instant::now();
    let rig = rig(11);
    let lab = &rig.lab;
    let original = vhosts(lab);
    lab.new_revision("rev-2", "login_greeting = Lab rev-2 ready");
    // the only memory that survives a crash is the status: rebuild everything else on restart
    let restart = || (settings(json!({})), lab.exec());
    let (mut s, mut exec) = restart();
    let mut status = DovecotBackendUpgradeStatus::default();
    let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    let final_status = loop {
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {status:#?}"
        );
        // before: the intent of a step is persisted; the operator dies before acting on it
        if let Some(r) = status.backends.iter().find(|r| r.step != Step::Done)
            && before.insert((r.pod.clone(), r.step))
        {
            (s, exec) = restart();
            continue;
        }
        let out = common::once(&s, status.clone(), &exec, lab).await;
        // after: the step acted, the status patch never happened
        if let Decision::Run { pod, step, .. } = &out.decision
            && after.insert((pod.clone(), *step))
        {
            (s, exec) = restart();
            continue;
        }
        if out.decision == Decision::Complete || engine::stalled(&out.status) {
            break out.status;
        }
        tokio::time::sleep(out.requeue.unwrap_or(Duration::from_secs(1))).await;
        status = out.status;
    };
    assert_eq!(
        final_status.phase,
        Some(Phase::Completed),
        "{final_status:#?}"
    );
    let mut matrix = Vec::new();
    for step in Step::ALL.iter().filter(|s| **s != Step::Done) {
        for pod in lab.backend_names() {
            assert!(
                before.contains(&(pod.clone(), *step)),
                "{pod}: crash before {step}"
            );
            assert!(
                after.contains(&(pod.clone(), *step)),
                "{pod}: crash after {step}"
            );
        }
        matrix.push(format!("{step}: before=pass after=pass"));
    }
    for pod in lab.backend_names() {
        assert_eq!(
            lab.creations(&pod),
            2,
            "{pod} replaced exactly once despite the crashes"
        );
        assert_eq!(lab.pod_revision(&pod).as_deref(), Some("rev-2"));
    }
    all_back(lab, "director-0", &original);
    for (user, n) in &rig.sent {
        assert_eq!(lab.inbox_count("backend-0", user).unwrap(), *n, "{user}");
    }
    report("2 crash before/after every step", t0, &matrix.join("; "));
}

/// Scenario 3: a single director restarts mid-drain and forgets `update 0`; it is re-asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_director_restart_mid_drain() {
    let t0 = Instant::now();
    let rig = rig(12);
    let lab = &rig.lab;
    let ip2 = lab.pod_ip("backend-2").unwrap();
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "25s"}}));
    let exec = lab.exec();
    let (held, status, mut notes) = drain_backend_2_with_a_session_held(lab, &s, &exec).await;
    assert_eq!(ring_of(lab, "director-0")[&ip2].0, 0, "drained");
    lab.restart_pod("director-0").unwrap();
    drop(held);
    assert_eq!(
        ring_of(lab, "director-0")[&ip2],
        (100, true),
        "the restarted director forgot the drain: back to its config default"
    );
    let (status, more) = finish(&s, &exec, lab, status).await;
    notes.extend(more);
    assert_eq!(status.phase, Some(Phase::Completed), "{status:#?}");
    let pos = |reason: &str, prefix: &str| {
        notes
            .iter()
            .position(|n| n.reason == reason && n.message.starts_with(prefix))
            .unwrap_or_else(|| panic!("{reason} {prefix}: {notes:#?}"))
    };
    assert!(
        pos("RingReasserted", "backend-2") < pos("StepStarted", "backend-2: StopLmtp"),
        "re-asserted before going on"
    );
    let ring = ring_of(lab, "director-0");
    assert_eq!(
        ring[&ip2],
        (20, true),
        "the recorded original count is restored"
    );
    assert!(ring.values().all(|(v, up)| *up && *v > 0), "{ring:?}");
    report(
        "3 director restart mid-drain",
        t0,
        "update 0 re-asserted before StopLmtp; backend-2 restored to its recorded 20 vhosts (the others read 100 after the restart, as the director's config says)",
    );
}

/// Scenario 4: one of two directors is dead; ring commands block ~20 s but the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_dead_ring_member() {
    let t0 = Instant::now();
    let rig = rig_with(|d| {
        let mut s = LabSpec::new(d, 13, vec![100, 50, 20]);
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let original = vhosts(lab);
    lab.stop_pod("director-1");
    lab.new_revision("rev-2", "");
    let s = settings(json!({"timeouts": {"command": "45s", "stop": "30s", "replace": "60s"}}));
    let (status, notes) =
        finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(
        status.phase,
        Some(Phase::Completed),
        "{status:#?}\n{notes:#?}"
    );
    all_back(lab, "director-0", &original);
    report(
        "4 dead ring member",
        t0,
        "director-1 stopped; director commands on director-0 block until the ring gives up on it, all within the 45s exec timeout; rollout completed",
    );
}

/// Through a failing rollout and its fix, the DBU turned Stalled once, for this reason: never
/// first for another one (GitOps tools fail or degrade on any Stalled=True).
fn stalled_once_for(notes: &[Note], reason: &str) {
    let stalls: Vec<&str> = notes
        .iter()
        .filter(|n| n.reason == "Stalled")
        .map(|n| n.message.as_str())
        .collect();
    assert_eq!(stalls.len(), 1, "{stalls:#?}");
    assert!(stalls[0].starts_with(&format!("{reason}:")), "{stalls:#?}");
}

/// The admin fixes the config (a new revision, rev-3) and asks for a retry: the failed backend
/// goes back to Reset and the rollout completes with every backend at rev-3. Its notes.
async fn fix_and_retry(
    s: &mut dovecot_upgrade_operator::settings::Settings,
    exec: &dbu_lab::LocalExec,
    lab: &Lab,
    status: DovecotBackendUpgradeStatus,
) -> Vec<Note> {
    lab.new_revision("rev-3", "login_greeting = fixed");
    s.retry_token = Some("fix-1".into());
    let (status, notes) = finish(s, exec, lab, status).await;
    assert_eq!(
        status.phase,
        Some(Phase::Completed),
        "{status:#?}\n{notes:#?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.reason == "RetryRequested" && n.message.contains("from Reset")),
        "{notes:#?}"
    );
    for pod in lab.backend_names() {
        assert_eq!(lab.pod_revision(&pod).as_deref(), Some("rev-3"));
    }
    notes
}

/// Scenario 5b: a revision whose config Dovecot refuses: the new pod never gets Ready and the
/// rollout halts at Replace; a fixed revision plus a retry replaces that pod and completes.
/// (Rerunning from StopLmtp would fail for ever: every doveadm in that pod fails on its config.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5b_pod_never_ready_then_fix_and_retry() {
    let t0 = Instant::now();
    let rig = rig(17);
    let lab = &rig.lab;
    let original = vhosts(lab);
    lab.new_revision("rev-refused", "dbu_no_such_setting = yes\n");
    let mut s = settings(json!({"verify": {"user": "user2"}, "timeouts": {"replace": "5s"}}));
    let exec = lab.exec();
    let (status, notes) = finish(&s, &exec, lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}\n{notes:#?}");
    let failed = status.backends.iter().find(|r| r.failed).unwrap().clone();
    let err = failed.last_error.clone().unwrap();
    assert_eq!(err.step, Step::Replace, "{err:?}");
    assert_eq!(
        lab.pod_revision(&failed.pod).as_deref(),
        Some("rev-refused"),
        "the pod the StatefulSet made at the refused revision is there, not Ready"
    );
    assert_eq!(
        ring_of(lab, "director-0")[&failed.ip],
        (0, false),
        "stays out"
    );

    let fixed = fix_and_retry(&mut s, &exec, lab, status).await;
    stalled_once_for(&[notes, fixed].concat(), "BackendFailed");
    assert_eq!(lab.creations(&failed.pod), 3, "rev-1, rev-refused, rev-3");
    all_back(lab, "director-0", &original);
    report(
        "5b pod never Ready, fix, retry",
        t0,
        &format!(
            "halted at Replace of {} ({}), kept out; mailops.io/retry after a fixed revision reset and replaced the pod that never started and completed",
            failed.pod, err.stderr
        ),
    );
}

/// Scenario 5: the new config breaks mailbox access; the rollout halts; a fix plus a retry completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_failed_verification_then_fix_and_retry() {
    let t0 = Instant::now();
    let rig = rig(14);
    let lab = &rig.lab;
    let original = vhosts(lab);
    lab.new_revision(
        "rev-broken",
        "mail_location = maildir:/nonexistent/%u/Maildir:INDEX=/var/dovecot/vmail/%u\n",
    );
    let mut s = settings(json!({"verify": {"user": "user2"}}));
    let exec = lab.exec();
    let (status, notes) = finish(&s, &exec, lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(status.phase, Some(Phase::Failed));
    let failed = status.backends.iter().find(|r| r.failed).unwrap();
    let err = failed.last_error.clone().unwrap();
    assert_eq!((failed.pod.as_str(), err.step), ("backend-2", Step::Verify));
    assert!(
        err.exit_code.is_some_and(|c| c != 0) && !err.stderr.is_empty(),
        "{err:?}"
    );
    assert_eq!(failed.attempts, 1, "a non-zero exit is not retried blindly");
    assert!(!notes.iter().any(|n| n.reason == "StepRetrying"));
    let ip2 = failed.ip.clone();
    assert_eq!(ring_of(lab, "director-0")[&ip2], (0, false), "stays out");
    assert_eq!(
        lab.pod_revision("backend-1").as_deref(),
        Some("rev-1"),
        "others untouched"
    );
    // a reconcile while stalled changes nothing
    let (again, _) = until(
        &s,
        &exec,
        lab,
        status.clone(),
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    assert_eq!(again.backends, status.backends);

    let failing = notes;
    let notes = fix_and_retry(&mut s, &exec, lab, status).await;
    stalled_once_for(&[failing, notes.clone()].concat(), "BackendFailed");
    // Reset found Dovecot running in the failed pod and rewound to the stop: the runbook ran
    // again from StopLmtp
    assert!(
        notes
            .iter()
            .any(|n| n.reason == "StepRewound" && n.message.contains("Dovecot is running")),
        "{notes:#?}"
    );
    assert_eq!(lab.creations("backend-2"), 3, "rev-1, rev-broken, rev-3");
    assert_eq!(lab.creations("backend-1"), 2, "straight to rev-3");
    all_back(lab, "director-0", &original);
    report(
        "5 failed verification, fix, retry",
        t0,
        &format!(
            "halted at Verify of backend-2 (exit {:?}), kept out, others untouched; mailops.io/retry after a fixed revision reran it from the stop (Reset rewound to StopLmtp) and completed",
            err.exit_code
        ),
    );
}

/// Scenario 6: dropped exec connections and hanging commands are retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_transient_exec_failures() {
    let t0 = Instant::now();
    let rig = rig(15);
    let lab = &rig.lab;
    let original = vhosts(lab);
    lab.new_revision("rev-2", "");
    let exec = FaultyExec::new(lab.exec());
    exec.inject("director update", FaultKind::DropBefore, 1);
    exec.inject("service stop lmtp", FaultKind::Hang, 1);
    exec.inject("doveadm stop", FaultKind::DropAfter, 1);
    exec.inject("director flush", FaultKind::Hang, 1);
    exec.inject("mailbox list", FaultKind::DropAfter, 1);
    exec.inject("director up", FaultKind::DropAfter, 1);
    let s = settings(json!({"timeouts": {"command": "5s", "stop": "30s", "replace": "60s"}}));
    let (status, notes) = finish(&s, &exec, lab, DovecotBackendUpgradeStatus::default()).await;
    assert_eq!(
        status.phase,
        Some(Phase::Completed),
        "{status:#?}\n{notes:#?}"
    );
    assert_eq!(exec.fired().len(), 6, "{:#?}", exec.fired());
    let retries = notes.iter().filter(|n| n.reason == "StepRetrying").count();
    assert_eq!(retries, 6, "{notes:#?}");
    assert!(
        status
            .backends
            .iter()
            .all(|r| !r.failed && r.step == Step::Done)
    );
    for pod in lab.backend_names() {
        assert_eq!(lab.creations(&pod), 2);
    }
    all_back(lab, "director-0", &original);
    report(
        "6 transient exec failures",
        t0,
        "6 injected (drop before, drop after the command ran, hang past a 5s timeout) on update, service stop, stop, flush, mailbox list, up: each retried once with backoff, rollout completed",
    );
}

/// Scenario 7: Dovecot dies on its own mid-drain; another backend's pod is replaced behind our back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_dovecot_dies_and_pod_replaced_mid_step() {
    let t0 = Instant::now();
    let rig = rig(16);
    let lab = &rig.lab;
    let original = vhosts(lab);
    let s = settings(json!({"drain": {"pollInterval": "1s", "timeout": "10m"}}));
    let exec = lab.exec();
    let (held, status, mut notes) = drain_backend_2_with_a_session_held(lab, &s, &exec).await;
    lab.crash_dovecot("backend-2");
    drop(held);
    // backend-1 gets replaced by someone else while the operator is about to reset its caches
    let (status, more) = until(&s, &exec, lab, status, Duration::from_secs(120), |st| {
        at(st, "backend-1", Step::Reset)
    })
    .await;
    notes.extend(more);
    let uid = lab.pod_uid("backend-1").unwrap();
    lab.delete_pod("backend-1", &uid).await.unwrap();
    let (status, more) = finish(&s, &exec, lab, status).await;
    notes.extend(more);
    assert_eq!(
        status.phase,
        Some(Phase::Completed),
        "{status:#?}\n{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n
            .message
            .starts_with("backend-2: WaitSessions done (Dovecot is not running")),
        "{notes:#?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.reason == "StepRewound" && n.message.starts_with("backend-1")),
        "{notes:#?}"
    );
    // initial, recreated behind our back, then once more by Replace: the rewind stopped the
    // recreated pod's Dovecot and reset its caches, and nothing else would start it again
    assert_eq!(lab.creations("backend-1"), 3);
    for pod in lab.backend_names() {
        assert_eq!(lab.pod_revision(&pod).as_deref(), Some("rev-2"));
    }
    all_back(lab, "director-0", &original);
    for (user, n) in &rig.sent {
        assert_eq!(lab.inbox_count("backend-1", user).unwrap(), *n, "{user}");
    }
    report(
        "7 Dovecot dies / pod replaced mid-step",
        t0,
        "backend-2's Dovecot killed in WaitSessions: went on without waiting; backend-1 replaced before Reset: Reset saw Dovecot running, rewound to StopLmtp, and Replace recreated the pod it had stopped even though it was at the target revision",
    );
}
