//! Table tests of the pure step machine.

use super::*;
use crate::api::{
    APPROVE_ANNOTATION, BackendStatus, DovecotBackendUpgradeStatus, DrainTimeoutAction, Step,
    StepError,
};
use crate::dovecot::RingHost;
use crate::fixtures::{self, ts};
use crate::reason::{EventReason, WaitReason};
use crate::settings::Settings;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use std::time::Duration;

const OLD: &str = "backend-old";

const NEW: &str = "backend-new";

fn settings() -> Settings {
    with(json!({}))
}

fn pod(i: u32, rev: &str) -> PodView {
    fixtures::pod(i, rev)
}

/// The ring's record of a host standing for `pod` at `vhosts`, up, its count that pod's.
fn stood(ip: &str, pod: &str, vhosts: u32) -> crate::api::StoodFor {
    crate::api::StoodFor {
        ip: ip.into(),
        pod: pod.into(),
        vhosts,
        up: true,
        counts_for: None,
        taken_by: None,
        counted: false,
    }
}

fn host(i: u32, vhosts: u32, up: bool, users: u64) -> RingHost {
    fixtures::host(i, vhosts, up, users)
}

/// Three backends all outdated, a healthy ring with different vhost counts.
fn world() -> Observed {
    Observed {
        ring: Some(vec![
            host(0, 100, true, 3),
            host(1, 50, true, 2),
            host(2, 20, true, 1),
        ]),
        ..fixtures::world(3, OLD, NEW)
    }
}

fn rec(i: u32, step: Step, started: i64) -> BackendStatus {
    fixtures::record(i, step, ts(started), OLD, [100, 50, 20][i as usize])
}

fn status(recs: Vec<BackendStatus>) -> DovecotBackendUpgradeStatus {
    fixtures::status(NEW, recs)
}

fn run(i: u32, step: Step) -> Decision {
    Decision::Run {
        pod: format!("backend-{i}"),
        step,
        ceiling_users: None,
    }
}

fn reason(d: &Decision) -> &'static str {
    match d {
        Decision::Stall { reason, .. } => reason.as_str(),
        Decision::Wait { reason, .. } => reason.as_str(),
        Decision::Complete => "Complete",
        Decision::Reassert { .. } => "Reassert",
        Decision::Begin(_) => "Begin",
        Decision::Run { .. } => "Run",
        Decision::Undo { .. } => "Undo",
        Decision::Aborted { .. } => "Aborted",
        Decision::DryRun(_) => "DryRun",
        Decision::Claim { .. } => "Claim",
        Decision::Adopt { .. } => "Adopt",
    }
}

/// The world with backend `i` drained in the ring, as its in-flight record expects.
fn drained(i: u32) -> Observed {
    let mut w = world();
    w.ring.as_mut().unwrap()[i as usize].vhosts = 0;
    w
}

fn with(extra: serde_json::Value) -> Settings {
    let mut patch = json!({"drain": {"timeout": "60s", "pollInterval": "5s"}});
    fixtures::merge_patch(&mut patch, extra);
    fixtures::settings(patch)
}

fn begun(d: &Decision) -> &str {
    match d {
        Decision::Begin(r) => r.pod.as_str(),
        other => panic!("expected Begin, got {other:?}"),
    }
}

fn other_holds(pod: &str, ip: &str, max: u32) -> RingLock {
    RingLock {
        version: Some("7".into()),
        holders: vec![RingHolder {
            dbu: "mail/other".into(),
            pod: pod.into(),
            ip: ip.into(),
            max_unavailable: max,
            left_out: None,
            reason: None,
        }],
    }
}

fn locked(lock: RingLock) -> Observed {
    let mut obs = world();
    obs.me = "mail/roll".into();
    obs.ring_synced = Some(true);
    obs.ring_lock = Some(Ok(lock));
    obs
}

/// The message of a Wait for `want`; panics on any other decision.
fn waiting(d: &Decision, want: WaitReason) -> &str {
    match d {
        Decision::Wait {
            reason, message, ..
        } if *reason == want => message,
        other => panic!("{other:?}"),
    }
}

fn reason_of(d: &Decision) -> &'static str {
    reason(d)
}

mod ring;
mod start;
mod status;
mod steps;
