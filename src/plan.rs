//! PURE: decides the next action of a rollout from (settings, status, observed world, now).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    BackendStatus, DovecotBackendUpgradeStatus, DrainTimeoutAction, Ordering, PlannedBackend,
    PlannedStep, RolloutPlan, Step, StepError,
};
use crate::dovecot::{self, RingHost};
use crate::settings::Settings;

/// The backend StatefulSet as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsView {
    /// `spec.updateStrategy.type`, "RollingUpdate" when unset (the Kubernetes default).
    pub update_strategy: String,
    pub update_revision: Option<String>,
    pub replicas: i32,
}

/// A backend pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// `metadata.uid`: tells a recreated pod from the one whose Dovecot was stopped.
    pub uid: Option<String>,
    pub ip: Option<String>,
    /// `controller-revision-hash` label.
    pub revision: Option<String>,
    pub ready: bool,
    pub terminating: bool,
}

/// The world, read fresh on every reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// None when the StatefulSet does not exist.
    pub sts: Option<StsView>,
    pub pods: Vec<PodView>,
    /// A Ready director pod to send director commands to.
    pub director: Option<String>,
    /// Pods matched by the director selector that also belong to the backend StatefulSet.
    pub director_overlap: Vec<String>,
    /// Another DBU in the namespace that already owns this StatefulSet.
    pub owned_by_other: Option<String>,
    /// `director status`, None when it could not be read.
    pub ring: Option<Vec<RingHost>>,
    /// Whether the director ring reports `ring synced`; read only when a backend is about to
    /// start (None: not read yet).
    pub ring_synced: Option<bool>,
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Cannot go on without a human; no exec. Stalled=True.
    Stall {
        reason: &'static str,
        message: String,
    },
    /// Nothing to do right now; look again later.
    Wait {
        reason: &'static str,
        message: String,
        requeue: Duration,
    },
    /// Every backend is at the target revision. Ready=True.
    Complete,
    /// Re-apply ring state the director forgot (e.g. after a restart).
    Reassert {
        pod: String,
        commands: Vec<Vec<String>>,
    },
    /// Start a backend: record it at Drain with its original vhost count (status only).
    Begin(Box<BackendStatus>),
    /// `spec.abort`: undo one in-flight backend (put it back, or leave it out and say why).
    Undo { pod: String, action: Cleanup },
    /// `spec.abort` and nothing left to undo.
    Aborted { message: String, left_out: bool },
    /// `spec.dryRun`: the plan, for status; nothing runs.
    DryRun(Box<RolloutPlan>),
    /// Run the recorded step of one backend.
    Run {
        pod: String,
        step: Step,
        /// WaitSessions only: users still mapped when the ceiling was reached.
        ceiling_users: Option<u64>,
    },
}

/// How a step ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    /// Done; move to the next step.
    Advanced {
        message: Option<String>,
        new_ip: Option<String>,
        /// StopDovecot: the UID of the pod it stopped.
        stopped_uid: Option<String>,
    },
    /// Not done yet; run it again later.
    Waiting { requeue: Duration, message: String },
    /// The world moved under the step (e.g. Dovecot running again before Reset): go back.
    Rewind { to: Step, message: String },
    /// The step failed; the backend stays out of the ring and the rollout halts.
    Failed(StepError),
    /// The command could not be run (connection dropped, timeout): back off and retry.
    Transient { error: StepError },
}

/// Transient failures of one step before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 5;

pub fn elapsed(since: &Time, now: Timestamp) -> Duration {
    let d = now.duration_since(since.0);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// `now + d`, saturating at the far future instead of panicking.
pub fn after(now: Timestamp, d: Duration) -> Timestamp {
    k8s_openapi::jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Backoff for transient failures: 2s, 4s, 8s ... capped at 2 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.clamp(1, 7)).min(120))
}

fn ip_of(rec: &BackendStatus) -> Option<std::net::IpAddr> {
    dovecot::validate_ip(&rec.ip).ok()
}

/// A record that still holds a backend out of, or partly out of, the ring.
pub fn active(rec: &BackendStatus) -> bool {
    rec.step != Step::Done
}

/// Ring state the director must show for a record, or None when nothing is asserted.
/// Only state that is *more available* than desired is drift: it would send users to a backend
/// that is stopped or about to be.
fn drift_commands(s: &Settings, rec: &BackendStatus, host: &RingHost) -> Vec<Vec<String>> {
    let Some(ip) = ip_of(rec) else {
        return Vec::new();
    };
    let must_be_down = matches!(rec.step, Step::Reset | Step::Replace | Step::Verify)
        || (rec.step == Step::RingRemove && rec.failed);
    let must_be_drained = matches!(
        rec.step,
        Step::WaitSessions | Step::StopLmtp | Step::StopDovecot | Step::RingRemove
    ) || must_be_down;
    let mut cmds = Vec::new();
    if must_be_drained && host.vhosts != 0 {
        cmds.push(s.director.director_update(ip, 0));
    }
    if must_be_down && host.up {
        cmds.push(s.director.director_down(ip));
    }
    if must_be_down && !cmds.is_empty() {
        // users may have been mapped to the stopped backend while the director forgot it
        cmds.push(s.director.director_flush(ip));
    }
    cmds
}

