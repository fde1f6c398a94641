//! Table tests of the pure step machine.

use super::*;
use crate::api::{
    APPROVE_ANNOTATION, BackendStatus, DovecotBackendUpgradeStatus, DrainTimeoutAction, Step,
    StepError,
};
use crate::dovecot::RingHost;
use crate::fixtures::{self, ts};
use crate::reason::{EventReason, WaitReason};
use crate::settings::Settings;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pretty_assertions::assert_eq;
use serde_json::json;
use std::time::Duration;

const OLD: &str = "backend-old";
const NEW: &str = "backend-new";

fn settings() -> Settings {
    with(json!({}))
}

fn pod(i: u32, rev: &str) -> PodView {
    fixtures::pod(i, rev)
}

fn host(i: u32, vhosts: u32, up: bool, users: u64) -> RingHost {
    fixtures::host(i, vhosts, up, users)
}

/// Three backends all outdated, a healthy ring with different vhost counts.
fn world() -> Observed {
    Observed {
        ring: Some(vec![
            host(0, 100, true, 3),
            host(1, 50, true, 2),
            host(2, 20, true, 1),
        ]),
        ..fixtures::world(3, OLD, NEW)
    }
}

fn rec(i: u32, step: Step, started: i64) -> BackendStatus {
    fixtures::record(i, step, ts(started), OLD, [100, 50, 20][i as usize])
}

fn status(recs: Vec<BackendStatus>) -> DovecotBackendUpgradeStatus {
    fixtures::status(NEW, recs)
}

fn run(i: u32, step: Step) -> Decision {
    Decision::Run {
        pod: format!("backend-{i}"),
        step,
        ceiling_users: None,
    }
}

fn reason(d: &Decision) -> &'static str {
    match d {
        Decision::Stall { reason, .. } => reason.as_str(),
        Decision::Wait { reason, .. } => reason.as_str(),
        Decision::Complete => "Complete",
        Decision::Reassert { .. } => "Reassert",
        Decision::Begin(_) => "Begin",
        Decision::Run { .. } => "Run",
        Decision::Undo { .. } => "Undo",
        Decision::Aborted { .. } => "Aborted",
        Decision::DryRun(_) => "DryRun",
        Decision::Claim { .. } => "Claim",
        Decision::Adopt { .. } => "Adopt",
    }
}

/// The world with backend `i` drained in the ring, as its in-flight record expects.
fn drained(i: u32) -> Observed {
    let mut w = world();
    w.ring.as_mut().unwrap()[i as usize].vhosts = 0;
    w
}

fn with(extra: serde_json::Value) -> Settings {
    let mut patch = json!({"drain": {"timeout": "60s", "pollInterval": "5s"}});
    fixtures::merge_patch(&mut patch, extra);
    fixtures::settings(patch)
}

fn begun(d: &Decision) -> &str {
    match d {
        Decision::Begin(r) => r.pod.as_str(),
        other => panic!("expected Begin, got {other:?}"),
    }
}

#[test]
fn invalid_worlds_stall_without_exec() {
    let mut no_sts = world();
    no_sts.sts = None;
    let mut rolling = world();
    rolling.sts.as_mut().unwrap().update_strategy = "RollingUpdate".into();
    let mut claimed = world();
    claimed.owned_by_other = Some("first".into());
    let mut overlap = world();
    overlap.director_overlap = vec!["backend-0".into()];
    let t = [
        (no_sts, "StatefulSetNotFound"),
        (rolling, "UpdateStrategyNotOnDelete"),
        (claimed, "StatefulSetClaimed"),
        (overlap, "DirectorSelectorMatchesBackends"),
    ];
    for (obs, want) in t {
        let d = decide(&settings(), &status(vec![]), &obs, ts(0));
        assert!(matches!(d, Decision::Stall { .. }), "{d:?}");
        assert_eq!(reason(&d), want);
    }
}

#[test]
fn begin_takes_fewest_users_and_records_its_vhost_count() {
    let d = decide(&settings(), &status(vec![]), &world(), ts(0));
    let Decision::Begin(r) = d else {
        panic!("{d:?}")
    };
    assert_eq!((r.pod.as_str(), r.ip.as_str()), ("backend-2", "127.0.0.13"));
    assert_eq!(r.original_vhosts, 20, "the count the ring had, not 100");
    assert_eq!(r.step, Step::Drain);
    assert_eq!(r.from_revision.as_deref(), Some(OLD));
}

#[test]
fn a_backend_a_human_took_down_is_upgraded_and_left_down() {
    let s = settings();
    let mut obs = world();
    obs.ring.as_mut().unwrap()[2].up = false;
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Begin(r) = d else {
        panic!("{d:?}")
    };
    assert_eq!((r.pod.as_str(), r.original_up), ("backend-2", Some(false)));
    assert!(!r.restores_up());
    // the Begin says so in an Event
    let mut st = status(vec![]);
    let rec_out = record(&mut st, &Decision::Begin(r.clone()), Acted::Nothing, ts(0));
    assert!(
        rec_out
            .notes
            .iter()
            .any(|n| n.reason == EventReason::BackendKeptDown && n.warning)
    );
    // RingRestore: the count, then down, never up; also at a new IP (add makes it up)
    let ip: std::net::IpAddr = "127.0.0.13".parse().unwrap();
    let new: std::net::IpAddr = "127.0.0.99".parse().unwrap();
    let joined = |c: Vec<Command>| -> Vec<String> { c.iter().map(|c| c.argv.join(" ")).collect() };
    assert_eq!(
        joined(judge::ring_restore_commands(&s, &r, ip, ip)),
        [
            "doveadm director update 127.0.0.13 20",
            "doveadm director down 127.0.0.13"
        ]
    );
    assert_eq!(
        joined(judge::ring_restore_commands(&s, &r, ip, new)),
        [
            "doveadm director add 127.0.0.99 20",
            "doveadm director remove 127.0.0.13",
            "doveadm director update 127.0.0.99 20",
            "doveadm director down 127.0.0.99"
        ]
    );
    // abort or delete before RingRestore: put back at its count, still down
    let mut at_wait = (*r).clone();
    at_wait.step = Step::WaitSessions;
    let undo = restore_commands(&s, &at_wait).unwrap();
    assert_eq!(
        joined(undo),
        [
            "doveadm director update 127.0.0.13 20",
            "doveadm director down 127.0.0.13"
        ]
    );
    // an up backend still comes back up
    let up = rec(2, Step::RingRestore, 0);
    assert_eq!(
        joined(judge::ring_restore_commands(&s, &up, ip, ip))[1],
        "doveadm director up 127.0.0.13"
    );
}

#[test]
fn waits_and_stalls_before_starting_a_backend() {
    let s = settings();
    let mut one = world();
    one.pods.truncate(1);
    one.sts.as_mut().unwrap().replicas = 1;
    one.ring = Some(vec![host(0, 100, true, 0)]);
    let mut others_down = world();
    others_down.ring = Some(vec![
        host(0, 100, false, 0),
        host(1, 0, true, 0),
        host(2, 20, true, 0),
    ]);
    let mut not_in_ring = world();
    not_in_ring.ring = Some(vec![host(0, 100, true, 0), host(1, 50, true, 0)]);
    // ordered last for lack of a ring entry: the others are done already
    not_in_ring.pods[0] = pod(0, NEW);
    not_in_ring.pods[1] = pod(1, NEW);
    let mut pre_drained = world();
    pre_drained.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, true, 0),
    ]);
    let mut unready = world();
    unready.pods[2].ready = false;
    let mut no_director = world();
    no_director.director = None;
    let mut no_ring = world();
    no_ring.ring = None;
    let mut no_rev = world();
    no_rev.sts.as_mut().unwrap().update_revision = None;
    let t = [
        (one, "InsufficientRingCapacity"),
        (others_down, "InsufficientRingCapacity"),
        (not_in_ring, "BackendNotInRing"),
        (pre_drained, "BackendAlreadyDrained"),
        (unready, "BackendNotReady"),
        (no_director, "NoReadyDirector"),
        (no_ring, "RingUnreadable"),
        (no_rev, "WaitingForRevision"),
    ];
    for (obs, want) in t {
        assert_eq!(reason(&decide(&s, &status(vec![]), &obs, ts(0))), want);
    }
}

#[test]
fn complete_only_when_every_pod_is_at_target_and_ready() {
    let mut obs = world();
    obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
    let mut st = status(vec![rec(0, Step::Done, 0)]);
    assert_eq!(decide(&settings(), &st, &obs, ts(0)), Decision::Complete);
    obs.pods[1].ready = false;
    assert_eq!(
        reason(&decide(&settings(), &st, &obs, ts(0))),
        "WaitingForPods"
    );
    obs.pods.pop();
    obs.pods[1].ready = true;
    // a missing pod (being recreated) is not complete
    st.backends.clear();
    assert_ne!(decide(&settings(), &st, &obs, ts(0)), Decision::Complete);
}

#[test]
fn every_step_of_an_in_flight_backend_runs_in_order() {
    // ring as it looks while backend-2 is at each step (vhosts 0 from WaitSessions on, down later)
    for step in Step::ALL.into_iter().filter(|s| *s != Step::Done) {
        let mut obs = world();
        let drained = step > Step::Drain;
        let down = step > Step::RingRemove;
        obs.ring = Some(vec![
            host(0, 100, true, 0),
            host(1, 50, true, 0),
            host(2, if drained { 0 } else { 20 }, !down, 0),
        ]);
        if step >= Step::Verify {
            obs.pods[2] = pod(2, NEW);
        }
        let d = decide(&settings(), &status(vec![rec(2, step, 0)]), &obs, ts(1));
        assert_eq!(d, run(2, step), "{step}");
    }
}

