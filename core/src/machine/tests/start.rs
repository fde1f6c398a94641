//! Which backend starts, and what keeps one from starting: the world's checks, order, capacity, gates, the plan.

use super::*;
use pretty_assertions::assert_eq;

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
    // RingRestore: down, then the count, never up, so it takes no users between two
    // commands; at a new IP it is added at 0 (add makes it up)
    let ip: std::net::IpAddr = "127.0.0.13".parse().unwrap();
    let new: std::net::IpAddr = "127.0.0.99".parse().unwrap();
    let joined = |c: Vec<Command>| -> Vec<String> { c.iter().map(|c| c.argv.join(" ")).collect() };
    assert_eq!(
        joined(judge::ring_restore_commands(&s, &r, ip, ip, false)),
        [
            "doveadm director down 127.0.0.13",
            "doveadm director update 127.0.0.13 20"
        ]
    );
    assert_eq!(
        joined(judge::ring_restore_commands(&s, &r, ip, new, false)),
        [
            "doveadm director add 127.0.0.99 0",
            "doveadm director remove 127.0.0.13",
            "doveadm director down 127.0.0.99",
            "doveadm director update 127.0.0.99 20"
        ]
    );
    // abort or delete before the operator took it down itself: its count goes back, and its
    // up or down (a human's) is not touched
    let mut at_wait = (*r).clone();
    at_wait.step = Step::WaitSessions;
    let undo = restore_commands(&s, &at_wait, false, true).unwrap();
    assert_eq!(joined(undo), ["doveadm director update 127.0.0.13 20"]);
    // sent back to the drain after StopLmtp closed LMTP: reloaded first, so LMTP listens again
    let mut rewound = at_wait.clone();
    rewound.mail_layout = Some(crate::api::MailLayout {
        user: "probe".into(),
        home: None,
        mail: None,
        expanded: false,
    });
    let undo = joined(restore_commands(&s, &rewound, false, true).unwrap());
    assert!(undo[0].ends_with("reload"), "{undo:?}");
    assert_eq!(undo[1], "doveadm director update 127.0.0.13 20");
    // ... once it has (RingRemove on, and after a rewind): back up, or down as it was
    let mut up_at_wait = rec(2, Step::WaitSessions, 0);
    up_at_wait.downed = true;
    assert_eq!(
        joined(restore_commands(&s, &up_at_wait, false, true).unwrap())[1],
        "doveadm director up 127.0.0.13"
    );
    assert_eq!(
        joined(restore_commands(&s, &up_at_wait, true, true).unwrap())[1],
        "doveadm director down 127.0.0.13"
    );
    at_wait.downed = true;
    assert_eq!(
        joined(restore_commands(&s, &at_wait, false, true).unwrap())[1],
        "doveadm director down 127.0.0.13"
    );
    // an up backend still comes back up
    let up = rec(2, Step::RingRestore, 0);
    assert_eq!(
        joined(judge::ring_restore_commands(&s, &up, ip, ip, false))[1],
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
fn a_pause_still_takes_a_stopped_backend_down_and_flushes_its_users() {
    let s = crate::settings::validate(&fixtures::spec(json!({"paused": true}))).unwrap();
    let mut obs = world();
    // drained at the ceiling with users still mapped, and Dovecot stopped
    obs.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, true, 4),
    ]);
    obs.ring_synced = Some(true);
    obs.pods[2].ready = false;
    let cases = [
        (Step::StopLmtp, false, "Paused"), // Dovecot runs: no new disruption
        (Step::StopDovecot, true, "Paused"), // Ready: not stopped yet, not stopped now
        (Step::StopDovecot, false, "Run"), // stopping already: finish it
        (Step::RingRemove, false, "Run"),  // stopped: down + flush move its users
        // past RingRemove it must be down: a director that shows it up is corrected
        (Step::Reset, false, "Reassert"),
    ];
    for (step, ready, want) in cases {
        obs.pods[2].ready = ready;
        let d = decide(&s, &status(vec![rec(2, step, 0)]), &obs, ts(0));
        assert_eq!(reason(&d), want, "{step} (Ready {ready}): {d:?}");
    }
    // ... and once it is down: nothing more while paused
    obs.ring.as_mut().unwrap()[2] = host(2, 0, false, 0);
    let d = decide(&s, &status(vec![rec(2, Step::Reset, 0)]), &obs, ts(0));
    assert_eq!(reason(&d), "Paused");
}

