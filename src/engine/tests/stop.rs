//! StopLmtp, StopDovecot and Reset: the layout recorded, the master's exit, the reset guard.

use super::*;

#[tokio::test]
async fn stop_dovecot_gives_the_reconcile_back_while_the_master_runs() {
    // no sleep inside a reconcile: each look at the master is a requeue, soon in the first
    // 15 s of the step, then once a second
    let s = settings();
    let pid = dovecot::read_master_pid(&s.base_dir);
    for (now, requeue) in [
        (0, Duration::from_millis(200)),
        (16, Duration::from_secs(1)),
    ] {
        let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)]))
            .once("backend-2", s.backend.stop(), 0, "", "")
            .always("backend-2", pid.clone(), 0, "123\n")
            .always("backend-2", dovecot::process_alive(123), 0, "");
        let cluster = fake(fixtures::world(3, OLD, NEW));
        let out = once(
            &s,
            at(Step::StopDovecot),
            &exec,
            &cluster,
            &clock_at(now, 0),
        )
        .await;
        let rec = &out.status.backends[0];
        assert_eq!((rec.step, rec.failed), (Step::StopDovecot, false));
        assert_eq!(out.requeue, Some(requeue), "at {now} s");
        assert!(
            rec.message
                .as_deref()
                .unwrap()
                .contains("waiting for the Dovecot master")
        );
    }
}

#[tokio::test]
async fn reset_goes_back_to_stop_lmtp_when_dovecot_runs_again() {
    let s = settings();
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0)]))
        .once(
            "backend-2",
            dovecot::read_master_pid(&s.base_dir),
            0,
            "77\n",
            "",
        )
        .once("backend-2", dovecot::process_alive(77), 0, "", "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::Reset), &exec, &cluster, &clock_at(0, 0)).await;
    assert_eq!(out.status.backends[0].step, Step::StopLmtp);
    assert_eq!(out.notes[0].reason, "StepRewound");
    assert!(
        !exec.calls().iter().any(|c| c.contains("find")),
        "nothing wiped"
    );
}

/// A backend at Reset with Dovecot stopped, the layout StopLmtp read (None: not read).
fn at_reset(s: &Settings, user_lookup: Option<&str>) -> DovecotBackendUpgradeStatus {
    let mut st = at(Step::Reset);
    st.backends[0].mail_layout =
        user_lookup.map(|out| dovecot::parse_user_lookup(&s.user, out).unwrap());
    st
}

fn stopped(s: &Settings) -> Scripted {
    ring_read(s, &ring_json(&[(0, 100, 0), (1, 50, 0)])).once(
        "backend-2",
        dovecot::read_master_pid(&s.base_dir),
        1,
        "",
        "cat: /run/dovecot/master.pid: No such file or directory",
    )
}

fn deleted_anything(exec: &Scripted) -> bool {
    exec.calls().iter().any(|c| c.contains("-delete"))
}

#[tokio::test]
async fn stop_lmtp_records_where_the_verify_user_keeps_mail() {
    let s = settings();
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)]))
        .once(
            "backend-2",
            s.backend.doveconf_base_dir(),
            0,
            "/run/dovecot\n",
            "",
        )
        .once("backend-2", s.backend.user_lookup(&s.user), 0, OLD_USER, "")
        .once("backend-2", s.backend.service_stop_lmtp(), 0, "", "");
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::StopLmtp), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::StopDovecot);
    let l = rec.mail_layout.as_ref().expect("layout recorded");
    assert_eq!(l.home.as_deref(), Some("/var/dovecot/vmail/probe"));
    assert!(l.expanded);
}

#[tokio::test]
async fn reset_refuses_a_path_holding_the_home_or_control_and_deletes_nothing() {
    let s = settings();
    let exec = stopped(&s);
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(
        &s,
        at_reset(&s, Some(OLD_USER)),
        &exec,
        &cluster,
        &clock_at(0, 0),
    )
    .await;
    let rec = &out.status.backends[0];
    assert!(rec.failed);
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.reason.as_deref(), Some("ResetWouldDeleteMailData"));
    assert!(
        e.stderr
            .contains("/var/dovecot/vmail/probe (userdb home of probe)"),
        "{e:?}"
    );
    let stalled = out
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == dbu_core::conditions::STALLED)
        .unwrap();
    assert_eq!(stalled.reason, "ResetWouldDeleteMailData");
    assert!(stalled.message.contains("backend-2"), "{}", stalled.message);
    assert!(!deleted_anything(&exec));
}

#[tokio::test]
async fn reset_refuses_when_a_reset_path_holds_mail_files_whatever_the_settings_say() {
    let s = settings();
    let vmail = &s.reset[1];
    let probe = dbu_core::reset_guard::probe(vmail).unwrap();
    let meta = &s.reset[0];
    let exec = stopped(&s)
        .once(
            "backend-2",
            dbu_core::reset_guard::probe(meta).unwrap(),
            0,
            "",
            "",
        )
        .once(
            "backend-2",
            probe,
            0,
            "/var/dovecot/vmail/other/dovecot-uidlist\n",
            "",
        );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(
        &s,
        at_reset(&s, Some(SHIPPED_USER)),
        &exec,
        &cluster,
        &clock_at(0, 0),
    )
    .await;
    let e = out.status.backends[0].last_error.clone().unwrap();
    assert_eq!(e.reason.as_deref(), Some("ResetWouldDeleteMailData"));
    assert!(e.stderr.contains("other/dovecot-uidlist"), "{e:?}");
    assert_eq!(&e.argv, vmail);
    assert!(!deleted_anything(&exec));
}

#[tokio::test]
async fn reset_reads_doveconf_without_a_recorded_layout_and_a_missing_folder_is_nothing_to_delete()
{
    let s = settings();
    let missing = "find: '/var/dovecot/vmail': No such file or directory\n";
    let mut exec = stopped(&s).once(
        "backend-2",
        s.backend.doveconf_mail(),
        0,
        "maildir:/srv/mail/%u/Maildir:INDEX=/var/dovecot/vmail/%u\n\n",
        "",
    );
    for argv in &s.reset {
        let probe = dbu_core::reset_guard::probe(argv).unwrap();
        exec = exec.once("backend-2", probe, 1, "", missing).once(
            "backend-2",
            argv.clone(),
            1,
            "",
            missing,
        );
    }
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at_reset(&s, None), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Replace, false), "{rec:?}");
    assert!(deleted_anything(&exec), "the reset ran: {:?}", exec.calls());
}

#[tokio::test]
async fn a_base_dir_that_is_not_dovecot_s_stops_nothing_and_says_what_to_set() {
    let s = settings();
    // the image keeps its base_dir elsewhere: master.pid would never be found under spec.baseDir
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0), (2, 0, 0)])).once(
        "backend-2",
        s.backend.doveconf_base_dir(),
        0,
        "/var/run/dovecot-backend\n",
        "",
    );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(&s, at(Step::StopLmtp), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed, "{rec:?}");
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.reason.as_deref(), Some("BaseDirMismatch"));
    assert!(
        e.stderr
            .contains("Set spec.baseDir: /var/run/dovecot-backend"),
        "{e:?}"
    );
    assert!(
        exec.calls().iter().all(|c| !c.contains("stop")),
        "nothing stopped: {:?}",
        exec.calls()
    );
    // a trailing slash is the same directory
    assert!(dbu_core::machine::judge::base_dir("/run/dovecot/", "/run/dovecot\n").is_ok());
}