#[test]
fn wait_sessions_polls_until_empty_or_ceiling() {
    let s = settings(); // timeout 60s, poll 5s
    let st = status(vec![rec(2, Step::WaitSessions, 0)]);
    let ring = |users| {
        Some(vec![
            host(0, 100, true, 0),
            host(1, 50, true, 0),
            host(2, 0, true, users),
        ])
    };
    let mut obs = world();
    obs.ring = ring(4);
    let d = decide(&s, &st, &obs, ts(10));
    assert_eq!(
        d,
        Decision::Wait {
            reason: WaitReason::StepInProgress,
            message: "backend-2: 4 users still mapped to 127.0.0.13".into(),
            requeue: Duration::from_secs(5)
        }
    );
    // the last poll before the ceiling is shortened to land on it
    let Decision::Wait { requeue, .. } = decide(&s, &st, &obs, ts(58)) else {
        panic!()
    };
    assert_eq!(requeue, Duration::from_secs(2));
    // ceiling reached with users left
    assert_eq!(
        decide(&s, &st, &obs, ts(60)),
        Decision::Run {
            pod: "backend-2".into(),
            step: Step::WaitSessions,
            ceiling_users: Some(4)
        }
    );
    // emptied early: no fixed sleep
    obs.ring = ring(0);
    assert_eq!(decide(&s, &st, &obs, ts(1)), run(2, Step::WaitSessions));
    // none mapped but sessions on the backend: the ceiling holds them too (issue 12)
    assert_eq!(
        decide(&s, &st, &obs, ts(60)),
        Decision::Run {
            pod: "backend-2".into(),
            step: Step::WaitSessions,
            ceiling_users: Some(0)
        }
    );
}

#[test]
fn drain_outcome_table() {
    let err = |m: String| StepError {
        step: Step::WaitSessions,
        argv: vec![],
        exit_code: None,
        stderr: m,
        reason: None,
    };
    let p = Duration::from_secs(5);
    use DrainTimeoutAction::*;
    assert!(matches!(
        drain_outcome(None, 0, Proceed, p, err),
        StepResult::Advanced { .. }
    ));
    assert!(matches!(
        drain_outcome(None, 2, Proceed, p, err),
        StepResult::Waiting { .. }
    ));
    let StepResult::Advanced { message, .. } = drain_outcome(Some(3), 3, Proceed, p, err) else {
        panic!()
    };
    assert!(message.unwrap().contains("3 users"));
    let StepResult::Failed(e) = drain_outcome(Some(3), 3, Fail, p, err) else {
        panic!()
    };
    assert!(e.stderr.contains("onTimeout=Fail"));
    // at the ceiling with none mapped: empty advances, live sessions are held to the ceiling
    assert!(matches!(
        drain_outcome(Some(0), 0, Fail, p, err),
        StepResult::Advanced { .. }
    ));
    let StepResult::Advanced { message, .. } = drain_outcome(Some(0), 2, Proceed, p, err) else {
        panic!()
    };
    assert!(message.unwrap().contains("2 sessions"));
    assert!(matches!(
        drain_outcome(Some(0), 2, Fail, p, err),
        StepResult::Failed(_)
    ));
}

#[test]
fn a_who_output_cut_at_the_capture_bound_counts_as_sessions_not_a_parse_error() {
    let err = |m: String| StepError {
        step: Step::WaitSessions,
        argv: vec![],
        exit_code: Some(0),
        stderr: m,
        reason: None,
    };
    let row = r#"{"username":"user5","service":"imap","pid":"10823","ip":"127.0.0.1"},"#;
    let mut cut = String::from("[");
    while cut.len() < crate::text::MAX_CAPTURE {
        cut.push_str(row);
    }
    cut.truncate(crate::text::MAX_CAPTURE);
    let p = Duration::from_secs(5);
    let res = judge::sessions(&cut, None, DrainTimeoutAction::Fail, p, err);
    let StepResult::Waiting { message, .. } = res else {
        panic!("{res:?}")
    };
    assert!(message.contains("sessions still run"), "{message}");
    // at the ceiling: the ceiling holds them
    let res = judge::sessions(&cut, Some(0), DrainTimeoutAction::Proceed, p, err);
    assert!(matches!(res, StepResult::Advanced { .. }), "{res:?}");
    // a short output that does not parse is still an error
    let res = judge::sessions("[{\"user", None, DrainTimeoutAction::Proceed, p, err);
    assert!(matches!(res, StepResult::Failed(_)), "{res:?}");
}

#[test]
fn attempts_count_consecutive_transient_failures_only() {
    let mut r = rec(2, Step::WaitSessions, 0);
    let blip = StepResult::Transient {
        error: StepError {
            step: Step::WaitSessions,
            argv: vec![],
            exit_code: None,
            stderr: "connection reset".into(),
            reason: None,
        },
    };
    let poll = StepResult::Waiting {
        requeue: Duration::from_secs(5),
        message: "1 users still mapped".into(),
    };
    // five blips spread over a long wait, each followed by a poll that worked: never failed
    for i in 0..10 {
        apply_result(&mut r, &blip, ts(i * 10));
        assert_eq!(r.attempts, 1);
        apply_result(&mut r, &poll, ts(i * 10 + 5));
        assert_eq!((r.attempts, r.retry_after.is_none()), (0, true));
    }
    assert!(!r.failed);
    for i in 0..MAX_ATTEMPTS {
        apply_result(&mut r, &blip, ts(200 + i64::from(i)));
    }
    assert!(r.failed, "five in a row fail it");
}

#[test]
fn ring_drift_is_reasserted_before_anything_else() {
    let s = settings();
    // director restarted: forgot update 0 and down
    let forgot = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 100, true, 0),
    ]);
    let t = [
        (
            Step::WaitSessions,
            vec!["doveadm director update 127.0.0.13 0"],
        ),
        (
            Step::StopDovecot,
            vec!["doveadm director update 127.0.0.13 0"],
        ),
        (
            Step::Reset,
            vec![
                "doveadm director update 127.0.0.13 0",
                "doveadm director down 127.0.0.13",
                "doveadm director flush 127.0.0.13",
            ],
        ),
        (
            Step::Verify,
            vec![
                "doveadm director update 127.0.0.13 0",
                "doveadm director down 127.0.0.13",
                "doveadm director flush 127.0.0.13",
            ],
        ),
    ];
    for (step, want) in t {
        let mut obs = world();
        obs.ring = forgot.clone();
        obs.pods[2] = pod(2, NEW);
        let d = decide(&s, &status(vec![rec(2, step, 0)]), &obs, ts(1));
        let Decision::Reassert { pod, commands, .. } = d else {
            panic!("{step}: {d:?}")
        };
        assert_eq!(pod, "backend-2");
        let got: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(got, want, "{step}");
    }
    // Drain has not acted yet and RingRestore is putting it back: no drift there
    for step in [Step::Drain, Step::RingRestore] {
        let mut obs = world();
        obs.ring = forgot.clone();
        obs.pods[2] = pod(2, NEW);
        let d = decide(&s, &status(vec![rec(2, step, 0)]), &obs, ts(1));
        assert_eq!(d, run(2, step));
    }
    // a failed backend is kept out too
    let mut f = rec(2, Step::Verify, 0);
    f.failed = true;
    let mut obs = world();
    obs.ring = forgot;
    assert_eq!(
        reason(&decide(&s, &status(vec![f]), &obs, ts(1))),
        "Reassert"
    );
}

#[test]
fn drift_at_the_new_ip_of_a_replaced_backend_is_reasserted() {
    let s = settings();
    // Replace gave backend-2 127.0.0.99; a director re-resolved it and shows it up at 100
    let mut ring = world().ring.unwrap();
    ring[2].vhosts = 0;
    ring[2].up = false;
    ring.push(RingHost {
        ip: "127.0.0.99".into(),
        vhosts: 100,
        up: true,
        users: 0,
    });
    for failed in [false, true] {
        let mut r = rec(2, Step::Verify, 0);
        r.new_ip = Some("127.0.0.99".into());
        r.failed = failed;
        let mut obs = world();
        obs.ring = Some(ring.clone());
        obs.pods[2] = pod(2, NEW);
        let d = decide(&s, &status(vec![r]), &obs, ts(1));
        let Decision::Reassert { commands, .. } = d else {
            panic!("failed={failed}: {d:?}")
        };
        let got: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            got,
            [
                "doveadm director update 127.0.0.99 0",
                "doveadm director down 127.0.0.99",
                "doveadm director flush 127.0.0.99",
            ],
            "failed={failed}"
        );
    }
}

#[test]
fn a_failed_backend_halts_the_rollout_with_the_command_and_stderr() {
    let mut f = rec(2, Step::Verify, 0);
    f.failed = true;
    f.last_error = Some(StepError {
        step: Step::Verify,
        argv: vec!["doveadm".into(), "mailbox".into(), "list".into()],
        exit_code: Some(67),
        stderr: "doveadm(probe): Error: User doesn't exist".into(),
        reason: None,
    });
    let mut obs = world();
    obs.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, false, 0),
    ]);
    let d = decide(&settings(), &status(vec![f]), &obs, ts(1));
    let Decision::Stall { reason, message } = d else {
        panic!("{d:?}")
    };
    assert_eq!(reason, "BackendFailed");
    for part in [
        "backend-2",
        "Verify",
        "doveadm mailbox list",
        "67",
        "User doesn't exist",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
}

#[test]
fn pause_stops_before_the_next_step() {
    let s = crate::settings::validate(&fixtures::spec(json!({"paused": true}))).unwrap();
    assert_eq!(
        reason(&decide(&s, &status(vec![]), &world(), ts(0))),
        "Paused"
    );
    let mut obs = world();
    obs.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, true, 0),
    ]);
    let st = status(vec![rec(2, Step::StopLmtp, 0)]);
    assert_eq!(reason(&decide(&s, &st, &obs, ts(0))), "Paused");
}

#[test]
fn max_unavailable_bounds_backends_in_flight() {
    let mut obs = world();
    obs.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, true, 9),
    ]);
    let st = status(vec![rec(2, Step::WaitSessions, 0)]);
    // one in flight and waiting: with maxUnavailable 1, nothing new starts
    assert_eq!(
        reason(&decide(&settings(), &st, &obs, ts(1))),
        "StepInProgress"
    );
    let two = crate::settings::validate(&fixtures::spec(
        json!({"maxUnavailable": 2, "drain": {"timeout": "60s"}}),
    ))
    .unwrap();
    let Decision::Begin(r) = decide(&two, &st, &obs, ts(1)) else {
        panic!()
    };
    assert_eq!(r.pod, "backend-1");
}

#[test]
fn replace_verify_restore_wait_for_the_new_pod() {
    let mut obs = world();
    obs.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, false, 0),
    ]);
    obs.pods.pop(); // deleted, not recreated yet
    for step in [Step::Verify, Step::RingRestore] {
        let d = decide(&settings(), &status(vec![rec(2, step, 0)]), &obs, ts(1));
        assert_eq!(reason(&d), "StepInProgress", "{step}");
    }
    // Replace itself runs to observe/delete/time out
    assert_eq!(
        decide(
            &settings(),
            &status(vec![rec(2, Step::Replace, 0)]),
            &obs,
            ts(1)
        ),
        run(2, Step::Replace)
    );
}

