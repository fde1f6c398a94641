//! Drain and WaitSessions: update 0, who, and the Move drain's polls.

use super::*;

#[tokio::test]
async fn drain_runs_update_zero_on_the_director_and_advances() {
    let s = settings();
    let exec = ring_read(&s, &ring_json(&[(0, 100, 3), (1, 50, 2), (2, 20, 0)])).once(
        DIRECTOR,
        s.director.director_update(ip(2), 0),
        0,
        "",
        "",
    );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::Drain), &exec, &cluster, &clock_at(10, 0)).await;
    assert_eq!(out.status.backends[0].step, Step::WaitSessions);
    assert_eq!(out.finished, Some((Step::Drain, Duration::from_secs(10))));
    let reasons: Vec<&str> = out.notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, ["StepSucceeded", "StepStarted"]);
    assert_eq!(exec.calls().len(), 2);
}

#[tokio::test]
async fn wait_sessions_advances_when_who_fails_because_dovecot_died() {
    let s = settings();
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)]))
        .once(
            "backend-2",
            s.backend.who(),
            75,
            "",
            "connect(/run/dovecot/anvil) failed",
        )
        .once(
            "backend-2",
            dovecot::read_master_pid(&s.base_dir),
            1,
            "",
            "No such file",
        );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = wait_sessions_at(&s, &exec, &cluster, 0).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::StopLmtp);
    assert!(rec.message.as_deref().unwrap().contains("not running"));
}

const WHO_MIXED: &str = include_str!("../../../core/testdata/drain/who-mixed.json");

const PS_MIXED: &str = include_str!("../../../core/testdata/drain/process-status-mixed.json");

const TITLES_MIXED: &str = include_str!("../../../core/testdata/drain/titles-mixed.txt");

const HIBERNATE_TITLE: &str =
    "==> /proc/18929/cmdline <==\ndovecot-backend-0/imap-hibernate [2 connections] \n";

