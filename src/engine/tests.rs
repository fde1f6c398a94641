//! The act layer without Dovecot: a scripted exec answers each argv, a fake cluster holds the world.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use dbu_core::api::{DovecotBackendUpgradeStatus, Step};
use dbu_core::dovecot;
use dbu_core::fixtures::{self, ts};
use dbu_core::machine::{Decision, Observed};
use dbu_core::settings::Settings;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::exec::{ExecError, ExecOutput, ExecRequest, PodExec};

const OLD: &str = "rev-1";
const NEW: &str = "rev-2";
const DIRECTOR: &str = "director-0";

/// One scripted answer: the pod and argv it answers, what it returns, and whether it stays.
struct Rule {
    pod: String,
    argv: Vec<String>,
    reply: Result<ExecOutput, ExecError>,
    sticky: bool,
}

/// Answers each exec from its script, in order; an argv nobody scripted fails the test, so a
/// test also proves which commands ran and which did not.
#[derive(Default)]
struct Scripted {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<(String, Vec<String>)>>,
}

impl Scripted {
    fn add(
        self,
        pod: &str,
        argv: Vec<String>,
        reply: Result<ExecOutput, ExecError>,
        sticky: bool,
    ) -> Self {
        self.rules.lock().unwrap().push(Rule {
            pod: pod.into(),
            argv,
            reply,
            sticky,
        });
        self
    }
    /// Answers once.
    fn once(
        self,
        pod: &str,
        argv: Vec<String>,
        exit_code: i32,
        stdout: &str,
        stderr: &str,
    ) -> Self {
        let out = ExecOutput {
            exit_code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        self.add(pod, argv, Ok(out), false)
    }
    /// Answers every time.
    fn always(self, pod: &str, argv: Vec<String>, exit_code: i32, stdout: &str) -> Self {
        let out = ExecOutput {
            exit_code,
            stdout: stdout.into(),
            stderr: String::new(),
        };
        self.add(pod, argv, Ok(out), true)
    }
    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(p, a)| format!("{p}: {}", a.join(" ")))
            .collect()
    }
}

#[async_trait]
impl PodExec for Scripted {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        self.calls
            .lock()
            .unwrap()
            .push((req.pod.to_string(), req.argv.to_vec()));
        let mut rules = self.rules.lock().unwrap();
        let Some(i) = rules
            .iter()
            .position(|r| r.pod == req.pod && r.argv == req.argv)
        else {
            panic!("unscripted exec in {}: {:?}", req.pod, req.argv);
        };
        let reply = rules[i].reply.clone();
        if !rules[i].sticky {
            rules.remove(i);
        }
        reply
    }
}

/// The world as given; records the pods it was asked to delete.
struct Fake {
    obs: Observed,
    deleted: Mutex<Vec<String>>,
    /// What a fresh read of the StatefulSet says (None: as observed).
    fresh: Option<Option<String>>,
    /// What fresh reads of pods say (None: as observed).
    fresh_pods: Option<Vec<dbu_core::machine::PodView>>,
    /// How the LMTP probe ends, and the (ip, message) it was given.
    probe: Option<Result<(), crate::probe::ProbeFailure>>,
    probed: Mutex<Vec<(String, String)>>,
    /// The world as the API server has it (None: as observed), and how often it was read.
    fresh_world: Option<Observed>,
    fresh_reads: Mutex<u32>,
}

