//! What status says: progress, conditions, records closed or kept, retries, aborts, and what only a fresh read may conclude.

use super::*;
use pretty_assertions::assert_eq;

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
fn a_down_a_human_made_before_deletion_is_named_as_theirs() {
    let before = rec(0, Step::WaitSessions, 0);
    let mut folded = before.clone();
    folded.original_up = Some(false);
    let plain = Undone::Restored { human_down: false };
    let kept = Undone::Restored { human_down: true };
    let t = [
        // the ring showed the human's down at deletion: the record now restores it down
        ((&before, &folded), kept.clone()),
        // nothing seen, or down before the rollout as recorded at Begin
        ((&before, &before), plain.clone()),
        ((&folded, &folded), plain.clone()),
    ];
    for ((b, f), want) in t {
        assert_eq!(kept_by_hand(b, f, plain.clone()), want);
    }
    let left = Undone::LeftOut("left".into());
    assert_eq!(kept_by_hand(&before, &folded, left.clone()), left);
    let note = undone_note(&folded, &kept).expect("a note");
    assert!(
        note.message.contains("a human took it down"),
        "{}",
        note.message
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
fn a_pause_does_not_count_against_the_drain_ceiling_or_the_step_timeouts() {
    let s = with(json!({"drain": {"strategy": "Wait"}}));
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
fn a_pod_is_removed_only_when_the_ordinal_range_no_longer_holds_it() {
    let s = with(json!({}));
    // ordinals from 10: backend-10, backend-11, backend-12; backend-11 is being replaced
    let at = |pod: &str, step| {
        let mut r = rec(1, step, 0);
        r.pod = pod.into();
        r
    };
    let obs_with = |replicas, start, gone: &str| {
        let mut obs = drained(2);
        let sts = obs.sts.as_mut().unwrap();
        (sts.replicas, sts.ordinals_start) = (replicas, start);
        obs.pods = (10..13)
            .map(|i| format!("backend-{i}"))
            .filter(|p| p != gone)
            .map(|name| PodView {
                name,
                ..obs.pods[0].clone()
            })
            .collect();
        obs
    };
    for (replicas, start, pod, removed) in [
        (3, 10, "backend-11", false), // deleted by Replace: it comes back
        (3, 10, "backend-12", false),
        (2, 10, "backend-12", true), // scaled down from the top
        (2, 10, "backend-11", false),
        (2, 11, "backend-10", true), // the range moved up
        (3, 0, "backend-11", true),  // ordinals from 0 again: 0 to 2
    ] {
        let mut st = status(vec![at(pod, Step::Replace)]);
        let notes = close_removed(&s, &mut st, &obs_with(replicas, start, pod), ts(5));
        assert_eq!(
            st.backends[0].removed, removed,
            "{replicas} from {start}: {pod}"
        );
        assert_eq!(notes.len(), usize::from(removed));
        if removed {
            assert!(
                notes[0]
                    .message
                    .contains(&format!("ordinals {start} to {}", start + replicas - 1)),
                "{}",
                notes[0].message
            );
        }
    }
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
fn waiting_for_a_slot_and_backoff_are_not_counted_as_work() {
    // begun at 0, it waited RingBusy through another DBU's rollout for an hour
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    st.ring_held.clear();
    let claim = Decision::Claim {
        pods: vec!["backend-2".into()],
    };
    record(&mut st, &claim, Acted::Claimed(Ok(())), ts(3600));
    assert_eq!(
        st.backends[0].step_started,
        Time(ts(3600)),
        "its clock starts at the grant"
    );
    // a claim again (already held) does not move it
    record(&mut st, &claim, Acted::Claimed(Ok(())), ts(3605));
    assert_eq!(st.backends[0].step_started, Time(ts(3600)));
    let r = &mut st.backends[0];
    apply_result(r, &StepResult::advanced(None), ts(3610));
    // WaitSessions: a transient error, a 2-minute backoff... then done
    r.step_started = Time(ts(3610));
    let transient = StepResult::Transient {
        error: crate::machine::judge::step_error(Step::WaitSessions, &[], None, "timeout"),
    };
    apply_result(r, &transient, ts(3620));
    let backoff = r.backoff_seconds.unwrap();
    apply_result(
        r,
        &StepResult::advanced(None),
        ts(3620 + backoff as i64 + 5),
    );
    assert_eq!(
        r.active_seconds,
        Some(10 + 15),
        "10 s of Drain after the grant, 15 s of WaitSessions without its {backoff} s backoff"
    );
    assert_eq!(r.backoff_seconds, None, "counted per step");
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
    // a failed soak drained the backend again: the retry verifies it again, restores it, and
    // soaks it anew (never on from a soak that would find it out of the ring)
    let mut k = rec(2, Step::Soak, 0);
    (k.failed, k.failing) = (true, Some("no user within 3s".into()));
    let mut st = status(vec![k]);
    apply_retry(&mut st, Some("4"), &obs, ts(8));
    let r = &st.backends[0];
    assert_eq!(
        (r.step, r.failed, r.failing.as_deref()),
        (Step::Verify, false, None)
    );
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
        (stall(R::RingConflict), &cached, &rollout, false),
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
        (stall(R::BaseDirMismatch), &cached, &rollout, false),
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
    assert_eq!(R::ALL.len(), 15);
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
fn a_count_set_by_hand_on_a_backend_in_flight_is_the_count_it_goes_back_at() {
    use crate::machine::fold::keep_human_count;
    // (step, count the commanded director shows, failed) -> the count recorded after the fold
    let t = [
        (Step::Drain, 100, false, 100),
        (Step::Drain, 40, false, 40),
        // what every director shows after the whole ring restarted: not a human's
        (
            Step::WaitSessions,
            crate::dovecot::DEFAULT_VHOSTS,
            false,
            100,
        ),
        (Step::WaitSessions, 0, false, 100),
        (Step::WaitSessions, 40, false, 40),
        (Step::Reset, 80, false, 80),
        (Step::RingRestore, 120, false, 120),
        // serving again: the count is the human's to set, nothing restores it
        (Step::Soak, 40, false, 100),
        // never put back: nothing to keep
        (Step::WaitSessions, 40, true, 100),
    ];
    for (step, shown, failed, want) in t {
        let mut r = rec(0, step, 0);
        r.original_vhosts = 100;
        r.failed = failed;
        let view = vec![crate::fixtures::host(0, shown, true, 0)];
        let note = keep_human_count(&mut r, &view, true);
        assert_eq!(
            r.original_vhosts, want,
            "{step} shown {shown} failed {failed}"
        );
        assert_eq!(
            note.is_some(),
            want != 100,
            "{step} shown {shown}: an Event exactly when the count changes"
        );
    }
}

#[test]
fn a_count_set_by_hand_on_the_new_ip_of_a_rejoin_is_the_count_it_goes_back_at() {
    use crate::machine::fold::keep_human_count;
    // (old entry's count, new entry's count, new entry read) -> the count recorded
    let t = [
        // the restore added the new host at the recorded count: nothing a human did
        (Some(0), Some(100), true, 100),
        // a human set the new host after the restore added it, then the pass was cut short
        (Some(0), Some(40), true, 40),
        (None, Some(40), true, 40),
        // the new entry stands for another pod: only the old entry is this backend's
        (Some(0), Some(40), false, 100),
        (Some(60), Some(40), false, 60),
        // not added yet: the old entry, as before
        (Some(60), None, true, 60),
    ];
    for (old, new, new_entry, want) in t {
        let mut r = rec(0, Step::RingRestore, 0);
        r.original_vhosts = 100;
        r.new_ip = Some(crate::fixtures::backend_ip(5));
        let mut view = Vec::new();
        view.extend(old.map(|v| crate::fixtures::host(0, v, true, 0)));
        view.extend(new.map(|v| crate::fixtures::host(5, v, true, 0)));
        keep_human_count(&mut r, &view, new_entry);
        assert_eq!(
            r.original_vhosts, want,
            "old {old:?} new {new:?} read {new_entry}"
        );
    }
}

#[test]
fn a_count_by_hand_on_a_rejoins_new_entry_counts_while_another_pod_has_its_old_ip() {
    use crate::machine::fold::human_counts;
    // backend-0 restored at its new IP (status write lost); backend-1 has its old IP now
    // (new entry's count) -> the count recorded
    // (with no pod at the old IP, the old entry is read: a human may have set it before the
    // pod moved, with no pass in between)
    for (new, want, other_there) in [
        (Some(40), 40, true),
        (Some(100), 100, true),
        (None, 100, true),
        (Some(40), 40, false),
        (None, 60, false),
    ] {
        let mut r = rec(0, Step::RingRestore, 0);
        r.original_vhosts = 100;
        r.new_ip = Some(crate::fixtures::backend_ip(5));
        let mut obs = world();
        obs.pods[0].ip = r.new_ip.clone();
        if other_there {
            obs.pods[1].ip = Some(r.ip.clone());
        }
        // the old entry is backend-1's now, whatever its count
        let mut ring = vec![crate::fixtures::host(0, 60, true, 0)];
        ring.extend(new.map(|v| crate::fixtures::host(5, v, true, 0)));
        obs.ring = Some(ring);
        let mut st = status(vec![r]);
        human_counts(&mut st, &obs);
        assert_eq!(
            st.backends[0].original_vhosts, want,
            "new {new:?} other there {other_there}"
        );
    }
}

#[test]
fn an_adopted_record_takes_its_count_from_the_rings_copy_until_it_is_claimed() {
    use crate::machine::fold::human_counts;
    // the ring's pass folded a human's 40 into its copy and zeroed the host: the adopted record
    // takes 40 (the ring read or not); claimed, it reads the ring itself again
    for (copy, ring_read, claimed, want) in [
        (40, true, false, 40),
        (40, false, false, 40),
        (50, true, false, 50),
        (40, true, true, 50),
    ] {
        let mut r = rec(1, Step::RingRemove, 0);
        r.original_vhosts = 50;
        let mut left = r.clone();
        left.original_vhosts = copy;
        let mut obs = world();
        obs.ring = ring_read.then(|| vec![crate::fixtures::host(1, 0, false, 0)]);
        obs.ring_lock = Some(Ok(RingLock {
            version: Some("7".into()),
            holders: vec![RingHolder {
                dbu: if claimed { "mail/roll" } else { "mail/old" }.into(),
                pod: r.pod.clone(),
                ip: r.ip.clone(),
                max_unavailable: 1,
                left_out: (!claimed).then(|| {
                    Box::new(crate::api::LeftOut {
                        stateful_set: "backend".into(),
                        record: left,
                    })
                }),
                reason: None,
            }],
        }));
        let mut st = status(vec![r]);
        let notes = human_counts(&mut st, &obs);
        assert_eq!(
            st.backends[0].original_vhosts, want,
            "copy {copy} read {ring_read} claimed {claimed}"
        );
        assert_eq!(notes.len(), usize::from(want != 50));
    }
}

#[test]
fn a_restore_at_another_pods_entry_writes_what_it_saw_there_first_and_reads_only_a_different_count()
{
    use crate::machine::fold::{keep_human_count, new_entry_read};
    use crate::machine::judge::restore_must_see;
    let new_ip = crate::fixtures::backend_ip(5);
    let theirs = vec![stood(&new_ip, "backend-9", 60)];
    // (the ring's record of the new entry, what the restore saw, count shown now)
    //   -> (must see first, new entry read, count recorded)
    let t = [
        // another pod's entry, the restore has not looked: it writes what it sees first
        (true, None, 60, (true, false, 100)),
        // it saw 60 there before acting: 60 is the other pod's left over, 40 a human's
        (true, Some(60), 60, (false, true, 100)),
        (true, Some(60), 40, (false, true, 40)),
        // the restore's own count, 0 and the default are never a human's
        (true, Some(60), 100, (false, true, 100)),
        (true, Some(0), 0, (false, true, 100)),
        // an entry that stands for nobody else: read as before, nothing to write first
        (false, None, 40, (false, true, 40)),
    ];
    for (others, seen, shown, (must, read, want)) in t {
        let mut r = rec(0, Step::RingRestore, 0);
        r.original_vhosts = 100;
        r.new_ip = Some(new_ip.clone());
        r.restore_seen = seen;
        let former = if others { theirs.clone() } else { Vec::new() };
        let case = format!("others {others} seen {seen:?} shown {shown}");
        assert_eq!(restore_must_see(&former, &r, &new_ip), must, "{case}");
        assert_eq!(new_entry_read(&former, &r), read, "{case}");
        let view = vec![
            crate::fixtures::host(0, 0, false, 0),
            crate::fixtures::host(5, shown, true, 0),
        ];
        keep_human_count(&mut r, &view, read);
        assert_eq!(r.original_vhosts, want, "{case}");
    }
    // only RingRestore writes it, and only at a new IP
    let mut r = rec(0, Step::Verify, 0);
    r.new_ip = Some(new_ip.clone());
    assert!(!restore_must_see(&theirs, &r, &new_ip));
    let r = rec(0, Step::RingRestore, 0);
    assert!(!restore_must_see(&theirs, &r, &r.ip.clone()));
}

#[test]
fn a_failed_relocation_says_what_the_drain_waits_for_and_how_to_let_it_go_on() {
    let mut r = rec(1, Step::Verify, 0);
    r.last_error = Some(crate::api::StepError {
        step: Step::Verify,
        argv: vec!["doveadm".into(), "mailbox".into(), "status".into()],
        exit_code: Some(75),
        stderr: "Error: user not found".into(),
        reason: None,
    });
    let rollout = failure_message(&r);
    assert!(
        rollout.ends_with("it stays out of the director ring"),
        "{rollout}"
    );
    assert!(!rollout.contains("node maintenance"), "{rollout}");
    r.relocation = Some("node n1 is cordoned".into());
    let relocation = failure_message(&r);
    // the same story first (backend, step, command, exit code, stderr), then what to do
    assert!(relocation.starts_with(&rollout), "{relocation}");
    for part in [
        "relocating for node maintenance (node n1 is cordoned)",
        "the node's drain waits",
        "mailops.io/retry",
        "uncordon the node",
    ] {
        assert!(relocation.contains(part), "{part} in {relocation}");
    }
    match failed_stall(&r) {
        Decision::Stall { reason, message } => {
            assert_eq!(reason, crate::reason::StallReason::BackendFailed);
            assert_eq!(message, relocation);
        }
        d => panic!("{d:?}"),
    }
}

/// A record that enters Verify while a probe is on carries its probe's token from that write
/// (written before the probe is delivered), not from a write of Verify's own; one already
/// carrying a token keeps it (a retry expunges that one first), and without a probe none is
/// made.
#[test]
fn a_record_entering_verify_carries_its_probes_token_from_that_write() {
    // the LMTP probe is on by default
    let probing = settings();
    let quiet = with(json!({"verify": {"lmtpProbe": {"enabled": false}}}));
    assert!(quiet.imap_probe.is_none() && quiet.lmtp_probe.is_none());
    let at = ts(30);
    let mut st = status(vec![rec(0, Step::Verify, 0), rec(1, Step::Replace, 0)]);
    crate::machine::fold::intend_probe(&quiet, &mut st, at);
    assert!(st.backends.iter().all(|r| r.probe_token.is_none()));
    crate::machine::fold::intend_probe(&probing, &mut st, at);
    let token = crate::probe::token("backend-0", at.as_millisecond());
    assert_eq!(st.backends[0].probe_token.as_deref(), Some(token.as_str()));
    // not at Verify yet: nothing to deliver
    assert_eq!(st.backends[1].probe_token, None);
    // later passes keep the token the probe may have been delivered with
    crate::machine::fold::intend_probe(&probing, &mut st, ts(60));
    assert_eq!(st.backends[0].probe_token.as_deref(), Some(token.as_str()));
}

/// What a reconcile takes into the same pass: after a checked Begin (not a rejoin's) or a
/// written claim or release, more bookkeeping, a wait or the completion; after a backend's
/// soak ended it, only a wait (a release would let its slot go before the status says it is
/// done); never a step, a re-assert, an undo or an adoption, and nothing after an action that
/// failed or a step that leads to another step.
#[test]
fn a_pass_chains_only_bookkeeping_after_a_begin_or_a_ring_write() {
    use crate::machine::{chain_from, chain_into};
    let begin = Decision::Begin(Box::new(rec(0, Step::Drain, 0)));
    let mut back = rec(1, Step::Verify, 0);
    back.rejoin = true;
    let rejoin = Decision::Begin(Box::new(back));
    let claim = Decision::Claim {
        pods: vec!["backend-0".into()],
    };
    let ok = || Ok(());
    let failed = || Err("conflict".to_string());
    let advanced = || StepResult::Advanced {
        message: None,
        new_ip: None,
        pod_uid: None,
        layout: None,
    };
    let from: [(&str, &Decision, Acted, bool); 9] = [
        ("a checked Begin", &begin, Acted::Checked(ok()), true),
        (
            "a Begin the API server refused",
            &begin,
            Acted::Checked(failed()),
            false,
        ),
        ("a rejoin's Begin", &rejoin, Acted::Checked(ok()), false),
        ("a written claim", &claim, Acted::Claimed(ok()), true),
        (
            "a claim that conflicted",
            &claim,
            Acted::Claimed(failed()),
            false,
        ),
        ("a step", &run(0, Step::Drain), Acted::Nothing, false),
        (
            "a step that led to the next",
            &run(0, Step::RingRestore),
            Acted::Ran(advanced()),
            false,
        ),
        (
            "the soak that ended a backend",
            &run(0, Step::Soak),
            Acted::Ran(advanced()),
            true,
        ),
        (
            "a soak still waiting",
            &run(0, Step::Soak),
            Acted::Ran(StepResult::Waiting {
                requeue: Duration::from_secs(5),
                message: "soaking".into(),
            }),
            false,
        ),
    ];
    for (case, d, acted, want) in from {
        assert_eq!(chain_from(d, &acted), want, "{case}");
    }
    let wait = Decision::wait(WaitReason::RingBusy, "busy", Duration::from_secs(10));
    let reassert = Decision::Reassert {
        pod: "backend-0".into(),
        commands: Vec::new(),
        director: None,
    };
    let into: [(&str, &Decision, bool); 8] = [
        ("a Begin", &begin, true),
        ("a rejoin's Begin", &rejoin, false),
        ("a claim", &claim, true),
        ("a wait", &wait, true),
        ("the completion", &Decision::Complete, true),
        ("a step", &run(0, Step::Drain), false),
        ("a re-assert", &reassert, false),
        (
            "an undo",
            &Decision::Undo {
                pod: "backend-0".into(),
                action: crate::machine::Cleanup::Nothing,
            },
            false,
        ),
    ];
    for (case, d, want) in into {
        assert_eq!(chain_into(&claim, d), want, "{case}");
    }
    // after a backend's soak: only a wait (the slot kept for the ring's pass)
    let soaked = run(0, Step::Soak);
    for (case, d, want) in [
        ("a wait", &wait, true),
        ("a release", &claim, false),
        ("a Begin", &begin, false),
        ("the completion", &Decision::Complete, false),
        ("a step", &run(1, Step::Drain), false),
    ] {
        assert_eq!(chain_into(&soaked, d), want, "after the soak: {case}");
    }
}