/// `who -1 <user>` of a user whose one session is hibernated (pid 18929, as in WHO_MIXED).
fn hibernated(user: &str) -> String {
    format!(r#"[{{"username":"{user}","service":"imap","pid":"18929","ip":"127.0.0.1"}}]"#)
}

/// `director map <ip>` of the mixed backend: its four users with sessions, two without.
fn mapped_here() -> String {
    let rows: Vec<String> = ["user11", "user12", "user13", "user15", "user20", "user21"]
        .iter()
        .map(|u| {
            format!(
                r#"{{"user":"{u}","hash":"1","mail server ip":"{}","expire time":"2026-12-02 06:07:06"}}"#,
                fixtures::backend_ip(2)
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

/// One reconcile of backend-2 at WaitSessions, the step started at 0 and the clock at `secs`.
async fn wait_sessions_at(s: &Settings, exec: &Scripted, cluster: &Fake, secs: i64) -> Outcome {
    once(s, at(Step::WaitSessions), exec, cluster, &clock_at(secs, 0)).await
}

fn placement(current: &str, hashed: &str) -> String {
    format!(
        r#"[{{"status":"{current}","expires":"2026-12-02 06:07:06","hashed":"{hashed}","initial-config":"{current}"}}]"#
    )
}

#[tokio::test]
async fn a_move_drain_poll_moves_the_idle_users_the_director_maps_here_and_nobody_else() {
    let s = fixtures::settings(json!({"drain": {"strategy": "Move", "timeout": "60s"}}));
    let here = fixtures::backend_ip(2);
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 6)]))
        .once("backend-2", s.backend.who(), 0, WHO_MIXED, "")
        .once("backend-2", s.backend.process_status(), 0, PS_MIXED, "")
        .once(
            "backend-2",
            dovecot::process_titles(&[18910, 18927, 18928, 18929]),
            0,
            TITLES_MIXED,
            "",
        );
    // each looked at once more right before its move: still hibernated
    let exec = ["user12", "user13"].iter().fold(exec, |exec, u| {
        exec.once("backend-2", s.backend.who_user(u), 0, &hibernated(u), "")
            .once(
                "backend-2",
                dovecot::process_titles(&[18929]),
                0,
                HIBERNATE_TITLE,
                "",
            )
    });
    let exec = exec
        // user12 is mapped here and hashes to backend-0 now: moved there
        .once(
            DIRECTOR,
            s.director.director_user_status("user12"),
            0,
            &placement(&here, &fixtures::backend_ip(0)),
            "",
        )
        .once(
            DIRECTOR,
            s.director.director_move("user12", ip(0)),
            0,
            "",
            "",
        )
        // user13's session here is not the director's (mapped elsewhere): not moved
        .once(
            DIRECTOR,
            s.director.director_user_status("user13"),
            0,
            &placement(&fixtures::backend_ip(1), &fixtures::backend_ip(1)),
            "",
        )
        // user11 stays connected between commands, which only its client or the ceiling
        // ends: the users without a session are listed and moved one by one meanwhile
        .once(
            DIRECTOR,
            s.director.director_map(ip(2)),
            0,
            &mapped_here(),
            "",
        );
    let exec = ["user20", "user21"].iter().fold(exec, |exec, u| {
        exec.once("backend-2", s.backend.who_user(u), 0, "[]", "")
            .once(
                DIRECTOR,
                s.director.director_user_status(u),
                0,
                &placement(&here, &fixtures::backend_ip(1)),
                "",
            )
            .once(DIRECTOR, s.director.director_move(u, ip(1)), 0, "", "")
    });
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = wait_sessions_at(&s, &exec, &cluster, 10).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::WaitSessions);
    let d = rec.drain.as_ref().unwrap();
    assert_eq!((d.users_left, d.sessions_moved, d.users_moved), (6, 1, 2));
    assert!(d.users_listed.is_some());
    assert_eq!((d.sessions, d.without_session), (Some(4), Some(2)));
    let m = rec.message.as_deref().unwrap();
    assert!(
        m.contains("1 deliveries in flight") && m.contains("1 not moved"),
        "{m}"
    );
    assert_eq!(out.requeue, Some(dbu_core::machine::drain::MOVE_PACE));
    assert_eq!(
        out.notes
            .iter()
            .filter(|n| n.reason == "UsersMoved")
            .count(),
        1
    );
    // within 30 s the userdb is not iterated again
    let exec2 = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 4)]))
        .once(
            "backend-2",
            s.backend.who(),
            0,
            r#"[{"username":"user11","service":"imap","pid":"18927","ip":"127.0.0.1"}]"#,
            "",
        )
        .once("backend-2", s.backend.process_status(), 0, "[]", "")
        .once(
            "backend-2",
            dovecot::process_titles(&[18927]),
            0,
            "==> /proc/18927/cmdline <==\nimap [user11 127.0.0.1]\n",
            "",
        );
    let again = once(&s, out.status.clone(), &exec2, &cluster, &clock_at(20, 0)).await;
    let d = again.status.backends[0].drain.clone().unwrap();
    assert_eq!(
        d.users_listed,
        out.status.backends[0].drain.as_ref().unwrap().users_listed
    );
    // only a client between commands is left: looked at the poll interval, not every second
    assert_eq!(again.requeue, Some(s.poll_interval));
    // nothing else ran: no flush while sessions and a delivery are on the backend
    assert!(
        !exec.calls().iter().any(|c| c.contains("flush")),
        "{:?}",
        exec.calls()
    );
}

#[tokio::test]
async fn a_move_drain_flushes_a_backend_with_no_session_and_no_delivery() {
    let s = fixtures::settings(json!({"drain": {"strategy": "Move", "timeout": "60s"}}));
    let idle_lmtp = r#"[{"name":"lmtp","pid":"77","available_count":"1","total_count":"1","idle_start":"1796190726","last_status_update":"1796190726","last_kill_sent":"0"}]"#;
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 40)]))
        .once("backend-2", s.backend.who(), 0, "[]", "")
        .once("backend-2", s.backend.process_status(), 0, idle_lmtp, "")
        .once(DIRECTOR, s.director.director_flush(ip(2)), 0, "", "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = wait_sessions_at(&s, &exec, &cluster, 10).await;
    let d = out.status.backends[0].drain.clone().unwrap();
    assert_eq!(
        (d.users_moved, d.sessions_moved, d.without_session),
        (40, 0, Some(40))
    );
}