#[test]
fn transient_failures_back_off_then_fail() {
    let e = StepError {
        step: Step::Drain,
        argv: vec!["doveadm".into()],
        exit_code: None,
        stderr: "exec timed out after 60s".into(),
        reason: None,
    };
    let mut r = rec(2, Step::Drain, 0);
    let notes = apply_result(&mut r, &StepResult::Transient { error: e.clone() }, ts(10));
    assert_eq!((r.attempts, r.failed, r.step), (1, false, Step::Drain));
    assert_eq!(r.retry_after, Some(Time(ts(12))));
    assert_eq!(notes[0].reason, "StepRetrying");
    assert_eq!(
        r.step_started,
        Time(ts(0)),
        "ceilings keep counting from the step start"
    );
    // while backing off, the plan waits
    let obs = world();
    assert_eq!(
        reason(&decide(&settings(), &status(vec![r.clone()]), &obs, ts(11))),
        "StepInProgress"
    );
    assert_eq!(
        decide(&settings(), &status(vec![r.clone()]), &obs, ts(12)),
        run(2, Step::Drain)
    );
    for _ in 1..MAX_ATTEMPTS {
        apply_result(&mut r, &StepResult::Transient { error: e.clone() }, ts(20));
    }
    assert!(r.failed, "gives up after {MAX_ATTEMPTS} attempts");
}

#[test]
fn results_move_every_step_forward_or_halt_it() {
    for step in Step::ALL.into_iter().filter(|s| *s != Step::Done) {
        let mut ok = rec(1, step, 0);
        let notes = apply_result(
            &mut ok,
            &StepResult::Advanced {
                message: None,
                new_ip: None,
                stopped_uid: None,
                layout: None,
            },
            ts(5),
        );
        assert_eq!(ok.step, step.next());
        assert_eq!(ok.step_started, Time(ts(5)));
        assert_eq!(notes[0].reason, "StepSucceeded");
        assert!(["StepStarted", "BackendUpgraded"].contains(&notes[1].reason.as_str()));
        // events carry pod and step, so the recorder keeps each step's event apart
        assert_eq!(
            (notes[0].pod.as_deref(), notes[0].step),
            (Some("backend-1"), Some(step))
        );
        if notes[1].reason == "StepStarted" {
            assert_eq!(notes[1].step, Some(step.next()));
        }

        let mut bad = rec(1, step, 0);
        let err = StepError {
            step,
            argv: vec!["x".into()],
            exit_code: Some(75),
            stderr: "Fatal".into(),
            reason: None,
        };
        let notes = apply_result(&mut bad, &StepResult::Failed(err.clone()), ts(5));
        assert!(bad.failed);
        assert_eq!(bad.step, step, "a failed step is not advanced");
        assert_eq!(bad.last_error, Some(err));
        assert!(notes[0].warning);

        let mut waiting = rec(1, step, 0);
        apply_result(
            &mut waiting,
            &StepResult::Waiting {
                requeue: Duration::from_secs(1),
                message: "m".into(),
            },
            ts(5),
        );
        assert_eq!(
            (waiting.step, waiting.step_started.clone()),
            (step, Time(ts(0)))
        );
    }
    let mut r = rec(2, Step::Replace, 0);
    apply_result(
        &mut r,
        &StepResult::Advanced {
            message: None,
            new_ip: Some("127.0.0.99".into()),
            stopped_uid: Some("uid-2-old".into()),
            layout: None,
        },
        ts(1),
    );
    assert_eq!(r.new_ip.as_deref(), Some("127.0.0.99"));
    assert_eq!(r.stopped_pod_uid.as_deref(), Some("uid-2-old"));
    let mut r = rec(2, Step::Reset, 0);
    apply_result(
        &mut r,
        &StepResult::Rewind {
            to: Step::StopLmtp,
            message: "Dovecot is running again".into(),
        },
        ts(1),
    );
    assert_eq!(r.step, Step::StopLmtp);
}

#[test]
fn cleanup_on_delete_restores_only_running_backends() {
    let t = [
        (Step::Drain, "Restore"),
        (Step::WaitSessions, "Restore"),
        // a Dovecot that died at StopLmtp cannot reload its LMTP listener: left out, not a loop
        (Step::StopLmtp, "RestoreIfRunning"),
        (Step::StopDovecot, "RestoreIfRunning"),
        (Step::RingRemove, "LeaveOut"),
        (Step::Reset, "LeaveOut"),
        (Step::Replace, "LeaveOut"),
        (Step::Verify, "LeaveOut"),
        (Step::RingRestore, "Restore"),
        (Step::Done, "Nothing"),
    ];
    for (step, want) in t {
        let got = match cleanup_for(&rec(0, step, 0)) {
            Cleanup::Restore => "Restore",
            Cleanup::RestoreIfRunning => "RestoreIfRunning",
            Cleanup::LeaveOut(_) => "LeaveOut",
            Cleanup::Nothing => "Nothing",
        };
        assert_eq!(got, want, "{step}");
    }
    let mut f = rec(0, Step::WaitSessions, 0);
    f.failed = true;
    assert!(
        matches!(cleanup_for(&f), Cleanup::LeaveOut(_)),
        "failed is never put back"
    );
}

#[test]
fn retarget_keeps_only_records_that_hold_backends_out() {
    let mut st = status(vec![rec(0, Step::Done, 0), rec(1, Step::Reset, 0)]);
    retarget(&mut st, "even-newer");
    assert_eq!(st.target_revision.as_deref(), Some("even-newer"));
    assert_eq!(st.backends.len(), 1);
    assert_eq!(st.backends[0].pod, "backend-1");
}

#[test]
fn progress_counts_ready_pods_at_target_not_in_flight() {
    let mut obs = world();
    obs.pods[0] = pod(0, NEW);
    obs.pods[1] = pod(1, NEW);
    let st = status(vec![rec(1, Step::Verify, 0)]);
    assert_eq!(progress(&st, &obs, NEW), "1/3");
    assert_eq!(progress(&status(vec![]), &obs, NEW), "2/3");
}

#[test]
fn outdated_orders_by_users_then_ordinal() {
    let pods: Vec<PodView> = [2, 10, 0, 1].iter().map(|i| pod(*i, OLD)).collect();
    // backend-1 has no ring entry; 0 and 2 tie on users
    let ring = vec![
        host(2, 100, true, 4),
        host(10, 100, true, 9),
        host(0, 100, true, 4),
    ];
    let names = |s: &Settings| -> Vec<String> {
        outdated(s, &pods, NEW, Some(&ring))
            .iter()
            .map(|p| p.name.clone())
            .collect()
    };
    assert_eq!(
        names(&settings()),
        vec!["backend-2", "backend-0", "backend-10", "backend-1"]
    );
    assert_eq!(
        names(&with(json!({"ordering": "Ordinal"}))),
        vec!["backend-10", "backend-2", "backend-1", "backend-0"]
    );
    assert_eq!(
        names(&with(json!({"skip": ["backend-2", "backend-1"]}))),
        vec!["backend-0", "backend-10"]
    );
}

#[test]
fn skip_and_hold_named_backends() {
    // skip: the rollout completes without the skipped backend
    let mut obs = world();
    obs.pods[0] = pod(0, NEW);
    obs.pods[1] = pod(1, NEW);
    let s = with(json!({"skip": ["backend-2"]}));
    assert_eq!(decide(&s, &status(vec![]), &obs, ts(0)), Decision::Complete);
    // hold: the held backend waits, the others go first
    let s = with(json!({"hold": ["backend-2"]}));
    assert_eq!(
        begun(&decide(&s, &status(vec![]), &world(), ts(0))),
        "backend-1"
    );
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    assert_eq!(reason(&d), "BackendHeld", "{d:?}");
    // a held backend already in flight finishes
    let st = status(vec![rec(2, Step::StopLmtp, 0)]);
    obs.ring.as_mut().unwrap()[2].vhosts = 0;
    assert_eq!(decide(&s, &st, &obs, ts(0)), run(2, Step::StopLmtp));
}

#[test]
fn capacity_guard_counts_min_available_and_ring_sync() {
    let s = with(json!({"minAvailableBackends": 2}));
    let mut obs = world();
    assert_eq!(
        begun(&decide(&s, &status(vec![]), &obs, ts(0))),
        "backend-2"
    );
    obs.ring = Some(vec![
        host(0, 100, true, 3),
        host(1, 0, true, 2),
        host(2, 20, true, 1),
    ]);
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    assert_eq!(reason(&d), "InsufficientRingCapacity", "{d:?}");
    let mut unsynced = world();
    unsynced.ring_synced = Some(false);
    let d = decide(&settings(), &status(vec![]), &unsynced, ts(0));
    assert_eq!(reason(&d), "RingNotSynced");
    unsynced.ring_synced = Some(true);
    assert_eq!(
        begun(&decide(&settings(), &status(vec![]), &unsynced, ts(0))),
        "backend-2"
    );
    // in-flight backends are not held back by the guard (RingRemove puts a stopped one out) ...
    let st = status(vec![rec(2, Step::RingRemove, 0)]);
    let mut obs = drained(2);
    obs.ring_synced = Some(false);
    assert_eq!(
        decide(&settings(), &st, &obs, ts(0)),
        run(2, Step::RingRemove)
    );
    // ... but nothing on a backend is stopped while the ring is split (issue 11)
    let st = status(vec![rec(2, Step::StopLmtp, 0)]);
    let d = decide(&settings(), &st, &obs, ts(0));
    assert_eq!(reason(&d), "RingNotSynced", "{d:?}");
    obs.ring_synced = None;
    let d = decide(&settings(), &st, &obs, ts(0));
    assert_eq!(
        missing(&d, &obs),
        Some(Missing::RingSync),
        "read before StopLmtp"
    );
    obs.ring_synced = Some(true);
    assert_eq!(
        decide(&settings(), &st, &obs, ts(0)),
        run(2, Step::StopLmtp)
    );
}

