//! Failures and the world as read: exits, dropped execs, aborts, and what only a fresh read may conclude.

use super::*;

#[tokio::test]
async fn a_non_zero_exit_fails_the_step_with_its_command_and_stderr_and_stops_there() {
    let s = settings();
    let down = s.director.director_down(ip(2));
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)])).once(
        DIRECTOR,
        down.clone(),
        1,
        "",
        "Error: boom\n",
    );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::RingRemove), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed);
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(
        (e.argv.clone(), e.exit_code, e.stderr.as_str()),
        (down, Some(1), "Error: boom")
    );
    assert!(
        dbu_core::conditions::stalled(&out.status),
        "Stalled at once"
    );
    assert!(
        !exec.calls().iter().any(|c| c.contains("flush")),
        "flush never ran"
    );
}

#[tokio::test]
async fn a_dropped_exec_is_transient_and_backs_off() {
    let s = settings();
    // StopLmtp first reads that the ring is synced: nothing is stopped on a split ring
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)]))
        .once(
            "backend-2",
            s.backend.doveconf_base_dir(),
            0,
            "/run/dovecot\n",
            "",
        )
        .once(
            "backend-2",
            s.backend.user_lookup(&s.user),
            0,
            SHIPPED_USER,
            "",
        )
        .add(
            "backend-2",
            s.backend.service_stop_lmtp(),
            Err(ExecError::Transport("connection reset".into())),
            false,
        );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::StopLmtp), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(!rec.failed);
    assert_eq!((rec.step, rec.attempts), (Step::StopLmtp, 1));
    assert!(rec.retry_after.is_some());
    assert_eq!(out.requeue, Some(dbu_core::time::backoff(1)));
    assert_eq!(out.notes[0].reason, "StepRetrying");
}

#[tokio::test]
async fn ring_sync_timed_out_is_transient_and_retried() {
    let s = settings();
    let down = s.director.director_down(ip(2));
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)])).once(
        DIRECTOR,
        down,
        75,
        "",
        "Error: 127.0.0.13: Ring sync timed out\n",
    );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::RingRemove), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(!rec.failed, "not a failure: {rec:?}");
    assert_eq!((rec.step, rec.attempts), (Step::RingRemove, 1));
    assert_eq!(out.notes[0].reason, "StepRetrying");
    assert!(!dbu_core::conditions::stalled(&out.status));
}

#[tokio::test]
async fn abort_at_stop_lmtp_with_a_dead_dovecot_leaves_it_out_without_a_reload_loop() {
    let mut s = settings();
    s.abort = true;
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)])).once(
        "backend-2",
        dovecot::read_master_pid(&s.base_dir),
        1,
        "",
        "cat: /run/dovecot/master.pid: No such file or directory",
    );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::StopLmtp), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed, "left out and named: {rec:?}");
    assert_eq!(out.notes[0].reason, "BackendLeftOut");
    assert!(
        !exec.calls().iter().any(|c| c.contains("reload")),
        "{:?}",
        exec.calls()
    );
}

/// Backend `i` after Replace: a new pod at NEW with a new IP.
fn upgraded(i: u32) -> dbu_core::machine::PodView {
    dbu_core::machine::PodView {
        ip: Some(fixtures::backend_ip(10 + i)),
        ..fixtures::pod(i, NEW)
    }
}

/// Three backends upgraded to NEW (records Done at new IPs), the ring at their new IPs.
fn finished() -> (DovecotBackendUpgradeStatus, String) {
    let recs = (0..3)
        .map(|i| dbu_core::api::BackendStatus {
            new_ip: Some(fixtures::backend_ip(10 + i)),
            ..fixtures::record(i, Step::Done, ts(0), OLD, 100)
        })
        .collect();
    let mut st = fixtures::status(NEW, recs);
    st.progress = Some("3/3".into());
    (st, ring_json(&[(10, 100, 4), (11, 100, 5), (12, 100, 6)]))
}

#[tokio::test]
async fn a_pod_cache_that_has_not_caught_up_never_stalls_a_finished_rollout() {
    // after an API outage the pod cache still shows every backend as it was before the rollout
    // (old revision, old IP): the newest outdated one is not in the ring at that IP. The
    // API server shows all three upgraded: the rollout is complete, not stalled.
    let s = settings();
    let (st, ring) = finished();
    let exec = ring_read(&s, &ring);
    let mut cluster = fake(fixtures::world(3, OLD, NEW));
    cluster.fresh_world = Some(Observed {
        pods: (0..3).map(upgraded).collect(),
        ..fixtures::world(3, OLD, NEW)
    });
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    assert_eq!(out.decision, Decision::Complete);
    assert!(!stalled(&out.status), "{:?}", out.status.conditions);
    assert_eq!(*cluster.fresh_reads.lock().unwrap(), 1);
    assert_eq!(out.status.progress.as_deref(), Some("3/3"));
    assert_eq!(out.status.backends.len(), 3, "finished records kept");
    assert_eq!(
        exec.calls().len(),
        2,
        "the ring and its sync state are read once: {:?}",
        exec.calls()
    );
    // at rest the completion stands from the caches: no read of the API server
    cluster.obs = cluster.fresh_world.clone().unwrap();
    let exec = Scripted::default();
    let again = once(&s, out.status, &exec, &cluster, &clock_at(5, 0)).await;
    assert_eq!(again.decision, Decision::Complete);
    assert_eq!(
        *cluster.fresh_reads.lock().unwrap(),
        1,
        "no fresh read at rest"
    );
}