#[async_trait]
impl Cluster for Fake {
    async fn observe(&self, _: &Settings) -> Result<Observed, ClusterError> {
        Ok(self.obs.clone())
    }
    async fn observe_fresh(&self, _: &Settings) -> Result<Observed, ClusterError> {
        *self.fresh_reads.lock().unwrap() += 1;
        Ok(Observed {
            fresh: true,
            ..self.fresh_world.clone().unwrap_or_else(|| self.obs.clone())
        })
    }
    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError> {
        self.deleted.lock().unwrap().push(format!("{pod} {uid}"));
        Ok(())
    }
    async fn fresh_pod(
        &self,
        _: &Settings,
        pod: &str,
    ) -> Result<Option<dbu_core::machine::PodView>, ClusterError> {
        let pods = self.fresh_pods.as_ref().unwrap_or(&self.obs.pods);
        Ok(pods.iter().find(|p| p.name == pod).cloned())
    }
    async fn fresh_update_revision(&self, _: &Settings) -> Result<Option<String>, ClusterError> {
        Ok(self.fresh.clone().unwrap_or_else(|| {
            self.obs
                .sts
                .as_ref()
                .and_then(|x| x.update_revision.clone())
        }))
    }
    async fn read_key(
        &self,
        key: &dbu_core::settings::ObjectKey,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        Err(ClusterError::Forbidden(format!(
            "no keys in these tests: {key:?}"
        )))
    }
    async fn read_ring_lock(
        &self,
        _: &Settings,
    ) -> Result<dbu_core::machine::RingLock, ClusterError> {
        Ok(dbu_core::machine::RingLock::default())
    }
    async fn write_ring_lock(
        &self,
        _: &Settings,
        _: Option<&str>,
        _: &[dbu_core::machine::RingHolder],
    ) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

#[async_trait]
impl Probes for Fake {
    async fn lmtp(
        &self,
        ip: &str,
        port: u16,
        _: Duration,
        _: &str,
        message: &str,
    ) -> Result<(), crate::probe::ProbeFailure> {
        self.probed
            .lock()
            .unwrap()
            .push((format!("{ip}:{port}"), message.to_string()));
        self.probe.clone().unwrap_or(Ok(()))
    }
    async fn imap(
        &self,
        _: &dbu_core::imap::ImapTarget,
        _: dbu_core::imap::ProbeInput,
    ) -> Result<(), crate::probe::ProbeFailure> {
        panic!("no IMAP probe in these tests")
    }
}

fn fake(obs: Observed) -> Fake {
    Fake {
        obs,
        deleted: Mutex::new(Vec::new()),
        fresh: None,
        fresh_pods: None,
        probe: None,
        probed: Mutex::new(Vec::new()),
        fresh_world: None,
        fresh_reads: Mutex::new(0),
    }
}

fn settings() -> Settings {
    fixtures::settings(json!({"drain": {"timeout": "60s", "pollInterval": "5s"}}))
}

/// `director status` for backends (index, vhosts, users); those with 0 vhosts after Ring
/// Remove are `down` too, as the machine expects.
fn ring_json(hosts: &[(u32, u32, u64)]) -> String {
    ring_json_down(hosts, &[])
}

fn ring_json_down(hosts: &[(u32, u32, u64)], down: &[u32]) -> String {
    let rows: Vec<String> = hosts
        .iter()
        .map(|(i, vhosts, users)| {
            format!(
                r#"{{"mail server ip":"{}","tag":"","vhosts":"{vhosts}","state":"{}","state-changed":"-","users":"{users}"}}"#,
                fixtures::backend_ip(*i),
                if down.contains(i) { "down" } else { "up" }
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

const SYNCED: &str = r#"[{"director ip":"127.0.0.10","port":"9090","type":"self","last failed":"never","status":"ring synced","ping ms":"0","input":"-","output":"-","buffered":"-","buffered peak":"-","last read":"-","last write":"-"}]"#;

/// A script that starts with the ring read every in-flight decision makes, and answers the
/// sync read that StopLmtp makes first.
fn ring_read(s: &Settings, ring: &str) -> Scripted {
    Scripted::default()
        .once(DIRECTOR, s.director.director_status(), 0, ring, "")
        .once(DIRECTOR, s.director.director_ring_status(), 0, SYNCED, "")
}

fn ip(i: u32) -> std::net::IpAddr {
    fixtures::backend_ip(i).parse().unwrap()
}

/// The clock of a test: fixed, or moving `step` seconds at each read.
fn clock_at(start: i64, step: i64) -> impl Fn() -> Timestamp + Sync {
    let n = std::sync::atomic::AtomicI64::new(0);
    move || ts(start + step * n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

async fn once(
    s: &Settings,
    status: DovecotBackendUpgradeStatus,
    exec: &Scripted,
    cluster: &Fake,
    clock: Clock<'_>,
) -> Outcome {
    reconcile_once(s, status, Some(1), exec, cluster, cluster, clock)
        .await
        .unwrap()
}

fn at(step: Step) -> DovecotBackendUpgradeStatus {
    fixtures::status(NEW, vec![fixtures::record(2, step, ts(0), OLD, 20)])
}

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
    let Decision::Begin(rec) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!((rec.pod.as_str(), rec.original_vhosts), ("backend-2", 20));
    assert_eq!(out.status.backends[0].step, Step::Drain);
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
    let out = once(&s, at(Step::WaitSessions), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::StopLmtp);
    assert!(rec.message.as_deref().unwrap().contains("not running"));
}

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

/// `doveadm -f json user probe` on the shipped example layout and on the old one (2.3.19).
const SHIPPED_USER: &str = r#"[{"field":"uid","value":"8"},{"field":"gid","value":"8"},{"field":"home","value":"/srv/mail/probe"},{"field":"mail","value":"maildir:/srv/mail/probe/Maildir:INDEX=/var/dovecot/vmail/probe"}]"#;
const OLD_USER: &str = r#"[{"field":"uid","value":"8"},{"field":"gid","value":"8"},{"field":"home","value":"/var/dovecot/vmail/probe"},{"field":"mail","value":"maildir:/srv/mail/probe/Maildir:INDEX=/var/dovecot/vmail/probe:CONTROL=/var/dovecot/vmail/probe"}]"#;

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
async fn verify_fails_when_the_mailbox_is_not_listed() {
    let s = settings();
    let list = s.backend.mailbox_list(&s.user);
    let exec = ring_read(&s, &ring_json(&[(0, 100, 0), (1, 50, 0)]))
        .once("backend-2", s.backend.expunge_probes(&s.user), 0, "", "")
        .once("backend-2", list.clone(), 0, r#"[{"mailbox":"Trash"}]"#, "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    let out = once(&s, at(Step::Verify), &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed);
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.argv, list);
    assert!(e.stderr.contains("not listed"), "{}", e.stderr);
}

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

/// Verify's doveadm checks as the script answers them, after the probe leftovers are removed.
fn verify_script(s: &Settings) -> Scripted {
    let b = &s.backend;
    ring_read(s, &ring_json(&[(0, 100, 0), (1, 50, 0)]))
        .once("backend-2", b.expunge_probes(&s.user), 0, "", "")
        .once(
            "backend-2",
            b.mailbox_list(&s.user),
            0,
            r#"[{"mailbox":"INBOX"}]"#,
            "",
        )
        .once(
            "backend-2",
            b.mailbox_status(&s.user, "INBOX"),
            0,
            r#"[{"mailbox":"INBOX","messages":"4"}]"#,
            "",
        )
        .once("backend-2", b.fetch_text(&s.user, "INBOX"), 0, "", "")
}

fn at_verify() -> (DovecotBackendUpgradeStatus, Fake) {
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let mut st = at(Step::Verify);
    st.backends[0].new_ip = Some("127.0.0.99".into());
    (st, fake(world))
}

#[tokio::test]
async fn verify_delivers_a_probe_over_lmtp_to_the_new_pod_and_removes_it() {
    let s = settings();
    let exec = verify_script(&s).once("backend-2", s.backend.expunge_probes(&s.user), 0, "", "");
    let (st, cluster) = at_verify();
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::RingRestore, "{rec:?}");
    let probed = cluster.probed.lock().unwrap().clone();
    assert_eq!(probed.len(), 1);
    assert_eq!(
        probed[0].0, "127.0.0.99:24",
        "the new pod's own IP, not the director"
    );
    assert!(
        probed[0].1.contains("X-DBU-Probe: backend-2."),
        "{}",
        probed[0].1
    );
    // removed before and after: the expunge ran twice
    let expunges = exec
        .calls()
        .iter()
        .filter(|c| c.contains("expunge"))
        .count();
    assert_eq!(expunges, 2);
}

#[tokio::test]
async fn a_refused_lmtp_probe_fails_verify_naming_protocol_command_and_reply() {
    let s = settings();
    // the probe mail is expunged also after a failed probe
    let again = |e: Scripted| e.once("backend-2", s.backend.expunge_probes(&s.user), 0, "", "");
    let exec = again(verify_script(&s));
    let (st, mut cluster) = at_verify();
    cluster.probe = Some(Err(crate::probe::ProbeFailure {
        command: "RCPT TO:<probe>".into(),
        reply: "550 5.1.1 <probe> User doesn't exist: probe".into(),
        transient: false,
    }));
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert!(rec.failed);
    let e = rec.last_error.as_ref().unwrap();
    assert_eq!(e.step, Step::Verify);
    assert_eq!(e.argv, ["LMTP", "127.0.0.99:24", "RCPT TO:<probe>"]);
    assert!(e.stderr.starts_with("550 5.1.1"), "{e:?}");
    assert_eq!(e.reason.as_deref(), Some("ProbeFailed"));
    let expunges = exec
        .calls()
        .iter()
        .filter(|c| c.contains("expunge"))
        .count();
    assert_eq!(expunges, 2, "before the checks and after the failed probe");
    // an unreachable LMTP is retried, not failed at once
    let exec = again(verify_script(&s));
    let (st, mut cluster) = at_verify();
    cluster.probe = Some(Err(crate::probe::ProbeFailure {
        command: "connect".into(),
        reply: "no answer".into(),
        transient: true,
    }));
    let out = once(&s, st, &exec, &cluster, &clock_at(0, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!((rec.failed, rec.attempts), (false, 1));
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
        .once(DIRECTOR, d.director_update(ip(2), 0), 0, "", "")
        .once(DIRECTOR, d.director_down(ip(2)), 0, "", "")
        .once(DIRECTOR, d.director_flush(ip(2)), 0, "", "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    // a minute and a half after RingRestore, the director still maps nobody to it
    let out = once(&s, at(Step::Soak), &exec, &cluster, &clock_at(90, 0)).await;
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
async fn a_soak_passes_once_the_director_maps_users_to_the_backend() {
    let s = settings();
    let d = &s.director;
    let ring = ring_json(&[(0, 100, 3), (1, 50, 1), (2, 20, 2)]);
    let not_mapped =
        r#"[{"status":"n/a","expires":"-1","hashed":"127.0.0.11","initial-config":"127.0.0.11"}]"#;
    let exec = ring_read(&s, &ring)
        .once(DIRECTOR, d.director_status(), 0, &ring, "")
        .once(DIRECTOR, d.director_user_status(&s.user), 0, not_mapped, "");
    let mut world = fixtures::world(3, OLD, NEW);
    world.pods[2] = fixtures::pod(2, NEW);
    let cluster = fake(world);
    let out = once(&s, at(Step::Soak), &exec, &cluster, &clock_at(5, 0)).await;
    let rec = &out.status.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Done, false), "{rec:?}");
    assert!(
        out.notes.iter().any(|n| n.message.contains("maps 2 users")),
        "{:?}",
        out.notes
    );
}

const WHO_MIXED: &str = include_str!("../../core/testdata/drain/who-mixed.json");
const PS_MIXED: &str = include_str!("../../core/testdata/drain/process-status-mixed.json");
const TITLES_MIXED: &str = include_str!("../../core/testdata/drain/titles-mixed.txt");

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
        )
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
        );
    let cluster = fake(fixtures::world(3, OLD, NEW));
    let out = once(
        &s,
        at(Step::WaitSessions),
        &exec,
        &cluster,
        &clock_at(10, 0),
    )
    .await;
    let rec = &out.status.backends[0];
    assert_eq!(rec.step, Step::WaitSessions);
    let d = rec.drain.as_ref().unwrap();
    assert_eq!((d.users_left, d.sessions_moved, d.users_moved), (6, 1, 0));
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
    let out = once(
        &s,
        at(Step::WaitSessions),
        &exec,
        &cluster,
        &clock_at(10, 0),
    )
    .await;
    let d = out.status.backends[0].drain.clone().unwrap();
    assert_eq!(
        (d.users_moved, d.sessions_moved, d.without_session),
        (40, 0, Some(40))
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