/// At the ceiling, users still mapped are moved before anything stops (both strategies): no
/// user stays mapped to a backend whose LMTP or Dovecot is stopped; with onTimeout Fail,
/// nobody is moved and the step fails (its undo puts the vhosts back). Move first moves what
/// may move (here: nobody has a session, so its flush), within 30 s past the ceiling.
#[tokio::test]
async fn at_the_ceiling_the_users_still_mapped_are_moved_before_anything_stops() {
    // Move at the ceiling, unpolled until then (the operator restarted): a Move poll first
    let s = fixtures::settings(json!({"drain": {"strategy": "Move", "timeout": "60s"}}));
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 7)]))
        .once("backend-2", s.backend.who(), 0, "[]", "")
        .once("backend-2", s.backend.process_status(), 0, "[]", "")
        .once(DIRECTOR, s.director.director_flush(ip(2)), 0, "", "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = wait_sessions_at(&s, &exec, &cluster, 61).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::WaitSessions, "a poll, counted: {rec:?}");
    assert_eq!(rec.drain.as_ref().unwrap().users_moved, 7);
    for strategy in ["Wait", "Move"] {
        let s = fixtures::settings(json!({"drain": {"strategy": strategy, "timeout": "60s"}}));
        let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 7)])).once(
            DIRECTOR,
            s.director.director_flush(ip(2)),
            0,
            "",
            "",
        );
        let cluster = fake(fixtures::world(3, OLD, NEW));
        // (Move past its grace: the flush, at once)
        let out = wait_sessions_at(&s, &exec, &cluster, 91).await;
        let rec = &out.status.backends[0];
        assert_eq!(rec.step, Step::StopLmtp, "{strategy}: {rec:?}");
        assert!(
            rec.message
                .as_deref()
                .unwrap()
                .contains("moved them before anything stops"),
            "{strategy}: {:?}",
            rec.message
        );
        let flushed = exec
            .calls()
            .iter()
            .filter(|c| c.ends_with("director flush 127.0.0.13"))
            .count();
        assert_eq!(flushed, 1, "{strategy}");

        let fail = fixtures::settings(
            json!({"drain": {"strategy": strategy, "timeout": "60s", "onTimeout": "Fail"}}),
        );
        let exec = ring_read(&fail, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 7)]));
        let out = wait_sessions_at(&fail, &exec, &cluster, 61).await;
        assert!(out.status.backends[0].failed, "{strategy}");
        assert!(
            !exec
                .calls()
                .iter()
                .any(|c| c.ends_with("director flush 127.0.0.13")),
            "{strategy}: nobody is moved when the ceiling fails the step"
        );
    }
}

/// A user IDLE at the poll's look but in a command at the look right before its move (an IDLE
/// client woken by new mail) is not moved: the next poll looks again.
#[tokio::test]
async fn a_user_in_a_command_again_right_before_its_move_is_not_moved() {
    let s = fixtures::settings(json!({"drain": {"strategy": "Move", "timeout": "60s"}}));
    let who = r#"[{"username":"user7","service":"imap","pid":"501","ip":"10.0.0.9"}]"#;
    let title = |cmd: &str| format!("==> /proc/501/cmdline <==\nimap [user7 10.0.0.9{cmd}] \n");
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 1)]))
        .once("backend-2", s.backend.who(), 0, who, "")
        .once("backend-2", s.backend.process_status(), 0, "[]", "")
        .once(
            "backend-2",
            dovecot::process_titles(&[501]),
            0,
            &title(" IDLE"),
            "",
        )
        .once("backend-2", s.backend.who_user("user7"), 0, who, "")
        .once(
            "backend-2",
            dovecot::process_titles(&[501]),
            0,
            &title(" FETCH"),
            "",
        );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = wait_sessions_at(&s, &exec, &cluster, 10).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.drain.as_ref().unwrap().sessions_moved, 0);
    let m = rec.message.as_deref().unwrap();
    assert!(m.contains("1 not moved (in a command again"), "{m}");
    assert!(
        !exec.calls().iter().any(|c| c.contains("director")
            && (c.contains(" move ") || c.contains("status user7"))),
        "{:?}",
        exec.calls()
    );
}