#[test]
fn supervised_mode_stops_after_the_canary_until_approved() {
    let s = with(json!({"canary": {"supervised": true}}));
    assert_eq!(
        begun(&decide(&s, &status(vec![]), &world(), ts(0))),
        "backend-2",
        "the canary starts"
    );
    let mut obs = world();
    obs.pods[2] = pod(2, NEW);
    let st = status(vec![rec(2, Step::Done, 0)]);
    let d = decide(&s, &st, &obs, ts(10));
    assert_eq!(reason(&d), "AwaitingApproval");
    let Decision::Wait { message, .. } = &d else {
        unreachable!()
    };
    assert!(
        message.contains(NEW) && message.contains(APPROVE_ANNOTATION),
        "{message}"
    );
    let mut approved = s.clone();
    approved.approved_revisions = vec!["some-older-revision".into()];
    assert_eq!(
        reason(&decide(&approved, &st, &obs, ts(10))),
        "AwaitingApproval"
    );
    approved.approved_revisions.push(NEW.into());
    assert_eq!(begun(&decide(&approved, &st, &obs, ts(10))), "backend-1");
}

#[test]
fn a_canary_is_approved_by_spec_revision_too() {
    let s = with(json!({"canary": {"supervised": true}, "revision": "2.3.21-cfg7"}));
    let mut obs = world();
    for p in &mut obs.pods {
        p.revision = Some(NEW.into());
    }
    obs.pods[0] = pod(0, OLD);
    obs.pods[1] = pod(1, OLD);
    obs.sts.as_mut().unwrap().template_revision = Some("2.3.21-cfg7".into());
    let st = status(vec![rec(2, Step::Done, 0)]);
    let d = decide(&s, &st, &obs, ts(10));
    let Decision::Wait { message, .. } = &d else {
        panic!("{d:?}")
    };
    assert!(
        message.contains("approvedRevision=2.3.21-cfg7"),
        "{message}"
    );
    let mut approved = s.clone();
    approved.approved_revisions = vec!["2.3.21-cfg7".into()];
    assert_eq!(begun(&decide(&approved, &st, &obs, ts(10))), "backend-1");
}

#[test]
fn spec_revision_holds_completion_and_new_backends_until_the_template_carries_it() {
    let s = with(json!({"revision": "r2"}));
    let done = |obs: &mut Observed| obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
    // (template annotation, StatefulSet controller caught up, pods at NEW, expected)
    let table: Vec<(Option<&str>, bool, bool, &str)> = vec![
        (None, true, true, "WaitingForRevision"),
        (Some("r1"), true, true, "WaitingForRevision"),
        (Some("r1"), true, false, "WaitingForRevision"),
        (Some("r2"), false, true, "WaitingForRevision"),
        (Some("r2"), true, true, "Complete"),
        (Some("r2"), true, false, "Begin"),
    ];
    for (annotation, current, at_new, want) in table {
        let mut obs = world();
        if at_new {
            done(&mut obs);
        }
        let sts = obs.sts.as_mut().unwrap();
        sts.template_revision = annotation.map(Into::into);
        sts.current = current;
        let d = decide(&s, &status(vec![]), &obs, ts(0));
        assert_eq!(
            reason(&d),
            want,
            "{annotation:?} current={current} at_new={at_new}"
        );
        if want == "WaitingForRevision" {
            let Decision::Wait { message, .. } = &d else {
                unreachable!()
            };
            assert!(
                message.contains(if current {
                    "mailops.io/revision"
                } else {
                    "not observed"
                }),
                "{message}"
            );
        }
    }
    // without spec.revision only the StatefulSet controller's lag holds
    let mut obs = world();
    done(&mut obs);
    obs.sts.as_mut().unwrap().current = false;
    assert_eq!(
        reason(&decide(&settings(), &status(vec![]), &obs, ts(0))),
        "WaitingForRevision"
    );
    obs.sts.as_mut().unwrap().current = true;
    assert_eq!(
        decide(&settings(), &status(vec![]), &obs, ts(0)),
        Decision::Complete
    );
    // a backend in flight finishes while the revision is pending; a pause still shows as one
    let mut obs = drained(0);
    obs.sts.as_mut().unwrap().template_revision = Some("r1".into());
    let st = status(vec![rec(0, Step::StopLmtp, 0)]);
    assert_eq!(reason(&decide(&s, &st, &obs, ts(10))), "Run");
    let paused = with(json!({"revision": "r2", "paused": true}));
    assert_eq!(
        reason(&decide(&paused, &status(vec![]), &world(), ts(0))),
        "Paused"
    );
    // paused with every pod at the StatefulSet's target: not complete while r2 is pending
    let mut obs = world();
    done(&mut obs);
    obs.sts.as_mut().unwrap().template_revision = Some("r1".into());
    assert_ne!(
        decide(&paused, &status(vec![]), &obs, ts(0)),
        Decision::Complete
    );
}

#[test]
fn skipping_a_backend_in_flight_puts_it_back_while_dovecot_runs() {
    let s = with(json!({"skip": ["backend-0"]}));
    for (step, undone) in [
        (Step::Drain, true),
        (Step::WaitSessions, true),
        (Step::StopLmtp, true),
        (Step::StopDovecot, false),
        (Step::Replace, false),
        (Step::Verify, false),
    ] {
        let st = status(vec![rec(0, step, 0)]);
        let d = decide(&s, &st, &drained(0), ts(10));
        assert_eq!(
            matches!(&d, Decision::Undo { pod, .. } if pod == "backend-0"),
            undone,
            "{step:?}: {d:?}"
        );
    }
    // a failed one stays out: the failure halts as before
    let mut failed = rec(0, Step::WaitSessions, 0);
    failed.failed = true;
    let d = decide(&s, &status(vec![failed]), &drained(0), ts(10));
    assert!(!matches!(d, Decision::Undo { .. }), "{d:?}");
    // once it is back, the rollout goes on without it
    assert_eq!(
        begun(&decide(&s, &status(vec![]), &world(), ts(10))),
        "backend-2"
    );
}

#[test]
fn maintenance_window_gates_new_backends_only() {
    // ts(0) is 2027-01-15 08:00 UTC
    let closed =
        with(json!({"maintenanceWindow": {"timeZone": "UTC", "start": "08:30", "duration": "1h"}}));
    let d = decide(&closed, &status(vec![]), &world(), ts(0));
    assert_eq!(reason(&d), "OutsideMaintenanceWindow");
    assert!(
        matches!(d, Decision::Wait { requeue, .. } if requeue == Duration::from_secs(1800)),
        "{d:?}"
    );
    // in flight: finishes outside the window
    let st = status(vec![rec(2, Step::StopLmtp, 0)]);
    assert_eq!(
        decide(&closed, &st, &drained(2), ts(0)),
        run(2, Step::StopLmtp)
    );
    // open with 30 minutes left: the first backend is predicted at 60s + 5m, it fits
    let open = with(
        json!({"maintenanceWindow": {"timeZone": "Europe/Berlin", "start": "08:00", "duration": "1h30m"}}),
    );
    assert_eq!(
        begun(&decide(&open, &status(vec![]), &world(), ts(0))),
        "backend-2"
    );
    // once a backend took 40 minutes, the next one does not fit in the 30 left
    let mut st = status(vec![]);
    st.recent_backend_seconds = vec![300, 2400];
    let d = decide(&open, &st, &world(), ts(0));
    assert_eq!(reason(&d), "WindowTooShort", "{d:?}");
}

#[test]
fn a_pause_does_not_count_against_the_drain_ceiling_or_the_step_timeouts() {
    let s = with(json!({}));
    let mut st = status(vec![rec(2, Step::WaitSessions, 0)]);
    let mut obs = drained(2);
    obs.ring.as_mut().unwrap()[2].users = 4;
    // paused 10 s into the drain, for 10 minutes
    pause_clocks(&mut st, true, ts(10));
    assert_eq!(st.paused_since, Some(Time(ts(10))));
    pause_clocks(&mut st, true, ts(300));
    assert_eq!(
        st.paused_since,
        Some(Time(ts(10))),
        "the first moment counts"
    );
    pause_clocks(&mut st, false, ts(610));
    assert_eq!(st.paused_since, None);
    assert_eq!(st.backends[0].step_started, Time(ts(600)));
    // 20 s of drain so far: the 60 s ceiling is 40 s away, nobody is kicked
    let d = decide(&s, &st, &obs, ts(620));
    assert_eq!(reason(&d), "StepInProgress", "{d:?}");
    // nothing in flight: a pause has no clock to hold
    let mut idle = status(vec![]);
    pause_clocks(&mut idle, true, ts(0));
    assert_eq!(idle.paused_since, None);
}

#[test]
fn the_window_prediction_counts_active_step_time_only() {
    // failed on Friday at Reset, retried on Monday: 60 h later
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    let adv = StepResult::advanced(None);
    let mut t = 0;
    for _ in [
        Step::Drain,
        Step::WaitSessions,
        Step::StopLmtp,
        Step::StopDovecot,
        Step::RingRemove,
    ] {
        t += 10;
        apply_result(&mut st.backends[0], &adv, ts(t));
    }
    let fail = StepResult::Failed(judge::step_error(Step::Reset, &[], Some(1), "x"));
    apply_result(&mut st.backends[0], &fail, ts(t + 5));
    let monday = t + 60 * 3600;
    st.backends[0].failed = false;
    st.backends[0].step_started = Time(ts(monday)); // what a retry does
    for _ in [
        Step::Reset,
        Step::Replace,
        Step::Verify,
        Step::RingRestore,
        Step::Soak,
    ] {
        t = if t < monday { monday + 10 } else { t + 10 };
        apply_result(&mut st.backends[0], &adv, ts(t));
    }
    assert_eq!(st.backends[0].step, Step::Done);
    record_finish(&mut st, "backend-2", ts(t));
    assert_eq!(
        st.recent_backend_seconds,
        vec![100],
        "10 steps of 10 s, not 60 h"
    );
}

#[test]
fn a_window_shorter_than_the_prediction_is_a_clear_stall() {
    let s =
        with(json!({"maintenanceWindow": {"timeZone": "UTC", "start": "07:30", "duration": "1h"}}));
    let mut st = status(vec![]);
    st.recent_backend_seconds = vec![300, 4000];
    let d = decide(&s, &st, &world(), ts(0));
    assert_eq!(reason(&d), "MaintenanceWindowTooShort", "{d:?}");
    let Decision::Stall { message, .. } = &d else {
        unreachable!()
    };
    assert!(
        message.contains("spec.maintenanceWindow.duration"),
        "{message}"
    );
    // before any backend: the drain ceiling (60 s) plus 5 minutes fits in 1 h
    assert_eq!(
        begun(&decide(&s, &status(vec![]), &world(), ts(0))),
        "backend-2"
    );
}