/// The drift of every active record, first one first.
pub fn ring_drift(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    ring: &[RingHost],
) -> Option<(String, Vec<Vec<String>>)> {
    status
        .backends
        .iter()
        .filter(|r| active(r))
        .find_map(|rec| {
            let host = ring.iter().find(|h| h.ip == rec.ip)?;
            let cmds = drift_commands(s, rec, host);
            (!cmds.is_empty()).then(|| (rec.pod.clone(), cmds))
        })
}

/// Outdated pods not skipped by the spec, in upgrade order: with `FewestUsers`, fewest users
/// mapped in the director first (pods without a ring entry last); ties, and `Ordinal`, highest
/// ordinal first as the StatefulSet controller would roll them.
pub fn outdated<'a>(
    s: &Settings,
    pods: &'a [PodView],
    target: &str,
    ring: Option<&[RingHost]>,
) -> Vec<&'a PodView> {
    let mut v: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(target) && !s.skip.contains(&p.name))
        .collect();
    // one map, not a ring scan per pod: decisions over 1,000 backends stay linear
    let by_ip: std::collections::HashMap<&str, u64> = ring
        .into_iter()
        .flatten()
        .map(|h| (h.ip.as_str(), h.users))
        .collect();
    let users = |p: &PodView| -> u64 {
        if s.ordering == Ordering::Ordinal {
            return 0;
        }
        p.ip.as_deref()
            .and_then(|ip| by_ip.get(ip).copied())
            .unwrap_or(u64::MAX)
    };
    v.sort_by_key(|p| (users(p), std::cmp::Reverse(ordinal(&p.name))));
    v
}

fn ordinal(name: &str) -> (u64, String) {
    let n = name
        .rsplit('-')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (n, name.to_string())
}

/// `updated/total`: pods at the target revision, Ready and not held by a record.
pub fn progress(status: &DovecotBackendUpgradeStatus, obs: &Observed, target: &str) -> String {
    let total = obs
        .sts
        .as_ref()
        .map(|s| s.replicas.max(0) as usize)
        .unwrap_or(0)
        .max(obs.pods.len());
    let done = obs
        .pods
        .iter()
        .filter(|p| {
            p.revision.as_deref() == Some(target)
                && p.ready
                && !status.backends.iter().any(|r| r.pod == p.name && active(r))
        })
        .count();
    format!("{done}/{total}")
}

/// When the target revision changes, finished records of the old target are dropped; records
/// still in flight or failed are kept, because they hold backends out of the ring.
pub fn retarget(status: &mut DovecotBackendUpgradeStatus, target: &str) {
    if status.target_revision.as_deref() != Some(target) {
        status.backends.retain(active);
        status.target_revision = Some(target.to_string());
    }
}

/// An observation a decision needs before it can stand; the engine reads it and decides again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// `director status`: every decision about in-flight or new backends.
    Ring,
    /// `director ring status`: only before draining a backend, or for a dry-run plan's guard.
    RingSync,
}

/// What `decision` still needs read; None when it stands as it is. Reads are lazy so that a
/// finished or stalled rollout, woken by every pod event, costs no exec.
pub fn missing(decision: &Decision, obs: &Observed) -> Option<Missing> {
    match decision {
        Decision::Wait {
            reason: "RingUnreadable",
            ..
        } if obs.ring.is_none() => Some(Missing::Ring),
        Decision::Begin(_) | Decision::DryRun(_) if obs.ring_synced.is_none() => {
            Some(Missing::RingSync)
        }
        _ => None,
    }
}

/// World checks that stall before any exec: run before the ring is even read.
pub fn check_world<'a>(s: &Settings, obs: &'a Observed) -> Result<&'a StsView, Decision> {
    let Some(sts) = &obs.sts else {
        return Err(Decision::Stall {
            reason: "StatefulSetNotFound",
            message: format!("StatefulSet {:?} does not exist", s.stateful_set),
        });
    };
    if sts.update_strategy != "OnDelete" {
        return Err(Decision::Stall {
            reason: "UpdateStrategyNotOnDelete",
            message: format!(
                "StatefulSet {:?} uses updateStrategy {}; set it to OnDelete so that only this operator replaces backend pods",
                s.stateful_set, sts.update_strategy
            ),
        });
    }
    if let Some(other) = &obs.owned_by_other {
        return Err(Decision::Stall {
            reason: "StatefulSetClaimed",
            message: format!(
                "DovecotBackendUpgrade {other:?} already manages StatefulSet {:?}",
                s.stateful_set
            ),
        });
    }
    if !obs.director_overlap.is_empty() {
        return Err(Decision::Stall {
            reason: "DirectorSelectorMatchesBackends",
            message: format!(
                "spec.director.selector matches backend pods {:?}",
                obs.director_overlap
            ),
        });
    }
    Ok(sts)
}

