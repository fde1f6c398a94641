//! Before a backend starts: the ring, its sync state on every director, the candidate read fresh.

use super::*;

#[tokio::test]
async fn begin_reads_the_ring_and_its_sync_state_then_writes_the_intent_only() {
    let s = settings();
    let d = &s.director;
    let exec = Scripted::default()
        .once(
            DIRECTOR,
            d.director_status(),
            0,
            &ring_json(&[(0, 100, 3), (1, 50, 2), (2, 20, 0)]),
            "",
        )
        .once(DIRECTOR, d.director_ring_status(), 0, SYNCED, "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(
        &s,
        DovecotBackendUpgradeStatus::default(),
        &exec,
        &cluster,
        &clock_at(0, 0),
    )
    .await;
    // the Begin, then its claim of the ring's slot in the same pass (one status write); the
    // drain waits for the next pass, which starts from that write
    let decisions: Vec<&Decision> = out.decisions().collect();
    let [Decision::Begin(rec), Decision::Claim { pods }] = decisions.as_slice() else {
        panic!("{decisions:?}")
    };
    assert_eq!((rec.pod.as_str(), rec.original_vhosts), ("backend-2", 20));
    assert_eq!(pods, &["backend-2".to_string()]);
    assert_eq!(out.status.backends[0].step, Step::Drain);
    assert_eq!(out.status.ring_held, ["backend-2"]);
    assert_eq!(
        exec.calls().len(),
        2,
        "two reads, no change: {:?}",
        exec.calls()
    );
    assert_eq!(out.notes[0].reason, "BackendStarted");
    assert_eq!(out.requeue, Some(Duration::ZERO));
}

#[tokio::test]
async fn the_ring_must_be_synced_on_every_director_before_a_backend_starts() {
    let s = settings();
    let d = &s.director;
    let syncing = SYNCED.replace("ring synced", "ring syncing - last sync 3 secs ago");
    let exec = Scripted::default()
        .once(
            DIRECTOR,
            d.director_status(),
            0,
            &ring_json(&[(0, 100, 3), (1, 50, 2), (2, 20, 0)]),
            "",
        )
        .once(DIRECTOR, d.director_ring_status(), 0, SYNCED, "")
        .once("director-1", d.director_ring_status(), 0, &syncing, "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.directors = vec![(DIRECTOR.into(), None), ("director-1".into(), None)];
    let cluster = fake(world);
    let out = once(
        &s,
        DovecotBackendUpgradeStatus::default(),
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
    assert!(message.contains("director-1"), "{message}");
    assert!(out.status.backends.is_empty(), "nothing started");
    assert_eq!(exec.calls().len(), 3, "{:?}", exec.calls());
}

#[tokio::test]
async fn a_second_director_that_missed_update_zero_gets_it_before_anything_is_stopped() {
    let s = settings();
    let d = &s.director;
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)]))
        .once("director-1", d.director_ring_status(), 0, SYNCED, "")
        .once(
            "director-1",
            d.director_status(),
            0,
            &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 20, 0)]),
            "",
        )
        .once("director-1", d.director_update(ip(2), 0), 0, "", "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.directors = vec![(DIRECTOR.into(), None), ("director-1".into(), None)];
    let cluster = fake(world);
    let out = once(&s, at(Step::StopLmtp), &exec, &cluster, &clock_at(0, 0)).await;
    assert!(
        matches!(&out.decision, Decision::Reassert { director: Some(d), .. } if d == "director-1"),
        "{:?}",
        out.decision
    );
    assert_eq!(
        out.status.backends[0].step,
        Step::StopLmtp,
        "nothing stopped yet"
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.reason == "RingReasserted" && n.message.contains("on director-1")),
        "{:?}",
        out.notes
    );
    assert!(!exec.calls().iter().any(|c| c.contains("service stop")));
}

#[tokio::test]
async fn begin_writes_nothing_when_the_api_server_shows_the_pod_already_upgraded() {
    let s = settings();
    let d = &s.director;
    let ring = ring_json(&[(0, 100, 0), (1, 50, 0), (2, 20, 0)]);
    let exec = Scripted::default()
        .once(DIRECTOR, d.director_status(), 0, &ring, "")
        .once(DIRECTOR, d.director_ring_status(), 0, SYNCED, "");
    // the pod cache lags: it still shows every pod at OLD, but backend-2 already runs NEW
    let mut cluster = fake(fixtures::world(3, OLD, NEW));
    let mut now = cluster.obs.pods.clone();
    now[2] = fixtures::pod(2, NEW);
    cluster.fresh_pods = Some(now);
    let out = once(
        &s,
        fixtures::status(NEW, vec![]),
        &exec,
        &cluster,
        &clock_at(0, 0),
    )
    .await;
    assert!(
        matches!(out.decision, Decision::Begin(_)),
        "{:?}",
        out.decision
    );
    assert!(
        out.status.backends.is_empty(),
        "no record: {:?}",
        out.status.backends
    );
    assert_eq!(out.requeue, Some(Duration::from_secs(2)));
}