#[test]
fn a_refused_spec_still_takes_a_stopped_backend_down_and_flushes_its_users() {
    use crate::settings::{Policy, admit, protective, validate};
    // refused by the operator's policy, invalid where the protective steps do not read, and
    // invalid where they do
    let custom = fixtures::spec(json!({"reset": {"commands": [["/bin/true"]]}}));
    let why = admit(validate(&custom).unwrap(), &Policy::default()).unwrap_err();
    let bad_drain = fixtures::spec(json!({"drain": {"timeout": "30x"}}));
    assert!(validate(&bad_drain).is_err());
    let mut bad_user = fixtures::spec(json!({}));
    bad_user.verify.user = "user *".into();
    assert!(validate(&bad_user).is_err());
    let bad_stop = fixtures::spec(json!({"timeouts": {"stop": "soon"}}));
    assert!(
        protective(&bad_stop, "bad").is_none(),
        "the stop reads its timeout"
    );
    let mut obs = world();
    obs.ring = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 0, true, 4),
    ]);
    obs.ring_synced = Some(true);
    for spec in [custom, bad_drain, bad_user] {
        let s = protective(&spec, &why.to_string()).expect("protective settings");
        assert!(s.reset.is_empty() && s.lmtp_probe.is_none() && s.soak.is_none());
        let cases = [
            (Step::WaitSessions, false, "InvalidSpec"),
            (Step::StopLmtp, false, "InvalidSpec"), // Dovecot runs: no new disruption
            (Step::StopDovecot, true, "InvalidSpec"), // Ready: not stopped yet
            (Step::StopDovecot, false, "Run"),      // stopping already: finish it
            (Step::RingRemove, false, "Run"),       // stopped: down + flush move its users
            (Step::Reset, false, "Reassert"),       // a director that shows it up is corrected
        ];
        for (step, ready, want) in cases {
            obs.pods[2].ready = ready;
            let d = decide(&s, &status(vec![rec(2, step, 0)]), &obs, ts(0));
            assert_eq!(reason(&d), want, "{step} (Ready {ready}): {d:?}");
        }
        // once it is down: nothing more, and never Verify with a placeholder user
        obs.ring.as_mut().unwrap()[2] = host(2, 0, false, 0);
        obs.pods[2].ready = true;
        let d = decide(&s, &status(vec![rec(2, Step::Verify, 0)]), &obs, ts(0));
        assert_eq!(reason(&d), "InvalidSpec", "{d:?}");
        obs.ring.as_mut().unwrap()[2] = host(2, 0, true, 4);
        // nothing in flight: the stall, and no new backend
        obs.pods[2].ready = true;
        let d = decide(&s, &status(vec![]), &obs, ts(0));
        assert_eq!(reason(&d), "InvalidSpec", "{d:?}");
        let Decision::Stall { message, .. } = d else {
            panic!()
        };
        assert!(message.contains("spec.reset.commands"), "{message}");
    }
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
    let wait = crate::settings::validate(&fixtures::spec(
        json!({"drain": {"strategy": "Wait", "timeout": "60s"}}),
    ))
    .unwrap();
    assert_eq!(reason(&decide(&wait, &st, &obs, ts(1))), "StepInProgress");
    let two = crate::settings::validate(&fixtures::spec(
        json!({"maxUnavailable": 2, "drain": {"strategy": "Wait", "timeout": "60s"}}),
    ))
    .unwrap();
    let Decision::Begin(r) = decide(&two, &st, &obs, ts(1)) else {
        panic!()
    };
    assert_eq!(r.pod, "backend-1");
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
fn begin_is_checked_against_the_api_server_not_the_cache() {
    let old = pod(2, OLD);
    let new = pod(2, NEW);
    let r = rec(2, Step::Drain, 0);
    assert_eq!(judge::begin_still(&r, NEW, Some(NEW), Some(&old)), Ok(()));
    assert!(
        judge::begin_still(&r, NEW, Some(NEW), Some(&new))
            .unwrap_err()
            .contains("lags")
    );
    assert!(
        judge::begin_still(&r, NEW, Some("rev-9"), Some(&old))
            .unwrap_err()
            .contains("rev-9")
    );
    assert!(judge::begin_still(&r, NEW, Some(NEW), None).is_err());
    assert!(judge::target_still(NEW, Some(NEW), "backend-2").is_none());
    assert!(judge::target_still(NEW, None, "backend-2").is_some());
}