/// The next action. Order: validity, ring drift, failures, pause, in-flight work, new work.
pub fn decide(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    now: Timestamp,
) -> Decision {
    let sts = match check_world(s, obs) {
        Ok(sts) => sts,
        Err(stall) => return stall,
    };
    let Some(target) = sts.update_revision.as_deref() else {
        return Decision::Wait {
            reason: "WaitingForRevision",
            message: "StatefulSet has no status.updateRevision yet".into(),
            requeue: Duration::from_secs(5),
        };
    };
    let any_active = status.backends.iter().any(active);
    let todo = outdated(s, &obs.pods, target, obs.ring.as_deref());
    if !any_active && todo.is_empty() && obs.pods.len() as i32 >= sts.replicas {
        if obs.pods.iter().all(|p| p.ready) {
            return Decision::Complete;
        }
        return Decision::Wait {
            reason: "WaitingForPods",
            message: "all backends are at the target revision; waiting for them to be Ready".into(),
            requeue: Duration::from_secs(5),
        };
    }
    let Some(director) = &obs.director else {
        return Decision::Wait {
            reason: "NoReadyDirector",
            message: "no Ready director pod matches spec.director.selector".into(),
            requeue: Duration::from_secs(10),
        };
    };
    let Some(ring) = &obs.ring else {
        return Decision::Wait {
            reason: "RingUnreadable",
            message: format!("could not read director status from {director}"),
            requeue: Duration::from_secs(10),
        };
    };
    if let Some((pod, commands)) = ring_drift(s, status, ring) {
        return Decision::Reassert { pod, commands };
    }
    if s.dry_run {
        return Decision::DryRun(Box::new(dry_run(s, status, obs, ring, target, now)));
    }
    if s.abort {
        return abort(status);
    }
    if let Some(f) = status.backends.iter().find(|r| r.failed) {
        return Decision::Stall {
            reason: "BackendFailed",
            message: failure_message(f),
        };
    }
    if s.paused {
        return Decision::Wait {
            reason: "Paused",
            message: "spec.paused is true; no step starts until it is false".into(),
            requeue: Duration::from_secs(60),
        };
    }
    // in-flight backends first, in record order
    let mut soonest: Option<(Duration, String)> = None;
    for rec in status.backends.iter().filter(|r| active(r)) {
        match in_flight(s, rec, obs, ring, now) {
            Ok(d) => return d,
            Err((wait, msg)) => {
                if soonest.as_ref().is_none_or(|(w, _)| wait < *w) {
                    soonest = Some((wait, msg));
                }
            }
        }
    }
    let in_flight_n = status.backends.iter().filter(|r| active(r)).count();
    if in_flight_n < s.max_unavailable
        && let Some(d) = begin_next(s, status, obs, &todo, ring, target, now)
    {
        return d;
    }
    match soonest {
        Some((requeue, message)) => Decision::Wait {
            reason: "StepInProgress",
            message,
            requeue,
        },
        None => Decision::Wait {
            reason: "WaitingForBackends",
            message: "no outdated backend can start yet".into(),
            requeue: Duration::from_secs(10),
        },
    }
}

/// A record's next move, or how long until it has one.
fn in_flight(
    s: &Settings,
    rec: &BackendStatus,
    obs: &Observed,
    ring: &[RingHost],
    now: Timestamp,
) -> Result<Decision, (Duration, String)> {
    let run = |ceiling_users| {
        Ok(Decision::Run {
            pod: rec.pod.clone(),
            step: rec.step,
            ceiling_users,
        })
    };
    if let Some(at) = &rec.retry_after
        && at.0 > now
    {
        let wait = Duration::try_from(at.0.duration_since(now)).unwrap_or(Duration::ZERO);
        return Err((
            wait,
            format!("{}: retrying {} after a transient error", rec.pod, rec.step),
        ));
    }
    match rec.step {
        Step::WaitSessions => {
            let users = ring.iter().find(|h| h.ip == rec.ip).map_or(0, |h| h.users);
            let waited = elapsed(&rec.step_started, now);
            if users == 0 {
                run(None)
            } else if waited >= s.drain_timeout {
                run(Some(users))
            } else {
                let left = s.drain_timeout - waited;
                Err((
                    s.poll_interval.min(left),
                    format!("{}: {users} users still mapped to {}", rec.pod, rec.ip),
                ))
            }
        }
        Step::Replace | Step::Verify | Step::RingRestore => {
            // these act on the replaced pod; it must exist to be looked at
            if rec.step != Step::Replace
                && !obs
                    .pods
                    .iter()
                    .any(|p| p.name == rec.pod && p.ready && !p.terminating)
            {
                return Err((
                    Duration::from_secs(5),
                    format!("{}: waiting for the pod to be Ready", rec.pod),
                ));
            }
            run(None)
        }
        _ => run(None),
    }
}