#[test]
fn a_pod_scaled_away_closes_its_record_as_removed() {
    let s = with(json!({}));
    // backend-2 was taken first, failed, and then the StatefulSet was scaled to 2
    let mut f = rec(2, Step::Reset, 0);
    f.failed = true;
    let mut st = status(vec![f, rec(1, Step::Done, 0)]);
    let mut obs = drained(2);
    obs.sts.as_mut().unwrap().replicas = 2;
    obs.pods.retain(|p| p.name != "backend-2");
    let notes = close_removed(&s, &mut st, &obs, ts(5));
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].reason, "BackendRemoved");
    assert!(
        notes[0].message.contains("director remove 127.0.0.13"),
        "{}",
        notes[0].message
    );
    assert!(st.backends[0].removed && !active(&st.backends[0]));
    // closed: it no longer stalls the rollout, and the ring's lock lets it go
    obs.ring_lock = Some(Ok(RingLock::default()));
    let d = decide(&s, &st, &obs, ts(6));
    assert_eq!(d, Decision::Claim { pods: vec![] }, "{d:?}");
    assert!(close_removed(&s, &mut st, &obs, ts(7)).is_empty(), "once");
    // a pod that still runs, or an ordinal below the replicas, is not removed
    let mut st = status(vec![rec(2, Step::Reset, 0)]);
    let mut obs = drained(2);
    obs.sts.as_mut().unwrap().replicas = 2;
    assert!(
        close_removed(&s, &mut st, &obs, ts(5)).is_empty(),
        "pod still there"
    );
    obs.sts.as_mut().unwrap().replicas = 3;
    obs.pods.retain(|p| p.name != "backend-2");
    assert!(
        close_removed(&s, &mut st, &obs, ts(5)).is_empty(),
        "will be recreated"
    );
}

#[test]
fn a_failed_backend_does_not_freeze_the_others_in_flight() {
    let s = with(json!({"maxUnavailable": 3}));
    let mut f = rec(2, Step::Verify, 0);
    f.failed = true;
    let mut obs = drained(2);
    for (i, h) in obs.ring.as_mut().unwrap().iter_mut().enumerate() {
        h.vhosts = 0;
        // past RingRemove: down too
        h.up = i == 0;
    }
    // backend-1 stopped already: it goes on (Verify guards it); backend-0 still runs: put back
    let st = status(vec![
        f.clone(),
        rec(1, Step::Replace, 0),
        rec(0, Step::WaitSessions, 0),
    ]);
    let d = decide(&s, &st, &obs, ts(1));
    assert_eq!(
        d,
        Decision::Undo {
            pod: "backend-0".into(),
            action: Cleanup::Restore
        }
    );
    let st = status(vec![f.clone(), rec(1, Step::Replace, 0)]);
    let d = decide(&s, &st, &obs, ts(1));
    assert_eq!(d, run(1, Step::Replace));
    // Stalled names the failed one all the while
    assert_eq!(reason(&settled(&s, &d, &st, &obs, ts(1))), "BackendFailed");
    // once the others are done, the failed one is all that is left
    let st = status(vec![f, rec(1, Step::Done, 0)]);
    assert_eq!(reason(&decide(&s, &st, &obs, ts(1))), "BackendFailed");
}

#[test]
fn finishing_a_backend_records_its_duration() {
    let mut st = status(vec![rec(2, Step::Done, 0), rec(1, Step::Verify, 0)]);
    st.backends[0].started = Some(Time(ts(-100)));
    record_finish(&mut st, "backend-2", ts(20));
    record_finish(&mut st, "backend-1", ts(20));
    assert_eq!(
        st.recent_backend_seconds,
        vec![120],
        "only Done records count"
    );
}

#[test]
fn abort_undoes_in_flight_backends_then_reports() {
    let s = with(json!({"abort": true}));
    let st = status(vec![rec(2, Step::WaitSessions, 0)]);
    let d = decide(&s, &st, &drained(2), ts(0));
    assert_eq!(
        d,
        Decision::Undo {
            pod: "backend-2".into(),
            action: Cleanup::Restore
        }
    );
    let mut down = drained(2);
    down.ring.as_mut().unwrap()[2].up = false;
    let st = status(vec![rec(2, Step::Reset, 0)]);
    assert!(matches!(
        decide(&s, &st, &down, ts(0)),
        Decision::Undo {
            action: Cleanup::LeaveOut(_),
            ..
        }
    ));
    // nothing drained: aborted, and no new backend starts
    let d = decide(&s, &status(vec![]), &world(), ts(0));
    assert!(
        matches!(
            &d,
            Decision::Aborted {
                left_out: false,
                ..
            }
        ),
        "{d:?}"
    );
    // a backend left out (failed) is named
    let mut out = rec(1, Step::Reset, 0);
    out.failed = true;
    let mut down = drained(1);
    down.ring.as_mut().unwrap()[1].up = false;
    let d = decide(&s, &status(vec![out]), &down, ts(0));
    let Decision::Aborted { message, left_out } = d else {
        panic!("{d:?}")
    };
    assert!(
        left_out && message.contains("backend-1 (at Reset)"),
        "{message}"
    );
    // everything already at target: complete, abort or not
    let mut done = world();
    done.pods = (0..3).map(|i| pod(i, NEW)).collect();
    assert_eq!(
        decide(&s, &status(vec![]), &done, ts(0)),
        Decision::Complete
    );
}

#[test]
fn dry_run_plans_without_running() {
    let s = with(json!({"dryRun": true, "hold": ["backend-0"]}));
    let st = status(vec![rec(2, Step::StopLmtp, 0)]);
    let d = decide(&s, &st, &drained(2), ts(0));
    let Decision::DryRun(plan) = d else {
        panic!("{d:?}")
    };
    let order: Vec<(&str, i64, i64)> = plan
        .order
        .iter()
        .map(|b| (b.pod.as_str(), b.users, b.vhosts))
        .collect();
    assert_eq!(order, vec![("backend-2", 1, 20), ("backend-1", 2, 50)]);
    assert_eq!(plan.steps.len(), 10);
    assert_eq!(
        plan.steps[0].commands,
        vec![vec!["doveadm", "director", "update", "127.0.0.13", "0"]]
    );
    assert_eq!(plan.steps[0].target, "director");
    assert_eq!(
        plan.steps[4].commands,
        vec![
            vec!["doveadm", "director", "down", "127.0.0.13"],
            vec!["doveadm", "director", "flush", "127.0.0.13"]
        ]
    );
    assert_eq!(
        plan.steps[8].commands,
        vec![
            vec!["doveadm", "director", "update", "127.0.0.13", "20"],
            vec!["doveadm", "director", "up", "127.0.0.13"]
        ]
    );
    assert!(plan.blocked.is_none());
    // a guard that would block says so in the plan
    let mut obs = world();
    obs.ring_synced = Some(false);
    let Decision::DryRun(plan) = decide(&s, &status(vec![]), &obs, ts(0)) else {
        panic!()
    };
    assert!(plan.blocked.unwrap().contains("not synced"));
}

#[test]
fn replace_deletes_the_old_pod_then_waits_for_the_new_one() {
    let t10 = Duration::from_secs(10);
    let old = pod(2, OLD);
    let uid_old = old.uid.clone().unwrap();
    let mut term = pod(2, OLD);
    term.terminating = true;
    let mut new_unready = pod(2, NEW);
    new_unready.ready = false;
    let mut new_moved = pod(2, NEW);
    new_moved.ip = Some("127.0.0.99".into());
    let t: Vec<(Option<&PodView>, Duration, ReplaceMove)> = vec![
        (
            Some(&old),
            Duration::ZERO,
            ReplaceMove::Delete(uid_old.clone()),
        ),
        (Some(&old), t10, ReplaceMove::Delete(uid_old.clone())),
        (
            Some(&term),
            Duration::ZERO,
            ReplaceMove::Wait("backend-2: terminating".into()),
        ),
        (
            None,
            Duration::ZERO,
            ReplaceMove::Wait("waiting for the StatefulSet to recreate the pod".into()),
        ),
        (
            Some(&new_unready),
            Duration::ZERO,
            ReplaceMove::Wait(format!("backend-2: waiting for Ready at revision {NEW}")),
        ),
        (
            Some(&new_moved),
            Duration::ZERO,
            ReplaceMove::Done("127.0.0.99".into()),
        ),
        (
            None,
            t10,
            ReplaceMove::TimedOut(format!("pod not Ready at revision {NEW} within 10s")),
        ),
        (
            Some(&new_unready),
            t10,
            ReplaceMove::TimedOut(format!("pod not Ready at revision {NEW} within 10s")),
        ),
    ];
    for (p, waited, want) in t {
        assert_eq!(
            replace_move(p, NEW, None, waited, t10),
            want,
            "{p:?} {waited:?}"
        );
    }
    // the pod whose Dovecot we stopped is deleted even at the target revision: nothing restarts it
    let mut stopped = pod(2, NEW);
    stopped.ready = false;
    let uid = stopped.uid.clone();
    assert_eq!(
        replace_move(Some(&stopped), NEW, uid.as_deref(), Duration::ZERO, t10),
        ReplaceMove::Delete(uid.clone().unwrap())
    );
    // a pod seen without a UID is never deleted: the delete could not be pinned to it
    let mut anonymous = pod(2, OLD);
    anonymous.uid = None;
    assert!(matches!(
        replace_move(Some(&anonymous), NEW, None, Duration::ZERO, t10),
        ReplaceMove::Wait(_)
    ));
    // ... but not once it is terminating, and a different (recreated) pod is waited for
    stopped.terminating = true;
    assert!(matches!(
        replace_move(Some(&stopped), NEW, uid.as_deref(), Duration::ZERO, t10),
        ReplaceMove::Wait(_)
    ));
    let fresh = pod(2, NEW);
    assert_eq!(
        replace_move(
            Some(&fresh),
            NEW,
            Some("uid-of-the-stopped-one"),
            Duration::ZERO,
            t10
        ),
        ReplaceMove::Done("127.0.0.13".into())
    );
}

