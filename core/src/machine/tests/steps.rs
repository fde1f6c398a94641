//! A backend's steps: each result moves it forward, retries it or halts it; the drain, Replace and the soak.

use super::*;
use pretty_assertions::assert_eq;

#[test]
fn every_step_of_an_in_flight_backend_runs_in_order() {
    // ring as it looks while backend-2 is at each step (vhosts 0 from WaitSessions on, down later)
    for step in Step::ALL.iter().copied().filter(|s| *s != Step::Done) {
        let mut obs = world();
        // read: the drain's gate weighs the hosts other DBUs hold out
        obs.ring_lock = Some(Ok(RingLock::default()));
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
    let s = with(json!({"drain": {"strategy": "Wait"}})); // timeout 60s, poll 5s
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
    let mut obs = world();
    obs.ring_lock = Some(Ok(RingLock::default()));
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
    for step in Step::ALL.iter().copied().filter(|s| *s != Step::Done) {
        let mut ok = rec(1, step, 0);
        let notes = apply_result(
            &mut ok,
            &StepResult::Advanced {
                message: None,
                new_ip: None,
                pod_uid: None,
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
            pod_uid: Some("uid-2-new".into()),
            layout: None,
        },
        ts(1),
    );
    assert_eq!(r.new_ip.as_deref(), Some("127.0.0.99"));
    // Replace binds the pod it found Ready at the target; StopDovecot the one it stopped
    assert_eq!(
        (r.new_pod_uid.as_deref(), r.stopped_pod_uid.as_deref()),
        (Some("uid-2-new"), None)
    );
    let mut r = rec(2, Step::StopDovecot, 0);
    apply_result(
        &mut r,
        &StepResult::Advanced {
            message: None,
            new_ip: None,
            pod_uid: Some("uid-2-old".into()),
            layout: None,
        },
        ts(1),
    );
    assert_eq!(
        (r.new_pod_uid.as_deref(), r.stopped_pod_uid.as_deref()),
        (None, Some("uid-2-old"))
    );
    // a pod recreated during the soak: back to Replace; the ring holds the pod's new IP, so
    // that is the entry to keep out now and to replace at the next RingRestore
    let mut r = rec(2, Step::Soak, 0);
    (r.new_ip, r.new_pod_uid) = (Some("127.0.0.99".into()), Some("uid-a".into()));
    apply_result(&mut r, &judge::unbound("uid-a", None), ts(1));
    assert_eq!(
        (
            r.step,
            r.ip.as_str(),
            r.new_ip.as_deref(),
            r.new_pod_uid.as_deref()
        ),
        (Step::Replace, "127.0.0.99", None, None)
    );
    // ... before RingRestore the ring still holds the old IP: kept
    let mut r = rec(2, Step::Verify, 0);
    (r.new_ip, r.new_pod_uid) = (Some("127.0.0.99".into()), Some("uid-a".into()));
    apply_result(&mut r, &judge::unbound("uid-a", None), ts(1));
    assert_eq!(
        (r.step, r.ip.as_str(), r.new_pod_uid.as_deref()),
        (Step::Replace, "127.0.0.13", None)
    );
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
            ReplaceMove::Done {
                ip: "127.0.0.99".into(),
                uid: Some(format!("uid-2-{NEW}")),
            },
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
        ReplaceMove::Done {
            ip: "127.0.0.13".into(),
            uid: Some(format!("uid-2-{NEW}")),
        }
    );
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
    let seen = |ring: &'static [RingHost], user_on, login, can_login, sessions, waited| SoakSeen {
        pod: Some(&pod),
        ip: &ip,
        ring,
        user: "probe",
        user_on,
        login,
        can_login,
        sessions,
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
        (
            "sessions on the backend",
            seen(one, None, None, true, 2, 1),
            "pass",
        ),
        // the director maps users before it proxies: a backend where every login fails
        // has mappings too; they prove nothing
        (
            "mappings only, may log in",
            seen(two, None, None, true, 0, 1),
            "login",
        ),
        (
            "mappings only, no credentials",
            seen(two, None, None, false, 0, 1),
            "wait",
        ),
        (
            "mappings only at the limit",
            seen(two, None, None, false, 0, 60),
            "fail",
        ),
        // the one mapping is the verify user's own (a move): not traffic
        (
            "only the verify user, moved",
            seen(one, here, None, true, 0, 1),
            "login",
        ),
        (
            "the login landed",
            seen(one, here, Some(Ok(())), true, 0, 1),
            "pass",
        ),
        (
            "the login failed",
            seen(one, here, Some(Err("NO")), true, 0, 1),
            "wait",
        ),
        (
            "the login failed, others mapped",
            seen(two, here, Some(Err("NO")), true, 0, 1),
            "wait",
        ),
        (
            "quiet, may log in",
            seen(quiet, None, None, true, 0, 1),
            "login",
        ),
        (
            "quiet, no credentials",
            seen(quiet, None, None, false, 0, 1),
            "wait",
        ),
        // mapped by an outside prober's login: only its session on the backend counts
        (
            "verify user mapped by an outside prober",
            seen(one, here, None, false, 0, 1),
            "wait",
        ),
        (
            "quiet at the limit",
            seen(quiet, None, None, false, 0, 60),
            "fail",
        ),
        (
            "login failed at the limit",
            seen(one, here, Some(Err("NO")), true, 0, 60),
            "fail",
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(kind(soak(&r, &s, limit, poll)), want, "{name}");
    }
    // a pod that stops being Ready fails at once; a host someone took out is theirs
    let mut down = pod.clone();
    down.ready = false;
    let mut s = seen(two, None, None, true, 3, 1);
    s.pod = Some(&down);
    assert_eq!(kind(soak(&r, &s, limit, poll)), "fail");
    let out = leak(vec![fixtures::host(1, 0, true, 0)]);
    assert_eq!(
        kind(soak(&r, &seen(out, None, None, true, 0, 1), limit, poll)),
        "pass"
    );
    // restored down, as a human had it: nothing to wait for
    let mut kept = r.clone();
    kept.original_up = Some(false);
    assert_eq!(
        kind(soak(
            &kept,
            &seen(quiet, None, None, true, 0, 1),
            limit,
            poll
        )),
        "pass"
    );
    let SoakMove::Fail(why) = soak(
        &r,
        &seen(
            one,
            here,
            Some(Err("p2 NO [AUTHENTICATIONFAILED]")),
            true,
            0,
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
    let wait = with(json!({"drain": {"strategy": "Wait"}}));
    assert!(matches!(
        decide(&wait, &st, &obs, ts(10)),
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
            unknown: 0,
            listed: false,
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
    // sessions whose state the titles do not show: said once (a Warning), and in status
    let blind = |unknown| StepResult::Draining {
        requeue: Duration::from_secs(5),
        message: "waiting".into(),
        poll: DrainPoll {
            users_left: 30,
            sessions: 12,
            unknown,
            ..DrainPoll::default()
        },
    };
    let r = record(&mut st, &d, Acted::Ran(blind(12)), ts(6));
    assert_eq!(r.notes.len(), 1);
    assert_eq!(r.notes[0].reason, EventReason::SessionsWaited);
    assert!(r.notes[0].message.contains("verbose_proctitle = yes"));
    assert_eq!(
        st.backends[0].drain.as_ref().unwrap().unknown_sessions,
        Some(12)
    );
    let r = record(&mut st, &d, Acted::Ran(blind(11)), ts(7));
    assert!(r.notes.is_empty(), "said once: {:?}", r.notes);
    record(&mut st, &d, Acted::Ran(blind(0)), ts(8));
    assert_eq!(
        st.backends[0].drain.as_ref().unwrap().unknown_sessions,
        None
    );
}

#[test]
fn drain_progress_is_written_at_most_every_15_seconds_and_shows_in_the_users_column() {
    let s = with(json!({"drain": {"strategy": "Wait"}})); // ceiling 60 s
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
fn a_relocations_new_pod_must_run_off_every_node_under_maintenance() {
    use crate::machine::judge::{ReplaceMove, relocated_off};
    let t10 = Duration::from_secs(10);
    let done = || ReplaceMove::Done {
        ip: "127.0.0.99".into(),
        uid: Some("uid-new".into()),
    };
    let mut back_there = pod(2, NEW);
    back_there.maintenance = Some("node n1 is cordoned".into());
    let elsewhere = pod(2, NEW);
    // (pod, relocating, waited, move) -> what Replace does
    let waits =
        |m: &ReplaceMove| matches!(m, ReplaceMove::Wait(w) if w.contains("under maintenance"));
    let times_out = |m: &ReplaceMove| matches!(m, ReplaceMove::TimedOut(w) if w.contains("tolerate the maintenance taint"));
    assert!(waits(&relocated_off(
        done(),
        Some(&back_there),
        true,
        Duration::ZERO,
        t10
    )));
    assert!(times_out(&relocated_off(
        done(),
        Some(&back_there),
        true,
        t10,
        t10
    )));
    // off the node: done; not a relocation (an upgrade): the node is none of Replace's business
    assert_eq!(
        relocated_off(done(), Some(&elsewhere), true, Duration::ZERO, t10),
        done()
    );
    assert_eq!(
        relocated_off(done(), Some(&back_there), false, Duration::ZERO, t10),
        done()
    );
    // the stopped pod is still deleted first, wherever it is
    let del = ReplaceMove::Delete("uid-old".into());
    assert_eq!(
        relocated_off(del.clone(), Some(&back_there), true, Duration::ZERO, t10),
        del
    );
}

#[test]
fn on_a_node_under_maintenance_replace_leaves_the_old_pod_to_the_drain_before_deleting_it() {
    use crate::machine::judge::evict_first;
    use crate::maintenance::EVICTION_GRACE;
    let old = pod(2, OLD);
    let uid = old.uid.clone().unwrap();
    let mut draining = old.clone();
    draining.maintenance = Some("node n1 is cordoned".into());
    let mut released = draining.clone();
    released.released = Some(ts(100));
    let grace = EVICTION_GRACE.as_secs() as i64;
    let waiting = format!(
        "backend-2: stopped and released to the node's drain; waiting up to {EVICTION_GRACE:?} for its eviction"
    );
    let t: Vec<(&PodView, k8s_openapi::jiff::Timestamp, ReplaceMove)> = vec![
        // a node not under maintenance: deleted at once, as ever
        (&old, ts(0), ReplaceMove::Delete(uid.clone())),
        // under maintenance: released first (the drain's next eviction deletes it) ...
        (&draining, ts(0), ReplaceMove::Release(uid.clone())),
        // ... then left to the drain for the grace, counted from the release (a step resumed
        // late by another leader still waits the whole grace) ...
        (&released, ts(100), ReplaceMove::Wait(waiting.clone())),
        (&released, ts(100 + grace - 1), ReplaceMove::Wait(waiting)),
        // ... and deleted by Replace when no eviction came (cordoned, not drained)
        (&released, ts(100 + grace), ReplaceMove::Delete(uid.clone())),
    ];
    for (p, now, want) in t {
        assert_eq!(
            evict_first(ReplaceMove::Delete(uid.clone()), Some(p), now),
            want,
            "{p:?} {now:?}"
        );
    }
    // only a delete is turned into a release: waits, completions and timeouts pass unchanged
    for mv in [
        ReplaceMove::Wait("w".into()),
        ReplaceMove::Done {
            ip: "127.0.0.9".into(),
            uid: None,
        },
        ReplaceMove::TimedOut("t".into()),
    ] {
        assert_eq!(evict_first(mv.clone(), Some(&draining), ts(0)), mv);
    }
}

#[test]
fn the_last_step_says_upgraded_or_relocated() {
    let advanced = StepResult::Advanced {
        message: None,
        new_ip: None,
        pod_uid: None,
        layout: None,
    };
    let last = *Step::ALL
        .iter()
        .rev()
        .find(|s| s.next() == Step::Done)
        .expect("a last step");
    let mut upgrade = rec(1, last, 0);
    let notes = apply_result(&mut upgrade, &advanced, ts(5));
    assert_eq!(notes[1].reason, "BackendUpgraded");
    assert_eq!(notes[1].message, "backend-1: upgraded and back in the ring");
    let mut relocation = rec(1, last, 0);
    relocation.relocation = Some("node n1 is cordoned".into());
    let notes = apply_result(&mut relocation, &advanced, ts(5));
    assert_eq!(
        notes[1].message,
        "backend-1: relocated and back in the ring"
    );
}

/// Replace never deletes a pod recreated since StopDovecot (its Dovecot runs) while it is the
/// only host a director sends users to (found by the model with seed 2026: it sat at the old
/// entry of a pod that had moved, and a human had taken every other host down); once another
/// host serves it is deleted for its revision. The pod StopDovecot stopped serves nobody and is
/// deleted whatever the ring shows.
#[test]
fn replace_waits_to_delete_a_recreated_pod_that_is_the_last_host_serving() {
    use crate::machine::steps::{self, Action, Input, Next, Output};
    let s = settings();
    let mut r = rec(2, Step::Replace, 0);
    r.stopped_pod_uid = Some("uid-stopped".into());
    let mut obs = world();
    {
        let ring = obs.ring.as_mut().unwrap();
        ring[0].up = false;
        ring[1].vhosts = 0;
    }
    // recreated at the old revision under the name, at backend-2's entry, which serves
    let mut recreated = obs.pods[2].clone();
    recreated.uid = Some("uid-recreated".into());
    let run = |obs: &Observed, r: &BackendStatus, pod: &PodView| {
        let input = Input {
            s: &s,
            rec: r,
            obs,
            now: ts(1),
            ceiling_users: None,
        };
        steps::step(
            input,
            &[(Action::ReadPod, Output::Pod(Ok(Some(pod.clone()))))],
        )
    };
    match run(&obs, &r, &recreated) {
        Next::Done(StepResult::Waiting { message, .. }) => {
            assert!(message.contains("only host that takes users"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // the pod StopDovecot stopped: deleted (its next need is the revision, then the delete)
    let mut stopped = recreated.clone();
    stopped.uid = r.stopped_pod_uid.clone();
    assert!(matches!(run(&obs, &r, &stopped), Next::Act(_)));
    // another host serves: the recreated pod is deleted too
    obs.ring.as_mut().unwrap()[1].vhosts = 50;
    assert!(matches!(run(&obs, &r, &recreated), Next::Act(_)));
}