fn wait(reason: &'static str, message: String, requeue: Duration) -> Option<Decision> {
    Some(Decision::Wait {
        reason,
        message,
        requeue,
    })
}

/// `spec.abort`: the first in-flight backend that still needs undoing, else the end state.
fn abort(status: &DovecotBackendUpgradeStatus) -> Decision {
    if let Some(rec) = status.backends.iter().find(|r| active(r) && !r.failed) {
        return Decision::Undo {
            pod: rec.pod.clone(),
            action: cleanup_for(rec),
        };
    }
    let out: Vec<String> = status
        .backends
        .iter()
        .filter(|r| active(r))
        .map(|r| format!("{} (at {})", r.pod, r.step))
        .collect();
    if out.is_empty() {
        Decision::Aborted {
            message: "rollout aborted (spec.abort); no backend is drained; set spec.abort=false to resume".into(),
            left_out: false,
        }
    } else {
        Decision::Aborted {
            message: format!(
                "rollout aborted (spec.abort); kept out of the director ring because Dovecot was already stopped or a step failed: {}; fix by hand, or set spec.abort=false and annotate {RETRY_ANNOTATION} to finish them",
                out.join(", ")
            ),
            left_out: true,
        }
    }
}

/// Whether a backend already runs the target revision outside any record: the canary is done.
fn canary_done(status: &DovecotBackendUpgradeStatus, obs: &Observed, target: &str) -> bool {
    obs.pods.iter().any(|p| {
        p.revision.as_deref() == Some(target)
            && p.ready
            && !status.backends.iter().any(|r| r.pod == p.name && active(r))
    })
}