#[test]
fn a_backend_on_a_node_under_maintenance_is_relocated_first_even_at_the_target_revision() {
    let maint = "node n1 is cordoned";
    // every backend upgraded already; backend-0 (most users) sits on a cordoned node
    let mut obs = world();
    for p in &mut obs.pods {
        p.revision = Some(NEW.into());
    }
    obs.pods[0].maintenance = Some(maint.into());
    let d = decide(&settings(), &status(vec![]), &obs, ts(0));
    let Decision::Begin(r) = d else {
        panic!("{d:?}")
    };
    assert_eq!(r.pod, "backend-0");
    assert_eq!(r.relocation.as_deref(), Some(maint));
    assert_eq!(r.from_revision.as_deref(), Some(NEW));
    assert_eq!(r.original_vhosts, 100);
    // before any outdated backend, whatever the users say
    obs.pods[2].revision = Some(OLD.into());
    assert_eq!(
        begun(&decide(&settings(), &status(vec![]), &obs, ts(0))),
        "backend-0"
    );
    // not while it is skipped; then the outdated one
    assert_eq!(
        begun(&decide(
            &with(json!({"skip": ["backend-0"]})),
            &status(vec![]),
            &obs,
            ts(0)
        )),
        "backend-2"
    );
    // a supervised canary waiting for approval holds the upgrade, not the relocation
    obs.pods[2].revision = Some(NEW.into());
    let supervised = with(json!({"canary": {"supervised": true}}));
    assert_eq!(
        begun(&decide(&supervised, &status(vec![]), &obs, ts(0))),
        "backend-0"
    );
    // nothing under maintenance, nothing outdated: done
    obs.pods[0].maintenance = None;
    obs.ring_lock = Some(Ok(RingLock::default()));
    assert_eq!(
        decide(&settings(), &status(vec![]), &obs, ts(0)),
        Decision::Complete
    );
}

#[test]
fn a_relocation_is_begun_only_while_the_pod_read_fresh_is_under_maintenance() {
    let mut r = rec(2, Step::Drain, 0);
    r.relocation = Some("node n1 is cordoned".into());
    r.from_revision = Some(NEW.into());
    let mut there = pod(2, NEW);
    there.maintenance = Some("node n1 is cordoned".into());
    assert_eq!(judge::begin_still(&r, NEW, Some(NEW), Some(&there)), Ok(()));
    // uncordoned meanwhile: nothing to relocate
    let mut back = there.clone();
    back.maintenance = None;
    let e = judge::begin_still(&r, NEW, Some(NEW), Some(&back)).unwrap_err();
    assert!(e.contains("no longer under maintenance"), "{e}");
    // the StatefulSet's revision still has to agree with the cache
    assert!(judge::begin_still(&r, NEW, Some("rev-9"), Some(&there)).is_err());
}

/// A human's `up` of a backend begun down, made before its pod moved and another pod took its
/// IP, is still this backend's: the ring's pass kept the entry's state for it when it first
/// saw it leave, and the record restores it up. What the entry shows since is the other pod's.
#[test]
fn a_humans_up_before_the_pod_moved_is_kept_from_the_rings_pass() {
    let mut obs = world();
    let mut r = rec(2, Step::Drain, 0);
    r.original_up = Some(false);
    let mut st = status(vec![r]);
    // backend-2 moved; backend-1 was recreated at its old IP, which is up now
    let old = obs.pods[2].ip.clone().unwrap();
    obs.pods[2].ip = Some("127.0.0.99".into());
    obs.pods[1].ip = Some(old.clone());
    // the ring's pass saw the entry up when it first saw backend-2 gone from it
    let mut kept = stood(&old, "backend-2", 20);
    kept.taken_by = Some("backend-1".into());
    obs.ring_former = vec![kept.clone()];
    let notes = fold::human_downs(&mut st, &obs);
    assert!(st.backends[0].restores_up(), "{:?}", st.backends[0]);
    assert!(notes.iter().any(|n| n.reason == EventReason::BackendKeptUp));
    // ... but the pass kept it down: a later `up` there is the other pod's, not this one's
    let mut r = rec(2, Step::Drain, 0);
    r.original_up = Some(false);
    let mut st = status(vec![r]);
    kept.up = false;
    obs.ring_former = vec![kept.clone()];
    assert!(fold::human_downs(&mut st, &obs).is_empty());
    assert!(!st.backends[0].restores_up());
    // ... and one the pass knows as another's count is not read at all
    kept.up = true;
    kept.counts_for = Some("backend-1".into());
    obs.ring_former = vec![kept];
    assert!(fold::human_downs(&mut st, &obs).is_empty());
    assert!(!st.backends[0].restores_up());
}

/// A host at an IP this DBU's record put a pod at, which no pod holds now (scaled away before
/// the ring's pass saw it there), serves nobody: it is not counted toward the ring's minimum
/// (found by the model).
#[test]
fn a_host_left_by_a_pod_scaled_away_is_not_counted_as_serving() {
    let s = settings();
    let mut obs = world();
    obs.pods.truncate(1);
    obs.sts.as_mut().unwrap().replicas = 1;
    obs.ring = Some(vec![host(0, 100, true, 0), host(7, 100, true, 0)]);
    // unknown to this DBU, the host at .7 is someone else's: it counts
    assert_eq!(
        begun(&decide(&s, &status(vec![]), &obs, ts(0))),
        "backend-0"
    );
    let mut gone = rec(1, Step::Done, 0);
    gone.pod = "backend-7".into();
    gone.ip = fixtures::backend_ip(7);
    let d = decide(&s, &status(vec![gone]), &obs, ts(0));
    assert_eq!(reason(&d), "InsufficientRingCapacity", "{d:?}");
}