#[test]
fn retry_token_reruns_failed_backends_once() {
    let mut f = rec(2, Step::Verify, 0);
    f.failed = true;
    f.attempts = 1;
    let mut st = status(vec![f, rec(1, Step::Done, 0)]);
    let mut obs = world();
    obs.pods[2] = pod(2, "backend-broken"); // the failed pod runs a revision that is no longer the target
    assert!(apply_retry(&mut st, None, &obs, ts(5)).is_empty());
    let notes = apply_retry(&mut st, Some("1"), &obs, ts(5));
    assert_eq!(notes.len(), 1);
    let r = &st.backends[0];
    assert_eq!(
        (r.failed, r.attempts, r.step),
        (false, 0, Step::Reset),
        "rerun from the reset (which rewinds to the stop when Dovecot runs in the pod)"
    );
    assert_eq!(r.step_started, Time(ts(5)));
    assert_eq!(st.retry_token.as_deref(), Some("1"));
    // the same token again does nothing, even if the backend failed again
    st.backends[0].failed = true;
    assert!(apply_retry(&mut st, Some("1"), &obs, ts(6)).is_empty());
    assert!(st.backends[0].failed);
    // a failure before Replace, or with the pod at the target, reruns the same step
    let mut g = rec(2, Step::WaitSessions, 0);
    g.failed = true;
    let mut st = status(vec![g]);
    apply_retry(&mut st, Some("2"), &obs, ts(7));
    assert_eq!(st.backends[0].step, Step::WaitSessions);
    let mut v = rec(2, Step::Verify, 0);
    v.failed = true;
    let mut st = status(vec![v]);
    obs.pods[2] = pod(2, NEW);
    apply_retry(&mut st, Some("3"), &obs, ts(7));
    assert_eq!(st.backends[0].step, Step::Verify);
}

#[test]
fn a_step_that_just_failed_settles_as_stalled() {
    let s = settings();
    let w = drained(2);
    let mut f = rec(2, Step::Verify, 0);
    let d = run(2, Step::Verify);
    assert_eq!(settled(&s, &d, &status(vec![f.clone()]), &w, ts(0)), d);
    f.failed = true;
    let st = status(vec![f]);
    assert_eq!(reason(&settled(&s, &d, &st, &w, ts(0))), "BackendFailed");
    // a decision that ran nothing is kept as it is
    assert_eq!(
        settled(&s, &Decision::Complete, &st, &w, ts(0)),
        Decision::Complete
    );
}

#[test]
fn the_last_ring_restore_settles_as_complete() {
    let s = settings();
    let mut obs = world();
    obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
    let d = run(0, Step::RingRestore);
    let done = status(vec![rec(0, Step::Done, 0)]);
    assert_eq!(settled(&s, &d, &done, &obs, ts(0)), Decision::Complete);
    // another backend still outdated: the rollout goes on
    obs.pods[1] = pod(1, OLD);
    assert_eq!(settled(&s, &d, &done, &obs, ts(0)), d);
}

#[test]
fn compact_keeps_active_records_and_the_newest_done() {
    let mut recs: Vec<BackendStatus> = (0..15)
        .map(|i| {
            let mut r = rec(0, Step::Done, 0);
            r.pod = format!("done-{i}");
            r
        })
        .collect();
    recs.insert(3, rec(1, Step::Verify, 0));
    let mut failed = rec(2, Step::Reset, 0);
    failed.failed = true;
    recs.insert(0, failed);
    let mut st = status(recs);
    compact(&mut st);
    let names: Vec<&str> = st.backends.iter().map(|r| r.pod.as_str()).collect();
    assert_eq!(names.len(), DONE_KEPT + 2);
    assert_eq!(&names[..2], &["backend-2", "backend-1"]);
    assert_eq!(names[2], "done-5");
    assert_eq!(names.last(), Some(&"done-14"));
}

#[test]
fn reads_are_asked_for_only_when_a_decision_needs_them() {
    let s = settings();
    let mut obs = world();
    obs.ring = None;
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    assert_eq!(missing(&d, &obs), Some(Missing::Ring));
    let obs = world();
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    assert_eq!(missing(&d, &obs), Some(Missing::RingSync), "{d:?}");
    let mut synced = world();
    synced.ring_synced = Some(true);
    let d = decide(&s, &status(vec![]), &synced, ts(0));
    assert_eq!(
        missing(&d, &synced),
        Some(Missing::RingLock),
        "then the ring's lock"
    );
    synced.ring_lock = Some(Ok(RingLock::default()));
    let d = decide(&s, &status(vec![]), &synced, ts(0));
    assert_eq!(
        missing(&d, &synced),
        Some(Missing::ProbeCredentials),
        "then whether Verify's IMAP probe can read its Secret"
    );
    synced.probe_credentials = Some(Err("key \"password\" of Secret \"probe\" not found".into()));
    let d = decide(&s, &status(vec![]), &synced, ts(0));
    assert_eq!(
        reason(&d),
        "ProbeCredentialsUnreadable",
        "nothing drained: {d:?}"
    );
    synced.probe_credentials = Some(Ok(()));
    let d = decide(&s, &status(vec![]), &synced, ts(0));
    assert!(matches!(d, Decision::Begin(_)), "{d:?}");
    assert_eq!(missing(&d, &synced), None);
    // finished: no exec at all, only the ring's lock (a deleted DBU may have left a backend out)
    let mut done = world();
    done.ring = None;
    done.pods = (0..3).map(|i| pod(i, NEW)).collect();
    let d = decide(&s, &status(vec![]), &done, ts(0));
    assert_eq!(
        (d.clone(), missing(&d, &done)),
        (Decision::Complete, Some(Missing::RingLock))
    );
    done.ring_lock = Some(Ok(RingLock::default()));
    let d = decide(&s, &status(vec![]), &done, ts(0));
    assert_eq!((d.clone(), missing(&d, &done)), (Decision::Complete, None));
}

#[test]
fn left_out_backends_stay_counted_and_go_to_the_next_dbu_of_their_statefulset() {
    let s = settings();
    let mut left = rec(2, Step::Verify, 0);
    left.new_ip = Some("127.0.0.99".into());
    let lock = RingLock {
        version: Some("3".into()),
        holders: vec![
            RingHolder {
                dbu: "mail/old".into(),
                pod: "backend-2".into(),
                ip: "127.0.0.13".into(),
                max_unavailable: 1,
                left_out: None,
            },
            other_holds("mx-0", "127.0.0.50", 2).holders[0].clone(),
        ],
    };
    let holders = lock::leave_out(&lock, "mail/old", "backend", &[left.clone()], 1);
    assert_eq!(holders.len(), 2, "{holders:?}");
    let orphan = holders.iter().find(|h| h.pod == "backend-2").unwrap();
    assert_eq!(orphan.ip, "127.0.0.99");
    assert_eq!(orphan.left_out.as_ref().unwrap().record, left);
    let after = RingLock {
        version: Some("4".into()),
        holders,
    };
    // a successor under the same name adopts it; it counts as another's until then
    let mut obs = locked(after.clone());
    obs.me = "mail/old".into();
    assert_eq!(lock::others(&obs, &after).len(), 2);
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Adopt { records } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(records, &vec![left.clone()]);
    // another StatefulSet's DBU does not adopt it, but counts it as out of the ring
    let mx = with(json!({"backends": {"statefulSet": "mx"}}));
    assert!(lock::adoptable(&mx, &status(vec![]), &after).is_empty());
    // once adopted: a record, registered, its clock restarted
    let mut st = status(vec![]);
    let rec = record(&mut st, &d, Acted::Adopted(Ok(())), ts(9));
    assert_eq!(rec.notes[0].reason, "BackendAdopted");
    assert_eq!(st.ring_held, vec!["backend-2".to_string()]);
    assert_eq!(st.backends[0].step, Step::Verify);
    assert_eq!(st.backends[0].step_started, Time(ts(9)));
}

fn other_holds(pod: &str, ip: &str, max: u32) -> RingLock {
    RingLock {
        version: Some("7".into()),
        holders: vec![RingHolder {
            dbu: "mail/other".into(),
            pod: pod.into(),
            ip: ip.into(),
            max_unavailable: max,
            left_out: None,
        }],
    }
}

fn locked(lock: RingLock) -> Observed {
    let mut obs = world();
    obs.me = "mail/roll".into();
    obs.ring_synced = Some(true);
    obs.ring_lock = Some(Ok(lock));
    obs
}

#[test]
fn a_drain_waits_for_the_ring_lock_of_every_dbu_of_the_ring() {
    let s = settings();
    // Begin wrote the intent only; the lock does not hold backend-2 yet
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    st.ring_held.clear();
    let mut unread = locked(RingLock::default());
    unread.ring_lock = None;
    let d = decide(&s, &st, &unread, ts(1));
    assert_eq!(missing(&d, &unread), Some(Missing::RingLock), "{d:?}");
    let d = decide(&s, &st, &locked(RingLock::default()), ts(1));
    assert_eq!(
        d,
        Decision::Claim {
            pods: vec!["backend-2".into()]
        }
    );
    // another DBU of the ring holds one: at most one at once
    let busy = locked(other_holds("mx-0", "127.0.0.50", 1));
    let d = decide(&s, &st, &busy, ts(1));
    let Decision::Wait {
        reason: WaitReason::RingBusy,
        message,
        ..
    } = &d
    else {
        panic!("{d:?}")
    };
    assert!(
        message.contains("mx-0") && message.contains("mail/other"),
        "{message}"
    );
    // the smallest maxUnavailable of the ring holds: 2 here, but the other DBU says 1
    let two = with(json!({"maxUnavailable": 2}));
    assert_eq!(reason(&decide(&two, &st, &busy, ts(1))), "RingBusy");
    let roomy = locked(other_holds("mx-0", "127.0.0.50", 2));
    assert_eq!(reason(&decide(&two, &st, &roomy, ts(1))), "Claim");
    // a lock that cannot be read is a wait that says so
    let mut broken = locked(RingLock::default());
    broken.ring_lock = Some(Err("forbidden".into()));
    let d = decide(&s, &st, &broken, ts(1));
    assert_eq!(reason(&d), "RingLockUnreadable");
    assert_eq!(missing(&d, &broken), None, "read once per reconcile");
}