/// Gates on starting any backend now: approval, window, time left. None: go.
fn start_gate(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    target: &str,
    now: Timestamp,
) -> Option<Decision> {
    if s.supervised
        && !s.approved_revisions.iter().any(|r| r == target)
        && canary_done(status, obs, target)
    {
        return wait(
            "AwaitingApproval",
            format!(
                "canary upgraded to revision {target}; check it, then approve: set spec.canary.approvedRevision={target} or annotate {APPROVE_ANNOTATION}={target}"
            ),
            Duration::from_secs(300),
        );
    }
    if let Some(w) = &s.window {
        let predicted = crate::window::predict(&status.recent_backend_seconds, s.drain_timeout);
        match w.at(now) {
            crate::window::WindowState::Closed { opens_in } => {
                return wait(
                    "OutsideMaintenanceWindow",
                    format!(
                        "outside the maintenance window; it opens in {}",
                        human(opens_in)
                    ),
                    opens_in.clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                );
            }
            crate::window::WindowState::Open { remaining } if predicted > remaining => {
                return wait(
                    "WindowTooShort",
                    format!(
                        "a backend is predicted to take {}, but the maintenance window closes in {}; waiting for the next one",
                        human(predicted),
                        human(remaining)
                    ),
                    remaining.clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                );
            }
            crate::window::WindowState::Open { .. } => {}
        }
    }
    None
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn begin_next(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    todo: &[&PodView],
    ring: &[RingHost],
    target: &str,
    now: Timestamp,
) -> Option<Decision> {
    let busy: Vec<&str> = status
        .backends
        .iter()
        .filter(|r| active(r))
        .map(|r| r.pod.as_str())
        .collect();
    let busy_ips: Vec<&str> = status
        .backends
        .iter()
        .filter(|r| active(r))
        .map(|r| r.ip.as_str())
        .collect();
    let startable: Vec<&&PodView> = todo
        .iter()
        .filter(|p| !busy.contains(&p.name.as_str()) && !p.terminating)
        .collect();
    let Some(candidate) = startable.iter().find(|p| !s.hold.contains(&p.name)) else {
        let held: Vec<&str> = startable.iter().map(|p| p.name.as_str()).collect();
        if held.is_empty() {
            return None;
        }
        return wait(
            "BackendHeld",
            format!(
                "remaining backends are held by spec.hold: {}",
                held.join(", ")
            ),
            Duration::from_secs(300),
        );
    };
    if let Some(gate) = start_gate(s, status, obs, target, now) {
        return Some(gate);
    }
    if !candidate.ready {
        return Some(Decision::Wait {
            reason: "BackendNotReady",
            message: format!(
                "outdated backend {} is not Ready; waiting before draining it",
                candidate.name
            ),
            requeue: Duration::from_secs(10),
        });
    }
    let Some(ip) = candidate
        .ip
        .as_deref()
        .filter(|ip| dovecot::validate_ip(ip).is_ok())
    else {
        return Some(Decision::Wait {
            reason: "BackendWithoutIP",
            message: format!("backend {} has no pod IP yet", candidate.name),
            requeue: Duration::from_secs(5),
        });
    };
    let Some(host) = ring.iter().find(|h| h.ip == ip) else {
        return Some(Decision::Stall {
            reason: "BackendNotInRing",
            message: format!(
                "backend {} ({ip}) is not a host of the director ring; add it (doveadm director add) or fix director_mail_servers",
                candidate.name
            ),
        });
    };
    // capacity guard: enough others must stay up to take the users
    let others = ring
        .iter()
        .filter(|h| h.ip != ip && h.up && h.vhosts > 0 && !busy_ips.contains(&h.ip.as_str()))
        .count();
    if others < s.min_available {
        return wait(
            "InsufficientRingCapacity",
            format!(
                "draining {} would leave {others} other up backends with vhosts > 0 in the ring; spec.minAvailableBackends is {}",
                candidate.name, s.min_available
            ),
            Duration::from_secs(30),
        );
    }
    if obs.ring_synced == Some(false) {
        return wait(
            "RingNotSynced",
            "the director ring is not synced (doveadm director ring status); no backend is drained until it is".into(),
            Duration::from_secs(10),
        );
    }
    // A backend found already drained (vhosts 0) by someone else keeps no count to restore;
    // use the previous record's count when this pod had one, else refuse to guess.
    let original = if host.vhosts > 0 {
        host.vhosts
    } else if let Some(prev) = status.backends.iter().find(|r| r.pod == candidate.name) {
        prev.original_vhosts
    } else {
        return Some(Decision::Stall {
            reason: "BackendAlreadyDrained",
            message: format!(
                "backend {} ({ip}) has vhost count 0 in the ring before the rollout touched it; set its intended count with doveadm director update",
                candidate.name
            ),
        });
    };
    Some(Decision::Begin(Box::new(BackendStatus {
        pod: candidate.name.clone(),
        ip: ip.to_string(),
        new_ip: None,
        from_revision: candidate.revision.clone(),
        step: Step::Drain,
        step_started: Time(now),
        original_vhosts: original,
        attempts: 0,
        retry_after: None,
        stopped_pod_uid: None,
        failed: false,
        message: None,
        last_error: None,
        started: Some(Time(now)),
    })))
}

/// Finished records kept in status; older ones are dropped (progress counts pods, not records),
/// so the status of a rollout over 1,000 backends stays small.
pub const DONE_KEPT: usize = 10;

/// Drops all but the newest `DONE_KEPT` finished records. Records in flight or failed are kept:
/// they hold backends out of the ring.
pub fn compact(status: &mut DovecotBackendUpgradeStatus) {
    let done = status.backends.iter().filter(|r| !active(r)).count();
    let mut extra = done.saturating_sub(DONE_KEPT);
    status.backends.retain(|r| {
        if extra > 0 && !active(r) {
            extra -= 1;
            return false;
        }
        true
    });
}

/// Records a finished backend's duration for the window prediction.
pub fn record_finish(status: &mut DovecotBackendUpgradeStatus, pod: &str, now: Timestamp) {
    let Some(started) = status
        .backends
        .iter()
        .find(|r| r.pod == pod && r.step == Step::Done)
        .and_then(|r| r.started.clone())
    else {
        return;
    };
    crate::window::remember(&mut status.recent_backend_seconds, elapsed(&started, now));
}

/// The commands each step would run for one backend, as the engine runs them.
pub fn steps_for(s: &Settings, pod: &str, ip: std::net::IpAddr, vhosts: u32) -> Vec<PlannedStep> {
    let d = &s.director;
    let b = &s.backend;
    let step = |step, target: &str, commands: Vec<Vec<String>>, note: Option<String>| PlannedStep {
        step,
        target: target.into(),
        commands,
        note,
    };
    vec![
        step(
            Step::Drain,
            "director",
            vec![d.director_update(ip, 0)],
            None,
        ),
        step(
            Step::WaitSessions,
            "director",
            vec![d.director_status(), b.who()],
            Some(format!(
                "poll every {:?} until the director maps no users to {ip} and who shows no sessions on {pod} (who runs on the backend); at most {:?}, then {:?}",
                s.poll_interval, s.drain_timeout, s.on_drain_timeout
            )),
        ),
        step(Step::StopLmtp, "backend", vec![b.service_stop_lmtp()], None),
        step(
            Step::StopDovecot,
            "backend",
            vec![b.stop(), dovecot::read_master_pid(&s.base_dir)],
            Some(format!(
                "then wait up to {:?} for the master process to exit",
                s.stop_timeout
            )),
        ),
        step(
            Step::RingRemove,
            "director",
            vec![d.director_down(ip), d.director_flush(ip)],
            None,
        ),
        step(
            Step::Reset,
            "backend",
            s.reset.clone(),
            Some("only after master.pid shows Dovecot stopped".into()),
        ),
        step(
            Step::Replace,
            "backend",
            Vec::new(),
            Some(format!(
                "delete pod {pod}; wait up to {:?} for it to be Ready at the target revision",
                s.replace_timeout
            )),
        ),
        step(
            Step::Verify,
            "backend",
            vec![
                b.mailbox_list(&s.user),
                b.mailbox_status(&s.user, &s.mailbox),
                b.fetch_text(&s.user, &s.mailbox),
            ],
            None,
        ),
        step(
            Step::RingRestore,
            "director",
            vec![d.director_update(ip, vhosts), d.director_up(ip)],
            Some("with director add <new ip> / remove <old ip> first if the pod IP changed".into()),
        ),
    ]
}

/// Most backends listed in a status plan.
pub const PLAN_LIMIT: usize = 100;

/// What the rollout would do from here, without doing it.
pub fn dry_run(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    ring: &[RingHost],
    target: &str,
    now: Timestamp,
) -> RolloutPlan {
    let todo = outdated(s, &obs.pods, target, Some(ring));
    let order: Vec<PlannedBackend> = todo
        .iter()
        .filter(|p| !s.hold.contains(&p.name))
        .map(|p| {
            let host = ring.iter().find(|h| Some(h.ip.as_str()) == p.ip.as_deref());
            // an in-flight backend is drained already: its count to restore is the recorded one
            let recorded = status
                .backends
                .iter()
                .find(|r| r.pod == p.name && active(r));
            PlannedBackend {
                pod: p.name.clone(),
                ip: p.ip.clone(),
                users: host.map_or(0, |h| h.users as i64),
                vhosts: recorded.map_or_else(
                    || host.map_or(0, |h| i64::from(h.vhosts)),
                    |r| i64::from(r.original_vhosts),
                ),
            }
        })
        .collect();
    let steps = order
        .first()
        .and_then(|p| {
            let ip = dovecot::validate_ip(p.ip.as_deref()?).ok()?;
            Some(steps_for(s, &p.pod, ip, p.vhosts as u32))
        })
        .unwrap_or_default();
    let blocked = match begin_next(s, status, obs, &todo, ring, target, now) {
        Some(Decision::Wait { message, .. }) | Some(Decision::Stall { message, .. }) => {
            Some(message)
        }
        _ => None,
    };
    let more = order.len().saturating_sub(PLAN_LIMIT) as i64;
    RolloutPlan {
        order: order.into_iter().take(PLAN_LIMIT).collect(),
        more,
        steps,
        blocked,
    }
}

/// The decision the conditions should describe once an action ran: a step that just failed
/// turns the rollout Stalled at once, without waiting for the next pass to decide it.
/// Likewise the last backend's RingRestore settles as Complete when the world already is, so
/// the final step and the completion share one status patch.
pub fn settled(
    s: &Settings,
    decision: &Decision,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    now: Timestamp,
) -> Decision {
    match decision {
        Decision::Run { .. } | Decision::Begin(_) => {
            if let Some(f) = status.backends.iter().find(|r| r.failed) {
                return Decision::Stall {
                    reason: "BackendFailed",
                    message: failure_message(f),
                };
            }
            if !status.backends.iter().any(active)
                && decide(s, status, obs, now) == Decision::Complete
            {
                return Decision::Complete;
            }
            decision.clone()
        }
        d => d.clone(),
    }
}

/// The one-line story of a failed backend, for the Stalled condition and the Warning event.
pub fn failure_message(rec: &BackendStatus) -> String {
    match &rec.last_error {
        Some(e) => format!(
            "backend {} ({}) failed at step {}: command {:?} exited {}: {}; it stays out of the director ring",
            rec.pod,
            rec.ip,
            e.step,
            e.argv.join(" "),
            e.exit_code.map_or("-".to_string(), |c| c.to_string()),
            e.stderr.trim()
        ),
        None => format!(
            "backend {} ({}) failed at step {}",
            rec.pod, rec.ip, rec.step
        ),
    }
}

/// Folds a step's result into the record. Returns the events it implies.
pub fn apply_result(rec: &mut BackendStatus, result: &StepResult, now: Timestamp) -> Vec<Note> {
    let ran = rec.step;
    let notes = fold_result(rec, result, now);
    // "started" notes are about the next step, all others about the one that ran
    let pod = rec.pod.clone();
    notes
        .into_iter()
        .map(|n| {
            let s = if n.reason == "StepStarted" {
                rec.step
            } else {
                ran
            };
            n.about(&pod, s)
        })
        .collect()
}

fn fold_result(rec: &mut BackendStatus, result: &StepResult, now: Timestamp) -> Vec<Note> {
    let step = rec.step;
    match result {
        StepResult::Advanced {
            message,
            new_ip,
            stopped_uid,
        } => {
            if let Some(ip) = new_ip {
                rec.new_ip = (ip != &rec.ip).then(|| ip.clone());
            }
            if stopped_uid.is_some() {
                rec.stopped_pod_uid = stopped_uid.clone();
            }
            rec.step = step.next();
            rec.step_started = Time(now);
            rec.attempts = 0;
            rec.retry_after = None;
            rec.last_error = None;
            if message.is_some() {
                rec.message = message.clone();
            }
            let mut notes = vec![Note::normal(
                "StepSucceeded",
                format!(
                    "{}: {step} done{}",
                    rec.pod,
                    message
                        .as_ref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
            )];
            notes.push(if rec.step == Step::Done {
                Note::normal(
                    "BackendUpgraded",
                    format!("{}: upgraded and back in the ring", rec.pod),
                )
            } else {
                Note::normal("StepStarted", format!("{}: {} started", rec.pod, rec.step))
            });
            notes
        }
        StepResult::Waiting { message, .. } => {
            rec.message = Some(message.clone());
            Vec::new()
        }
        StepResult::Rewind { to, message } => {
            rec.step = *to;
            rec.step_started = Time(now);
            rec.attempts = 0;
            rec.retry_after = None;
            rec.message = Some(message.clone());
            vec![Note::warning(
                "StepRewound",
                format!("{}: {message}; back to {to}", rec.pod),
            )]
        }
        StepResult::Failed(e) => {
            rec.failed = true;
            rec.last_error = Some(e.clone());
            rec.attempts += 1;
            vec![Note::warning("StepFailed", failure_message(rec))]
        }
        StepResult::Transient { error } => {
            rec.attempts += 1;
            rec.last_error = Some(error.clone());
            rec.retry_after = Some(Time(after(now, backoff(rec.attempts))));
            if rec.attempts >= MAX_ATTEMPTS {
                rec.failed = true;
                vec![Note::warning("StepFailed", failure_message(rec))]
            } else {
                vec![Note::warning(
                    "StepRetrying",
                    format!(
                        "{}: {step} attempt {} failed transiently: {}",
                        rec.pod,
                        rec.attempts,
                        error.stderr.trim()
                    ),
                )]
            }
        }
    }
}

/// An Event to publish (the controller) or print (the local demo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    /// The backend pod it is about (the Event's related object).
    pub pod: Option<String>,
    /// The step it is about (the Event's action).
    pub step: Option<Step>,
}

impl Note {
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self {
            warning: false,
            reason,
            message,
            pod: None,
            step: None,
        }
    }
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self {
            warning: true,
            ..Self::normal(reason, message)
        }
    }
    /// Ties the note to a backend and step, so that Events of different steps stay apart.
    pub fn about(mut self, pod: &str, step: Step) -> Self {
        self.pod = Some(pod.to_string());
        self.step = Some(step);
        self
    }
}

