//! Shared helpers for the real-Dovecot tests: a lab with mail, settings, and rollout loops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dbu_lab::{self as lab, ImapSession, Lab, LabSpec};
use dovecot_upgrade_operator::api::DovecotBackendUpgradeStatus;
use dovecot_upgrade_operator::engine::{self, Outcome};
use dovecot_upgrade_operator::exec::PodExec;
use dovecot_upgrade_operator::machine::Note;
use dovecot_upgrade_operator::settings::Settings;
use serde_json::json;

pub fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Test settings: short polls, a 40 s drain ceiling, ordinal order; `extra` is merged in (RFC 7386).
pub fn settings(extra: serde_json::Value) -> Settings {
    lab::settings(test_patch(extra))
}

/// The spec `settings` validates.
pub fn spec(extra: serde_json::Value) -> dovecot_upgrade_operator::api::DovecotBackendUpgradeSpec {
    lab::spec(test_patch(extra))
}

fn test_patch(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({
        "drain": {"pollInterval": "1s", "timeout": "40s"},
        "timeouts": {"command": "40s", "stop": "30s", "replace": "60s"},
        // a fixed order keeps fault scenarios aimed at the backend they name
        "ordering": "Ordinal"
    });
    dbu_core::fixtures::merge_patch(&mut v, extra);
    v
}

/// Fields drop in order: the lab (and its processes) before its folder.
pub struct Rig {
    pub lab: Lab,
    pub _dir: tempfile::TempDir,
    /// messages delivered per user before the rollout
    pub sent: BTreeMap<String, u64>,
}

pub fn rig_with(spec: impl FnOnce(&std::path::Path) -> LabSpec) -> Rig {
    let dir = tempfile::Builder::new()
        .prefix("dbu-lab-")
        .tempdir()
        .unwrap();
    let lab = Lab::start(spec(dir.path())).expect("lab starts");
    let mut sent = BTreeMap::new();
    let dip = lab.spec.director_ip();
    // mail for six users through the director, spread over the backends
    for u in 1..=6 {
        let user = format!("user{u}");
        for m in 0..3 {
            lab::lmtp_deliver(&dip, &user, &format!("before-{u}-{m}"))
                .expect("delivery before the rollout");
            *sent.entry(user.clone()).or_insert(0) += 1;
        }
        // a login/logout leaves a mapping that expires after director_user_expire
        ImapSession::login(&dip, &user).expect("login").logout();
    }
    Rig {
        lab,
        _dir: dir,
        sent,
    }
}

/// Three backends (vhosts 100, 50, 20) and one director on 127.0.`net`.0/24.
pub fn rig(net: u8) -> Rig {
    rig_with(|d| LabSpec::new(d, net, vec![100, 50, 20]))
}

/// Drives a rollout to its end (completed or stalled) on `cluster` (the lab, or a view or
/// wrapper of it), collecting every note.
pub async fn finish(
    s: &Settings,
    exec: &dyn PodExec,
    cluster: &dyn engine::Cluster,
    status: DovecotBackendUpgradeStatus,
) -> (DovecotBackendUpgradeStatus, Vec<Note>) {
    finish_probing(s, exec, cluster, &engine::NetProbes, status).await
}

/// `finish` with these probes (a wrapper that cuts or hangs one).
pub async fn finish_probing(
    s: &Settings,
    exec: &dyn PodExec,
    cluster: &dyn engine::Cluster,
    probes: &dyn engine::Probes,
    status: DovecotBackendUpgradeStatus,
) -> (DovecotBackendUpgradeStatus, Vec<Note>) {
    let mut notes = Vec::new();
    let out = engine::drive(
        s,
        status,
        exec,
        cluster,
        probes,
        &now,
        Duration::from_secs(600),
        |o: &Outcome| notes.extend(o.notes.iter().cloned()),
    )
    .await
    .unwrap();
    (out.status, notes)
}

/// One reconcile as the controller runs it (probes over TCP, the clock now), on `cluster`.
pub async fn once(
    s: &Settings,
    status: DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn engine::Cluster,
) -> Outcome {
    engine::reconcile_once(s, status, Some(1), exec, cluster, &engine::NetProbes, &now)
        .await
        .unwrap()
}

/// Reconciles until `done(status)`, collecting notes; panics after `limit`.
pub async fn until(
    s: &Settings,
    exec: &dyn PodExec,
    lab: &Lab,
    mut status: DovecotBackendUpgradeStatus,
    limit: Duration,
    done: impl Fn(&DovecotBackendUpgradeStatus) -> bool,
) -> (DovecotBackendUpgradeStatus, Vec<Note>) {
    let end = Instant::now() + limit;
    let mut notes = Vec::new();
    while !done(&status) {
        assert!(Instant::now() < end, "condition not reached: {status:#?}");
        let out = once(s, status, exec, lab).await;
        notes.extend(out.notes);
        status = out.status;
        if !done(&status) {
            let wait = out
                .requeue
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
        }
    }
    (status, notes)
}

/// A new rollout reconciled until its first backend's record is at `step` (before it runs).
pub async fn until_step(
    s: &Settings,
    exec: &dyn PodExec,
    lab: &Lab,
    step: dovecot_upgrade_operator::api::Step,
) -> DovecotBackendUpgradeStatus {
    until(
        s,
        exec,
        lab,
        DovecotBackendUpgradeStatus::default(),
        Duration::from_secs(120),
        |st| st.backends.first().is_some_and(|r| r.step == step),
    )
    .await
    .0
}

/// Vhost count per ring IP on a director.
pub fn ring_of(lab: &Lab, director: &str) -> BTreeMap<String, (u32, bool)> {
    let out = lab
        .doveadm(director, &["-f", "json", "director", "status"])
        .unwrap();
    dovecot_upgrade_operator::dovecot::parse_director_status(&out)
        .unwrap()
        .into_iter()
        .map(|h| (h.ip, (h.vhosts, h.up)))
        .collect()
}

/// Prints one line of the scenario report (collected into the closing note).
pub fn report(scenario: &str, started: Instant, detail: &str) {
    eprintln!(
        "SCENARIO | {scenario} | pass | {:.1}s | {detail}",
        started.elapsed().as_secs_f64()
    );
}