#[test]
fn a_new_backend_does_not_start_while_another_dbu_holds_the_ring() {
    let s = settings();
    let d = decide(
        &s,
        &status(vec![]),
        &locked(other_holds("mx-0", "127.0.0.50", 1)),
        ts(0),
    );
    assert_eq!(reason(&d), "RingBusy", "{d:?}");
    // the capacity guard counts the other DBU's backend as out
    let two = with(json!({"maxUnavailable": 2, "minAvailableBackends": 2}));
    let lk = other_holds("backend-0", "127.0.0.11", 2);
    let d = decide(&two, &status(vec![]), &locked(lk), ts(0));
    assert_eq!(reason(&d), "InsufficientRingCapacity", "{d:?}");
}

#[test]
fn the_ring_lock_is_released_when_a_backend_is_back_and_registers_what_is_out() {
    let s = settings();
    // backend-2 finished; it is still registered: released, even though the rollout is complete
    let mut done = rec(2, Step::Done, 0);
    done.from_revision = Some(OLD.into());
    let mut st = status(vec![done]);
    st.ring_held = vec!["backend-2".into()];
    let mut obs = locked(RingLock::default());
    obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
    let d = decide(&s, &st, &obs, ts(1));
    assert_eq!(d, Decision::Claim { pods: vec![] });
    let out = record(&mut st, &d, Acted::Claimed(Ok(())), ts(1));
    assert!(st.ring_held.is_empty());
    assert_eq!(out.requeue, Some(Duration::ZERO));
    assert_eq!(decide(&s, &st, &obs, ts(2)), Decision::Complete);
    // a conflict leaves status as it was and looks again soon
    let mut st2 = status(vec![]);
    st2.ring_held = vec!["backend-2".into()];
    let out = record(
        &mut st2,
        &Decision::Claim { pods: vec![] },
        Acted::Claimed(Err("conflict".into())),
        ts(1),
    );
    assert_eq!(st2.ring_held, ["backend-2"]);
    assert_eq!(out.requeue, Some(Duration::from_secs(1)));
    // a backend already past Drain but not registered (a record from before the lock) is out of
    // the ring whatever the lock says: registered at once, even when the ring looks busy
    let mut st3 = status(vec![rec(2, Step::StopDovecot, 0)]);
    st3.ring_held.clear();
    let d = decide(
        &s,
        &st3,
        &locked(other_holds("mx-0", "127.0.0.50", 1)),
        ts(1),
    );
    assert_eq!(
        d,
        Decision::Claim {
            pods: vec!["backend-2".into()]
        }
    );
}

#[test]
fn a_selected_director_that_is_a_host_of_the_ring_stalls() {
    let s = settings();
    let mut obs = world();
    obs.directors = vec![
        ("director-0".into(), Some("127.0.0.10".into())),
        ("mx-0".into(), Some("127.0.0.12".into())),
    ];
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Stall { reason, message } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(*reason, "DirectorSelectorMatchesBackends");
    assert!(
        message.contains("mx-0") && message.contains("127.0.0.12"),
        "{message}"
    );
    obs.directors.pop();
    assert_eq!(
        reason_of(&decide(&s, &status(vec![]), &obs, ts(0))),
        "Begin"
    );
}

#[test]
fn ring_not_synced_names_the_directors_that_are_not() {
    let s = settings();
    let mut obs = world();
    obs.ring_synced = Some(false);
    obs.unsynced = vec!["director-1".into()];
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Wait {
        reason, message, ..
    } = &d
    else {
        panic!("{d:?}")
    };
    assert_eq!(*reason, "RingNotSynced");
    assert!(message.contains("on director-1"), "{message}");
}

fn reason_of(d: &Decision) -> &'static str {
    reason(d)
}

#[test]
fn every_director_must_show_the_backend_drained_before_it_is_stopped_or_taken_down() {
    let s = settings();
    let mut obs = drained(2);
    obs.ring_synced = Some(true);
    let lagging = vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 20, true, 0),
    ];
    for step in [Step::StopLmtp, Step::RingRemove] {
        let st = status(vec![rec(2, step, 0)]);
        obs.other_rings = Some(vec![("director-1".into(), Some(lagging.clone()))]);
        let d = decide(&s, &st, &obs, ts(0));
        let Decision::Reassert {
            commands, director, ..
        } = &d
        else {
            panic!("{step}: {d:?}")
        };
        assert_eq!(director.as_deref(), Some("director-1"), "{step}");
        assert_eq!(
            commands[0].join(" "),
            "doveadm director update 127.0.0.13 0"
        );
        // agreeing directors: the step runs
        obs.other_rings = Some(vec![("director-1".into(), obs.ring.clone())]);
        assert_eq!(decide(&s, &st, &obs, ts(0)), run(2, step), "{step}");
    }
    // a director that cannot be read holds back StopLmtp, not RingRemove (Dovecot is stopped
    // by then: down + flush are what protect its users)
    obs.other_rings = Some(vec![("director-1".into(), None)]);
    let d = decide(&s, &status(vec![rec(2, Step::StopLmtp, 0)]), &obs, ts(0));
    assert_eq!(reason(&d), "RingUnreadable", "{d:?}");
    let d = decide(&s, &status(vec![rec(2, Step::RingRemove, 0)]), &obs, ts(0));
    assert_eq!(d, run(2, Step::RingRemove));
}

#[test]
fn begin_is_checked_against_the_api_server_not_the_cache() {
    let old = pod(2, OLD);
    let new = pod(2, NEW);
    assert_eq!(judge::begin_still(NEW, Some(NEW), Some(&old)), Ok(()));
    assert!(
        judge::begin_still(NEW, Some(NEW), Some(&new))
            .unwrap_err()
            .contains("lags")
    );
    assert!(
        judge::begin_still(NEW, Some("rev-9"), Some(&old))
            .unwrap_err()
            .contains("rev-9")
    );
    assert!(judge::begin_still(NEW, Some(NEW), None).is_err());
    assert!(judge::target_still(NEW, Some(NEW), "backend-2").is_none());
    assert!(judge::target_still(NEW, None, "backend-2").is_some());
}

#[test]
fn the_soak_passes_on_real_traffic_or_a_login_that_landed_and_fails_otherwise() {
    use judge::{SoakMove, SoakSeen, soak};
    let r = rec(1, Step::Soak, 0);
    let ip = fixtures::backend_ip(1);
    let pod = fixtures::pod(1, NEW);
    let limit = Duration::from_secs(60);
    let poll = Duration::from_secs(5);
    let ring = |users| vec![fixtures::host(1, 50, true, users)];
    let seen = |ring: &'static [RingHost], user_on, login, can_login, waited| SoakSeen {
        pod: Some(&pod),
        ip: &ip,
        ring,
        user: "probe",
        user_on,
        login,
        can_login,
        waited: Duration::from_secs(waited),
    };
    let leak = |v: Vec<RingHost>| -> &'static [RingHost] { Vec::leak(v) };
    let (quiet, one, two) = (leak(ring(0)), leak(ring(1)), leak(ring(2)));
    let here = Some(ip.as_str());
    let kind = |m: SoakMove| match m {
        SoakMove::Pass(_) => "pass",
        SoakMove::Wait(..) => "wait",
        SoakMove::Fail(_) => "fail",
        SoakMove::TryLogin => "login",
    };
    let cases: Vec<(&str, SoakSeen, &str)> = vec![
        ("users of their own", seen(one, None, None, true, 1), "pass"),
        // the one mapping is the verify user's own (a move): not traffic
        (
            "only the verify user, moved",
            seen(one, here, None, true, 1),
            "login",
        ),
        (
            "the login landed",
            seen(one, here, Some(Ok(())), true, 1),
            "pass",
        ),
        (
            "the login failed",
            seen(one, here, Some(Err("NO")), true, 1),
            "wait",
        ),
        (
            "others beside the verify user",
            seen(two, here, Some(Err("NO")), true, 1),
            "pass",
        ),
        (
            "quiet, may log in",
            seen(quiet, None, None, true, 1),
            "login",
        ),
        (
            "quiet, no credentials",
            seen(quiet, None, None, false, 1),
            "wait",
        ),
        (
            "verify user mapped by an outside prober",
            seen(one, here, None, false, 1),
            "pass",
        ),
        (
            "quiet at the limit",
            seen(quiet, None, None, false, 60),
            "fail",
        ),
        (
            "login failed at the limit",
            seen(one, here, Some(Err("NO")), true, 60),
            "fail",
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(kind(soak(&r, &s, limit, poll)), want, "{name}");
    }
    // a pod that stops being Ready fails at once; a host someone took out is theirs
    let mut down = pod.clone();
    down.ready = false;
    let mut s = seen(two, None, None, true, 1);
    s.pod = Some(&down);
    assert_eq!(kind(soak(&r, &s, limit, poll)), "fail");
    let out = leak(vec![fixtures::host(1, 0, true, 0)]);
    assert_eq!(
        kind(soak(&r, &seen(out, None, None, true, 1), limit, poll)),
        "pass"
    );
    // restored down, as a human had it: nothing to wait for
    let mut kept = r.clone();
    kept.original_up = Some(false);
    assert_eq!(
        kind(soak(&kept, &seen(quiet, None, None, true, 1), limit, poll)),
        "pass"
    );
    let SoakMove::Fail(why) = soak(
        &r,
        &seen(
            one,
            here,
            Some(Err("p2 NO [AUTHENTICATIONFAILED]")),
            true,
            61,
        ),
        limit,
        poll,
    ) else {
        panic!()
    };
    assert!(
        why.contains("within 60s") && why.contains("AUTHENTICATIONFAILED"),
        "{why}"
    );
    let s = with(json!({}));
    let (cmds, failed) = judge::soak_failed(&s, &ip, &why);
    assert_eq!(
        cmds.iter().map(|c| c[2].as_str()).collect::<Vec<_>>(),
        ["update", "down", "flush"]
    );
    let StepResult::Failed(e) = failed else {
        panic!()
    };
    assert_eq!(
        (e.step, e.reason.as_deref()),
        (Step::Soak, Some("SoakFailed"))
    );
}

#[test]
fn move_drain_runs_every_poll_while_users_are_mapped_and_waits_for_nothing() {
    let s = with(json!({"drain": {"strategy": "Move"}}));
    let st = status(vec![rec(2, Step::WaitSessions, 0)]);
    let mut obs = drained(2);
    obs.ring.as_mut().unwrap()[2].users = 40;
    // Wait would sleep until the mappings expire; Move looks at the sessions now
    assert_eq!(decide(&s, &st, &obs, ts(10)), run(2, Step::WaitSessions));
    assert!(matches!(
        decide(&settings(), &st, &obs, ts(10)),
        Decision::Wait { .. }
    ));
    // the ceiling holds for Move too
    assert_eq!(
        decide(&s, &st, &obs, ts(60)),
        Decision::Run {
            pod: "backend-2".into(),
            step: Step::WaitSessions,
            ceiling_users: Some(40)
        }
    );
}