/// WaitSessions' outcome once the plan says to run it.
pub fn drain_outcome(
    ceiling_users: Option<u64>,
    live_sessions: usize,
    on_timeout: DrainTimeoutAction,
    poll: Duration,
    step_error: impl FnOnce(String) -> StepError,
) -> StepResult {
    match ceiling_users {
        None if live_sessions == 0 => StepResult::Advanced {
            message: Some("no users left".into()),
            new_ip: None,
            stopped_uid: None,
        },
        None => StepResult::Waiting {
            requeue: poll,
            message: format!(
                "director shows no users, but {live_sessions} sessions still run on the backend"
            ),
        },
        Some(n) => match on_timeout {
            DrainTimeoutAction::Proceed => StepResult::Advanced {
                message: Some(format!(
                    "drain ceiling reached with {n} users mapped; down + flush will move them"
                )),
                new_ip: None,
                stopped_uid: None,
            },
            DrainTimeoutAction::Fail => StepResult::Failed(step_error(format!(
                "drain ceiling reached with {n} users still mapped (spec.drain.onTimeout=Fail)"
            ))),
        },
    }
}

/// Replace's next move for the pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceMove {
    /// Still the old pod: delete it.
    Delete,
    /// Terminating, missing, or not Ready yet.
    Wait(String),
    /// Recreated at the target revision and Ready, with this IP.
    Done(String),
    TimedOut(String),
}

