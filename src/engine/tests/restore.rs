//! RingRestore and Soak: back in the ring at the pod's IP, and the soak that drains a silent backend again.

use super::*;

#[tokio::test]
async fn ring_restore_with_a_new_ip_adds_the_new_host_and_removes_the_old_first() {
    let s = settings();
    let (d, new) = (
        &s.director,
        "127.0.0.99".parse::<std::net::IpAddr>().unwrap(),
    );
    let exec = Scripted::default()
        .once(
            DIRECTOR,
            d.director_status(),
            0,
            &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)]),
            "",
        )
        .once(DIRECTOR, d.director_add(new, 20), 0, "", "")
        .once(DIRECTOR, d.director_remove(ip(2)), 68, "", "not found")
        .once(DIRECTOR, d.director_update(new, 20), 0, "", "")
        .once(DIRECTOR, d.director_up(new), 0, "", "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    world.pods[2].ip = Some(new.to_string());
    let cluster = fake(world);
    let out = once(&s, at(Step::RingRestore), &exec, &cluster, &clock_at(0, 0)).await;
    let calls = exec.calls();
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(
        calls[1].contains("add") && calls[2].contains("remove"),
        "{calls:?}"
    );
    let rec = &out.status.backends[0];
    assert_eq!(
        (rec.step, rec.new_ip.as_deref()),
        (Step::Soak, Some("127.0.0.99"))
    );
}

#[tokio::test]
async fn a_soak_without_traffic_drains_the_backend_again_and_fails_it() {
    let s = settings();
    let d = &s.director;
    let ring = ring_json(&[(0, 100, 3), (1, 50, 1), (2, 20, 0)]);
    let not_mapped =
        r#"[{"status":"n/a","expires":"-1","hashed":"127.0.0.11","initial-config":"127.0.0.11"}]"#;
    let exec = ring_read(&s, &ring)
        .once(DIRECTOR, d.director_status(), 0, &ring, "")
        .once(DIRECTOR, d.director_user_status(&s.user), 0, not_mapped, "")
        .once("backend-2", s.backend.who(), 0, "[]", "")
        // the next pass reads the ring first, as every pass does
        .once(DIRECTOR, d.director_status(), 0, &ring, "")
        .once(DIRECTOR, d.director_update(ip(2), 0), 0, "", "")
        .once(DIRECTOR, d.director_down(ip(2)), 0, "", "")
        .once(DIRECTOR, d.director_flush(ip(2)), 0, "", "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    // a minute and a half after RingRestore, the director still maps nobody to it: why is
    // written first, nothing drained yet
    let out = once(&s, at(Step::Soak), &exec, &cluster, &clock_at(90, 0)).await;
    let rec = &out.status.backends[0];
    assert!(
        (rec.step, rec.failed) == (Step::Soak, false)
            && rec
                .failing
                .as_deref()
                .is_some_and(|w| w.contains("no user")),
        "{rec:?}"
    );
    assert_eq!(exec.calls().len(), 4, "reads only: {:?}", exec.calls());
    assert_eq!(out.requeue, Some(std::time::Duration::ZERO));
    // the next pass drains it again and fails it
    let out = once(&s, out.status, &exec, &cluster, &clock_at(90, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Soak, true), "{rec:?}");
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.reason.as_deref(), Some("SoakFailed"));
    assert!(
        e.stderr.contains("no user") && e.stderr.contains("drained again"),
        "{e:?}"
    );
    let calls = exec.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.contains("update") && c.contains(" 0"))
            && calls.iter().any(|c| c.contains("flush")),
        "{calls:?}"
    );
    let stalled = out
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "SoakFailed")
    );
}

#[tokio::test]
async fn a_soak_passes_once_the_backend_serves_sessions() {
    let s = settings();
    let d = &s.director;
    let ring = ring_json(&[(0, 100, 3), (1, 50, 1), (2, 20, 2)]);
    let not_mapped =
        r#"[{"status":"n/a","expires":"-1","hashed":"127.0.0.11","initial-config":"127.0.0.11"}]"#;
    let two = r#"[{"username":"u1","service":"imap","pid":"41","ip":"10.0.0.1"},{"username":"u2","service":"imap","pid":"42","ip":"10.0.0.2"}]"#;
    let exec = ring_read(&s, &ring)
        .once(DIRECTOR, d.director_status(), 0, &ring, "")
        .once(DIRECTOR, d.director_user_status(&s.user), 0, not_mapped, "")
        .once("backend-2", s.backend.who(), 0, two, "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    let out = once(&s, at(Step::Soak), &exec, &cluster, &clock_at(5, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Done, false), "{rec:?}");
    assert!(
        out.notes
            .iter()
            .any(|n| n.message.contains("serves 2 login sessions")),
        "{:?}",
        out.notes
    );
}