#[test]
fn draining_polls_add_up_in_the_record_and_moves_are_events() {
    let mut st = status(vec![rec(2, Step::WaitSessions, 0)]);
    let d = run(2, Step::WaitSessions);
    let poll = |moved, users_moved| StepResult::Draining {
        requeue: Duration::from_secs(1),
        message: "moving".into(),
        poll: DrainPoll {
            users_left: 30,
            sessions: 12,
            without_session: 20,
            sessions_moved: moved,
            users_moved,
            predicted_end: Some(ts(20)),
        },
    };
    let r = record(&mut st, &d, Acted::Ran(poll(5, 0)), ts(3));
    assert_eq!(r.requeue, Some(Duration::from_secs(1)));
    assert_eq!(r.notes.len(), 1);
    assert_eq!(r.notes[0].reason, EventReason::UsersMoved);
    let r = record(&mut st, &d, Acted::Ran(poll(0, 0)), ts(4));
    assert!(r.notes.is_empty(), "a poll that moved nobody is no event");
    record(&mut st, &d, Acted::Ran(poll(3, 18)), ts(5));
    let drain = st.backends[0].drain.clone().unwrap();
    assert_eq!((drain.sessions_moved, drain.users_moved), (8, 18));
    assert_eq!(
        (drain.users_left, drain.sessions, drain.without_session),
        (30, Some(12), Some(20))
    );
    assert_eq!(drain.predicted_end, Some(Time(ts(20))));
    assert_eq!(st.backends[0].step, Step::WaitSessions);
}

#[test]
fn drain_progress_is_written_at_most_every_15_seconds_and_shows_in_the_users_column() {
    let s = settings(); // Wait, ceiling 60 s
    let mut st = status(vec![rec(2, Step::WaitSessions, 0)]);
    let mut obs = drained(2);
    obs.ring.as_mut().unwrap()[2].users = 9;
    let d = decide(&s, &st, &obs, ts(1));
    conclude(&s, &d, &mut st, &obs, Some(1), ts(1));
    assert_eq!(st.drain_users, Some(9));
    let drain = st.backends[0].drain.clone().unwrap();
    // Wait cannot end before its ceiling while users stay mapped
    assert_eq!(drain.predicted_end, Some(Time(ts(60))));
    let written = st.clone();
    for (at, users, due) in [(5, 8, false), (10, 7, false), (16, 6, true)] {
        obs.ring.as_mut().unwrap()[2].users = users;
        let mut next = written.clone();
        conclude(&s, &d, &mut next, &obs, Some(1), ts(at));
        assert_eq!(next.drain_users, Some(users));
        assert_eq!(
            conditions::worth_writing(Some(&written), &next),
            due,
            "at {at}s"
        );
    }
    // a move is always written: its counts add up across polls, and an unwritten one would be
    // lost (the next reconcile starts from the written status)
    let mut moved = written.clone();
    moved.backends[0].drain.as_mut().unwrap().sessions_moved += 3;
    assert!(conditions::worth_writing(Some(&written), &moved));
    // once the backend moves on, the column is empty
    st.backends[0].step = Step::StopLmtp;
    conclude(&s, &run(2, Step::StopLmtp), &mut st, &obs, Some(1), ts(20));
    assert_eq!(st.drain_users, None);
}

#[test]
fn what_a_lagging_cache_can_cause_is_taken_again_from_a_fresh_read() {
    use crate::reason::StallReason as R;
    let cached = world();
    let fresh = Observed {
        fresh: true,
        ..world()
    };
    let stall = |r| Decision::stall(r, "m");
    let rollout = status(vec![]);
    let (mut complete, mut not_in_ring) = (rollout.clone(), rollout.clone());
    conditions::summarize(&mut complete, &Decision::Complete, Some(1), ts(0));
    conditions::summarize(
        &mut not_in_ring,
        &stall(R::BackendNotInRing),
        Some(1),
        ts(0),
    );
    // (decision, world, the status as read, taken again from a fresh read)
    let table = [
        (stall(R::BackendNotInRing), &cached, &rollout, true),
        (stall(R::BackendAlreadyDrained), &cached, &rollout, true),
        (stall(R::StatefulSetNotFound), &cached, &rollout, true),
        (stall(R::UpdateStrategyNotOnDelete), &cached, &rollout, true),
        (stall(R::StatefulSetClaimed), &cached, &rollout, true),
        (
            stall(R::DirectorSelectorMatchesBackends),
            &cached,
            &rollout,
            true,
        ),
        // the operator's own records, or read fresh already: no cache involved
        (stall(R::BackendFailed), &cached, &rollout, false),
        (stall(R::SoakFailed), &cached, &rollout, false),
        (stall(R::ProbeFailed), &cached, &rollout, false),
        (stall(R::ResetWouldDeleteMailData), &cached, &rollout, false),
        (
            stall(R::ProbeCredentialsUnreadable),
            &cached,
            &rollout,
            false,
        ),
        (
            stall(R::MaintenanceWindowTooShort),
            &cached,
            &rollout,
            false,
        ),
        (stall(R::InvalidSpec), &cached, &rollout, false),
        (stall(R::BackendNotInRing), &fresh, &rollout, false),
        // a first completion is confirmed; completing again at rest costs no read
        (Decision::Complete, &cached, &rollout, true),
        (Decision::Complete, &cached, &complete, false),
        // a stall confirmed when it was written stands from the caches; another one does not
        (stall(R::BackendNotInRing), &cached, &not_in_ring, false),
        (stall(R::BackendAlreadyDrained), &cached, &not_in_ring, true),
        (Decision::Complete, &fresh, &rollout, false),
        (
            Decision::wait(WaitReason::BackendNotReady, "m", Duration::from_secs(1)),
            &cached,
            &rollout,
            false,
        ),
        (run(2, Step::Drain), &cached, &rollout, false),
    ];
    for (d, obs, ready, want) in table {
        assert_eq!(
            unconfirmed(&d, obs, ready),
            want,
            "{d:?} fresh={}",
            obs.fresh
        );
    }
    // every stall reason is classified on purpose: a new one must be added to the table above
    assert_eq!(R::ALL.len(), 13);
}

#[test]
fn a_new_target_revision_is_taken_only_from_a_fresh_read() {
    let st = |t: Option<&str>| DovecotBackendUpgradeStatus {
        target_revision: t.map(Into::into),
        ..Default::default()
    };
    let seen = |rev: &str, fresh| Observed {
        sts: Some(fixtures::sts(rev, 3)),
        fresh,
        ..Default::default()
    };
    assert!(target_unconfirmed(&st(Some(NEW)), &seen(OLD, false)));
    assert!(!target_unconfirmed(&st(Some(NEW)), &seen(OLD, true)));
    assert!(!target_unconfirmed(&st(Some(NEW)), &seen(NEW, false)));
    // a DBU's first target needs no confirmation: nothing is dropped
    assert!(!target_unconfirmed(&st(None), &seen(NEW, false)));
    assert!(!target_unconfirmed(&st(Some(NEW)), &Observed::default()));
}

#[test]
fn progress_of_one_target_never_goes_backwards() {
    // (written before, seen now, written now)
    let table = [
        (Some("2/3"), "1/3", "2/3"), // an upgraded backend restarting, or a cache behind
        (Some("2/3"), "3/3", "3/3"),
        (Some("2/3"), "0/4", "0/4"), // scaled up: counted again
        (Some("3/3"), "1/2", "1/2"), // scaled down
        (None, "0/3", "0/3"),        // a new target (retarget clears it)
        (Some("garbage"), "1/3", "1/3"),
    ];
    for (before, seen, want) in table {
        assert_eq!(
            no_step_back(before, seen.to_string()),
            want,
            "{before:?} {seen}"
        );
    }
    let mut st = fixtures::status(OLD, vec![]);
    st.progress = Some("3/3".into());
    retarget(&mut st, NEW);
    assert_eq!(st.progress, None);
}

#[test]
fn conclude_keeps_progress_while_an_upgraded_backend_is_not_ready() {
    let s = settings();
    let mut obs = Observed {
        pods: vec![pod(0, NEW), pod(1, NEW), pod(2, OLD)],
        ..world()
    };
    let mut st = status(vec![]);
    let d = Decision::wait(WaitReason::BackendNotReady, "m", Duration::from_secs(1));
    conclude(&s, &d, &mut st, &obs, Some(1), ts(0));
    assert_eq!(st.progress.as_deref(), Some("2/3"));
    obs.pods[1].ready = false;
    conclude(&s, &d, &mut st, &obs, Some(1), ts(1));
    assert_eq!(st.progress.as_deref(), Some("2/3"));
}

#[test]
fn a_stall_over_what_the_ring_says_of_a_backend_waits_for_a_synced_ring() {
    use crate::reason::StallReason as R;
    let s = settings();
    // no backend is a host of the ring (it names another one); backend-2 is the first candidate
    let unknown = Observed {
        ring: Some(vec![host(5, 100, true, 3)]),
        ..world()
    };
    let d = decide(&s, &status(vec![]), &unknown, ts(0));
    assert_eq!(reason(&d), "BackendNotInRing");
    assert_eq!(missing(&d, &unknown), Some(Missing::RingSync));
    let unsynced = Observed {
        ring_synced: Some(false),
        unsynced: vec!["director-1".into()],
        ..unknown.clone()
    };
    let d = decide(&s, &status(vec![]), &unsynced, ts(0));
    assert_eq!(reason(&d), "RingNotSynced");
    assert!(format!("{d:?}").contains("director-1"), "{d:?}");
    let synced = Observed {
        ring_synced: Some(true),
        ..unknown
    };
    let d = decide(&s, &status(vec![]), &synced, ts(0));
    assert_eq!(reason(&d), "BackendNotInRing");
    assert_eq!(missing(&d, &synced), None);
    // other stalls need no ring read
    let d = Decision::stall(R::BackendFailed, "m");
    assert_eq!(missing(&d, &world()), None);
}