/// `stopped_uid` is the pod whose Dovecot StopDovecot stopped: nothing will start it again, so it
/// is deleted even when it already runs the target revision (e.g. it was recreated behind our back).
pub fn replace_move(
    pod: Option<&PodView>,
    target: &str,
    stopped_uid: Option<&str>,
    waited: Duration,
    timeout: Duration,
) -> ReplaceMove {
    match pod {
        Some(p) if !p.terminating && p.uid.is_some() && p.uid.as_deref() == stopped_uid => {
            ReplaceMove::Delete
        }
        Some(p) if p.revision.as_deref() == Some(target) && p.ready && !p.terminating => {
            match p
                .ip
                .as_deref()
                .filter(|ip| dovecot::validate_ip(ip).is_ok())
            {
                Some(ip) => ReplaceMove::Done(ip.to_string()),
                None => ReplaceMove::Wait(format!("{}: Ready but without an IP", p.name)),
            }
        }
        Some(p) if p.revision.as_deref() != Some(target) && !p.terminating => ReplaceMove::Delete,
        _ if waited >= timeout => ReplaceMove::TimedOut(format!(
            "pod not Ready at revision {target} within {timeout:?}"
        )),
        Some(p) if p.terminating => ReplaceMove::Wait(format!("{}: terminating", p.name)),
        Some(p) => ReplaceMove::Wait(format!(
            "{}: waiting for Ready at revision {target}",
            p.name
        )),
        None => ReplaceMove::Wait("waiting for the StatefulSet to recreate the pod".into()),
    }
}

