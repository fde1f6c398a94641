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
    async fn release_pod(&self, pod: &str, uid: &str, _: Timestamp) -> Result<(), ClusterError> {
        self.deleted
            .lock()
            .unwrap()
            .push(format!("release {pod} {uid}"));
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
    /// No watch here: the source is read.
    async fn cached_ring_lock(&self, _: &Settings) -> Option<dbu_core::machine::RingLock> {
        None
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

/// `doveadm -f json user probe` on the shipped example layout and on the old one (2.3.19).
const SHIPPED_USER: &str = r#"[{"field":"uid","value":"8"},{"field":"gid","value":"8"},{"field":"home","value":"/srv/mail/probe"},{"field":"mail","value":"maildir:/srv/mail/probe/Maildir:INDEX=/var/dovecot/vmail/probe"}]"#;
const OLD_USER: &str = r#"[{"field":"uid","value":"8"},{"field":"gid","value":"8"},{"field":"home","value":"/var/dovecot/vmail/probe"},{"field":"mail","value":"maildir:/srv/mail/probe/Maildir:INDEX=/var/dovecot/vmail/probe:CONTROL=/var/dovecot/vmail/probe"}]"#;

mod begin;
mod drain;
mod replace;
mod restore;
mod stop;
mod verify;
mod world;
