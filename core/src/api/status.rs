//! The status of the `DovecotBackendUpgrade` resource: the rollout's phase, plan and conditions,
//! and one record per backend in flight or done.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::is_zero;
use super::step::Step;

/// Observed state of a rollout.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DovecotBackendUpgradeStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, in kstatus style.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Summary for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Backends at the target revision over all backends, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The StatefulSet's update revision this rollout moves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// The backend pod in flight (first one when several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The step of `current`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// Users the director still maps to `current` while it drains (`kubectl get dbu`'s Users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub drain_users: Option<u64>,
    /// One record per backend this rollout has started.
    #[serde(default)]
    pub backends: Vec<BackendStatus>,
    /// The last `mailops.io/retry` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,
    /// Seconds the last backends took from Drain to Done (newest last, at most 5): the basis of
    /// the maintenance-window prediction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "integer", "format": "int64"}))]
    pub recent_backend_seconds: Vec<u32>,
    /// Since when `spec.paused` holds in-flight backends; when the pause ends their step clocks
    /// (drain ceiling, stop and replace timeouts) move on by its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<Time>,
    /// With `spec.dryRun`: what the rollout would do, without doing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RolloutPlan>,
    /// Backend pods this DBU has registered in its DovecotRing's record of who is out (shared
    /// by every DBU of the ring): a backend is drained only once it is registered there, and
    /// it is released after it is back. Written after the ring, so a restart re-syncs it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub ring_held: Vec<String>,
    /// Since when this DBU waits for a slot of its ring (`RingBusy`): slots go to the DBUs of a
    /// ring in the order of this time, so a waiting DBU gets the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_waiting_since: Option<Time>,
    /// How many times the operator wrote this status. It remembers the last number it wrote
    /// and never decides from a copy with a smaller one (a watch that resumed from an old
    /// version): status is its only memory.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int64"))]
    pub write_seq: u64,
}

/// The dry-run plan: backend order, and the exact commands for the first backends.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// Outdated backends in the order they would start (at most 100 listed).
    pub order: Vec<PlannedBackend>,
    /// Outdated backends not listed in `order` because of the cap.
    #[serde(default)]
    pub more: i64,
    /// Commands of each step for the first backend of `order`; the others differ only by pod
    /// and IP.
    pub steps: Vec<PlannedStep>,
    /// Why nothing could start now, if so (guard, window, hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// One backend in the plan.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedBackend {
    /// Backend pod name.
    pub pod: String,
    /// Its pod IP: its host entry in the director ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Users mapped to it in the director.
    pub users: i64,
    /// Its vhost count in the ring, restored at the end.
    pub vhosts: i64,
}

/// One step's commands in the plan.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    pub step: Step,
    /// `director` or `backend`: the pod the commands are exec'd in.
    pub target: String,
    /// argv arrays, run without a shell; empty for steps that are Kubernetes calls or waits.
    pub commands: Vec<Vec<String>>,
    /// What the step does besides commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Rollout phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Paused,
    Completed,
    Failed,
    /// `spec.abort`: stopped, drained backends put back.
    Aborted,
    /// `spec.dryRun`: the plan is in `status.plan`; nothing ran.
    Planned,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Completed,
        Phase::Failed,
        Phase::Aborted,
        Phase::Planned,
    ];
}

/// Progress of one backend pod through the steps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// Pod name (stable across replacement in a StatefulSet).
    pub pod: String,
    /// Pod IP when the rollout of this backend started: its entry in the director ring.
    pub ip: String,
    /// Pod IP after replacement, when it differs from `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_ip: Option<String>,
    /// Revision the pod had when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    /// Why the backend is moved off its node (node maintenance: its node is cordoned or has a
    /// maintenance taint): its Replace recreates it on another node, at any revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relocation: Option<String>,
    /// The step intended or in progress; `Done` when finished.
    pub step: Step,
    /// When `step` was entered, moved later by any pause since (its timeouts do not count it).
    pub step_started: Time,
    /// The vhost count the backend had in the ring before Drain; restored by RingRestore.
    // Kubernetes knows int32/int64 formats only; "uint32" draws an API server warning
    #[schemars(extend("format" = "int64"))]
    pub original_vhosts: u32,
    /// Whether the backend was `up` in the ring before Drain. False: a human had taken it out
    /// (`director down`); it is upgraded but left down. Unset in older records: up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_up: Option<bool>,
    /// Failed attempts of the current step.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub attempts: u32,
    /// UID of the pod whose Dovecot StopDovecot stopped; Replace deletes that pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_pod_uid: Option<String>,
    /// UID of the pod Replace found Ready at the target revision: Verify, RingRestore and Soak
    /// act on that pod only; another pod under the name sends the backend back to Replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pod_uid: Option<String>,
    /// After a transient failure: not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// The token of Verify's probe message (its Message-ID), written before the message is
    /// delivered: only that message is ever expunged, also after an interrupted probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_token: Option<String>,
    /// The vhost count the entry at the pod's new IP had when RingRestore began there, where
    /// the DovecotRing's record said that entry stood for another pod (0 when it had none):
    /// written before the restore's first command, so that a count other than it, seen when
    /// the restore runs again, is known for a human's set after the restore's `add`, not the
    /// other pod's left over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seen: Option<u32>,
    /// A failure judged and written before the operator acts on it (a failed soak: why): the
    /// next pass drains the backend again and fails it. Written first so that a crash or a
    /// conflict in between repeats the drain and never takes the operator's own drain for a
    /// human's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
    /// Set when the backend failed and halted the rollout; it stays out of the ring.
    #[serde(default)]
    pub failed: bool,
    /// The pod is gone for good (the StatefulSet was scaled below its ordinal): the record is
    /// closed; its ring entry stays as it was (drained or down), for a human to remove.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Last thing worth knowing about this backend (e.g. users kicked at the drain ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last step failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<StepError>,
    /// When the backend started (Drain); with the time it reached Done this gives its duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// Where the backend keeps the verify user's mail, as Dovecot said before it was stopped
    /// (StopLmtp); Reset refuses to delete any of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_layout: Option<MailLayout>,
    /// Time spent in steps, without pauses, failures and waits for a retry (the maintenance
    /// window's prediction uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub active_seconds: Option<u64>,
    /// Of the current step's time, how much went to backoff after transient errors: not work,
    /// so not counted in `activeSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<u64>,
    /// WaitSessions' last look at the backend (kept once it is done, for the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
    /// The operator has wanted the backend down in the ring (RingRemove on, a failed soak, a
    /// left-out backend the ring kept down): a down seen from then on is not a human's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub downed: bool,
    /// Begun as a rejoin: the pod came back at a new IP outside a rollout of it, and nothing
    /// of it was stopped here (verified, then put in at its new IP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejoin: bool,
}

