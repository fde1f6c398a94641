//! Replace: the stopped pod deleted by its UID, never while the cached StatefulSet lags.

use super::*;

#[tokio::test]
async fn replace_deletes_the_stopped_pod_through_the_cluster() {
    let s = settings();
    let exec = Scripted::default().once(
        DIRECTOR,
        s.director.director_status(),
        0,
        &ring_json_down(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)], &[2]),
        "",
    );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::Replace), &exec, &cluster, &clock_at(0, 0)).await;
    assert_eq!(
        *cluster.deleted.lock().unwrap(),
        [format!("backend-2 uid-2-{OLD}")]
    );
    assert!(matches!(
        out.decision,
        Decision::Run {
            step: Step::Replace,
            ..
        }
    ));
    assert_eq!(
        out.status.backends[0].step,
        Step::Replace,
        "waits for the new pod"
    );
}

#[tokio::test]
async fn replace_deletes_nothing_while_the_cached_statefulset_lags_behind_the_api_server() {
    let s = settings();
    let ring = ring_json_down(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)], &[2]);
    let exec = Scripted::default().once(DIRECTOR, s.director.director_status(), 0, &ring, "");
    // the cache says NEW is the target and backend-2 (at OLD) outdated; the API server has moved
    // on to a newer revision whose pod backend-2 may already be
    let mut cluster = fake(fixtures::world(3, OLD, NEW));
    cluster.fresh = Some(Some("rev-newer".into()));
    let out = once(&s, at(Step::Replace), &exec, &cluster, &clock_at(0, 0)).await;
    assert!(cluster.deleted.lock().unwrap().is_empty());
    let rec = &out.status.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Replace, false));
    assert!(
        rec.message
            .as_deref()
            .unwrap_or("")
            .contains("waiting for the cache"),
        "{rec:?}"
    );
}