/// Annotation whose new value asks to retry failed backends (works from Git, unlike a status edit).
pub const RETRY_ANNOTATION: &str = "mailops.io/retry";

/// Annotation naming the target revision a human approved after the canary.
pub const APPROVE_ANNOTATION: &str = "mailops.io/approve";

/// Honors a new retry token: failed backends run again. One whose pod is not at the target
/// revision after Replace (e.g. the config was fixed by a newer revision) goes back to StopLmtp,
/// so the runbook runs again from the stop: nothing is reused from the failed pod.
pub fn apply_retry(
    status: &mut DovecotBackendUpgradeStatus,
    token: Option<&str>,
    obs: &Observed,
    now: Timestamp,
) -> Vec<Note> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    if status.retry_token.as_deref() == Some(token) {
        return Vec::new();
    }
    status.retry_token = Some(token.to_string());
    let target = obs.sts.as_ref().and_then(|s| s.update_revision.as_deref());
    let mut notes = Vec::new();
    for rec in status.backends.iter_mut().filter(|r| r.failed) {
        let pod_rev = obs
            .pods
            .iter()
            .find(|p| p.name == rec.pod)
            .and_then(|p| p.revision.as_deref());
        let from = rec.step;
        if rec.step >= Step::Replace && pod_rev != target {
            rec.step = Step::StopLmtp;
        }
        rec.failed = false;
        rec.attempts = 0;
        rec.retry_after = None;
        rec.step_started = Time(now);
        rec.message = Some(format!("retry requested ({RETRY_ANNOTATION}={token})"));
        notes.push(Note::normal(
            "RetryRequested",
            format!("{}: retrying from {} (failed at {from})", rec.pod, rec.step),
        ));
    }
    notes
}

/// What deleting the DBU does to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Dovecot still runs: put it back at its original vhost count and up (reload re-opens LMTP).
    Restore,
    /// Restore only if Dovecot is found running (StopDovecot may or may not have acted).
    RestoreIfRunning,
    /// Leave it out of the ring and say so.
    LeaveOut(String),
    /// Nothing to do.
    Nothing,
}

pub fn cleanup_for(rec: &BackendStatus) -> Cleanup {
    if rec.failed {
        return Cleanup::LeaveOut(format!(
            "{}: failed at {}; left out of the ring for a human to check",
            rec.pod, rec.step
        ));
    }
    match rec.step {
        Step::Drain | Step::WaitSessions | Step::StopLmtp => Cleanup::Restore,
        Step::StopDovecot => Cleanup::RestoreIfRunning,
        Step::RingRemove | Step::Reset | Step::Replace | Step::Verify => {
            Cleanup::LeaveOut(format!(
                "{}: deleted at step {}, after Dovecot was stopped; left out of the ring (restore by hand with doveadm director update <ip> {} and director up <ip>)",
                rec.pod, rec.step, rec.original_vhosts
            ))
        }
        // verified already: finishing the restore is the safe thing
        Step::RingRestore => Cleanup::Restore,
        Step::Done => Cleanup::Nothing,
    }
}

#[cfg(test)]
mod tests;