/// How far a backend's drain is, as WaitSessions last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainProgress {
    /// Users the director still maps to the backend.
    #[schemars(extend("format" = "int64"))]
    pub users_left: u64,
    /// Of those, users without a live session on the backend (strategy Move only; unknown
    /// with Wait, which does not look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub without_session: Option<u64>,
    /// Live sessions on the backend (`doveadm who -1`), when they were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub sessions: Option<u64>,
    /// IDLE or hibernated sessions moved to another backend so far (each one a reconnect): the
    /// sessions of the users moved with `director move`, which closes all of a user's sessions.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub sessions_moved: u64,
    /// Users moved without a session so far (by `director flush` with no session left).
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub users_moved: u64,
    /// Sessions a Move drain waits for because the backend's process titles do not show
    /// whether they sit in IDLE or run a command (`verbose_proctitle = no`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub unknown_sessions: Option<u64>,
    /// When the users mapped to the backend were last listed (`director map`, at most every
    /// 30 s: it iterates the userdb) to move those without a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_listed: Option<Time>,
    /// When the drain is expected to end: the ceiling while sessions nobody may move remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_end: Option<Time>,
    /// When this was seen.
    pub observed: Time,
}

/// The mail settings of one user on one backend: `doveadm user` fields, or the raw
/// `mail_location` and `mail_home` from doveconf when Dovecot could not be asked.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailLayout {
    /// The user the settings are for (`spec.verify.user`).
    pub user: String,
    /// The user's home (`doveadm user` field `home`, or `mail_home`); may be unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// The mail location (`doveadm user` field `mail`, or `mail_location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    /// Whether the values are expanded for the user (false: doveconf's `%u` templates).
    #[serde(default)]
    pub expanded: bool,
}

/// A failed command, bounded for status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepError {
    pub step: Step,
    /// The argv that failed (empty when the failure was not a command, e.g. a timeout).
    #[serde(default)]
    pub argv: Vec<String>,
    /// The command's exit code; absent when it did not run to an exit (timeout, dropped exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// First bytes of stderr, or the failure's description.
    #[serde(default)]
    pub stderr: String,
    /// The Stalled reason when it is more specific than BackendFailed (e.g.
    /// ResetWouldDeleteMailData).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl BackendStatus {
    /// Why the ring's record holds this backend out besides a rollout (`RingHolder::reason`).
    pub fn out_reason(&self) -> Option<String> {
        self.relocation
            .as_deref()
            .map(|why| format!("relocating for node maintenance ({why})"))
    }

    /// Whether the operator puts the backend `up` when it restores it: only if it was up before.
    pub fn restores_up(&self) -> bool {
        self.original_up != Some(false)
    }

    /// Records the pod a step left bound: StopDovecot's stopped pod (Replace deletes it),
    /// Replace's new one (every later step acts on it).
    pub fn bind_pod(&mut self, step: Step, uid: Option<&str>) {
        let Some(uid) = uid else { return };
        match step {
            Step::StopDovecot => self.stopped_pod_uid = Some(uid.to_string()),
            Step::Replace => self.new_pod_uid = Some(uid.to_string()),
            _ => {}
        }
    }

    /// A record of a backend that starts now, at Drain, keeping the vhost count to restore.
    pub fn begin(
        pod: &str,
        ip: &str,
        from_revision: Option<String>,
        original_vhosts: u32,
        now: Time,
    ) -> Self {
        Self {
            pod: pod.to_string(),
            ip: ip.to_string(),
            new_ip: None,
            from_revision,
            relocation: None,
            step: Step::Drain,
            step_started: now.clone(),
            original_vhosts,
            original_up: Some(true),
            attempts: 0,
            retry_after: None,
            stopped_pod_uid: None,
            new_pod_uid: None,
            probe_token: None,
            restore_seen: None,
            failing: None,
            failed: false,
            removed: false,
            message: None,
            last_error: None,
            started: Some(now),
            mail_layout: None,
            active_seconds: None,
            backoff_seconds: None,
            drain: None,
            downed: false,
            rejoin: false,
        }
    }
}

impl DrainProgress {
    /// A backend's first look at its drain: nothing moved yet.
    pub fn start(users_left: u64, observed: Time) -> Self {
        Self {
            users_left,
            without_session: None,
            sessions: None,
            sessions_moved: 0,
            users_moved: 0,
            unknown_sessions: None,
            users_listed: None,
            predicted_end: None,
            observed,
        }
    }
}