#[tokio::test]
async fn a_statefulset_cache_that_lags_never_retargets_the_rollout() {
    // the cached StatefulSet shows the revision from before the rollout: taken as the target it
    // would drop the finished records and count progress from 0
    let s = settings();
    let (st, ring) = finished();
    let exec = Scripted::default().once(DIRECTOR, s.director.director_status(), 0, &ring, "");
    let world = Observed {
        pods: (0..3).map(upgraded).collect(),
        ..fixtures::world(3, OLD, NEW)
    };
    let mut cluster = fake(Observed {
        sts: Some(fixtures::sts(OLD, 3)),
        ..world.clone()
    });
    cluster.fresh_world = Some(world);
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    assert_eq!(*cluster.fresh_reads.lock().unwrap(), 1);
    assert_eq!(out.status.target_revision.as_deref(), Some(NEW));
    assert_eq!(out.status.backends.len(), 3);
    assert_eq!(out.status.progress.as_deref(), Some("3/3"));
    assert_eq!(out.decision, Decision::Complete);
}

#[tokio::test]
async fn a_stall_that_a_fresh_read_confirms_stands_and_names_the_backend() {
    // the backends really are outside the ring (it names another host): the API server shows
    // what the cache shows
    let s = settings();
    let ring = ring_json(&[(5, 100, 3)]);
    let exec = ring_read(&s, &ring);
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(
        &s,
        fixtures::status(NEW, vec![]),
        &exec,
        &cluster,
        &clock_at(0, 0),
    )
    .await;
    let Decision::Stall { reason, message } = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(*reason, "BackendNotInRing");
    assert!(message.contains("backend-2"), "{message}");
    assert!(stalled(&out.status));
    assert_eq!(
        *cluster.fresh_reads.lock().unwrap(),
        1,
        "confirmed by one fresh read"
    );
    // once written, the stall stands from the caches: a stalled rollout woken by every pod
    // event makes no request
    let exec2 = ring_read(&s, &ring);
    let again = once(&s, out.status.clone(), &exec2, &cluster, &clock_at(5, 0)).await;
    assert!(stalled(&again.status));
    assert_eq!(
        *cluster.fresh_reads.lock().unwrap(),
        1,
        "no second fresh read"
    );
    assert_eq!(
        exec.calls().len(),
        2,
        "the ring and its sync state, not again after the fresh read: {:?}",
        exec.calls()
    );
}

#[tokio::test]
async fn a_backend_missing_from_a_ring_that_is_not_synced_is_a_wait() {
    // a director that has not learnt the host yet: wait for the ring to agree, say why
    let s = settings();
    let syncing = SYNCED.replace("ring synced", "ring syncing - last sync 3 secs ago");
    let exec = Scripted::default()
        .once(
            DIRECTOR,
            s.director.director_status(),
            0,
            &ring_json(&[(5, 100, 3)]),
            "",
        )
        .once(DIRECTOR, s.director.director_ring_status(), 0, &syncing, "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(
        &s,
        fixtures::status(NEW, vec![]),
        &exec,
        &cluster,
        &clock_at(0, 0),
    )
    .await;
    let Decision::Wait {
        reason, message, ..
    } = &out.decision
    else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(*reason, "RingNotSynced");
    assert!(message.contains("backend-2"), "{message}");
    assert!(!stalled(&out.status));
    assert_eq!(*cluster.fresh_reads.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_failed_step_stalls_without_a_fresh_read() {
    // a recorded failure is the operator's own knowledge, newer than any cache
    let s = settings();
    let mut st = at(Step::Verify);
    st.backends[0].failed = true;
    st.backends[0].last_error = Some(dbu_core::api::StepError {
        step: Step::Verify,
        argv: vec!["doveadm".into(), "mailbox".into(), "list".into()],
        exit_code: Some(75),
        stderr: "Error: userdb lookup failed".into(),
        reason: None,
    });
    let ring = ring_json_down(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)], &[2]);
    let exec = Scripted::default().once(DIRECTOR, s.director.director_status(), 0, &ring, "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    assert!(stalled(&out.status), "{:?}", out.decision);
    assert_eq!(*cluster.fresh_reads.lock().unwrap(), 0);
}
