//! The vocabulary of the machine: what a reconcile decides, and how an action ended.

use std::time::Duration;

use crate::api::{BackendStatus, MailLayout, RolloutPlan, Step, StepError};
use crate::dovecot::CommandKind;
use crate::reason::{StallReason, WaitReason};

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Cannot go on without a human; no exec. Stalled=True.
    Stall {
        reason: StallReason,
        message: String,
    },
    /// Nothing to do right now; look again later.
    Wait {
        reason: WaitReason,
        message: String,
        requeue: Duration,
    },
    /// Every backend is at the target revision. Ready=True.
    Complete,
    /// Re-apply ring state the director forgot (e.g. after a restart).
    Reassert {
        pod: String,
        commands: Vec<Vec<String>>,
        /// The director that shows the drift; None: the one commands go to.
        director: Option<String>,
    },
    /// Start a backend: record it at Drain with its original vhost count (status only).
    Begin(Box<BackendStatus>),
    /// `spec.abort`: undo one in-flight backend (put it back, or leave it out and say why).
    Undo { pod: String, action: Cleanup },
    /// `spec.abort` and nothing left to undo.
    Aborted { message: String, left_out: bool },
    /// `spec.dryRun`: the plan, for status; nothing runs.
    DryRun(Box<RolloutPlan>),
    /// Register exactly these pods of this DBU in the director ring's lock (before a drain, or
    /// to release those that are back). Status records them once the lock has them.
    Claim { pods: Vec<String> },
    /// Take over backends a deleted DBU of the same StatefulSet left out of the ring (their
    /// records as it left them): the ring's lock moves them to this DBU, status records them.
    Adopt { records: Vec<BackendStatus> },
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
        /// The UID of the pod the step left bound: StopDovecot the one it stopped (Replace
        /// deletes it), Replace the one it found Ready at the target (every later step acts on
        /// it).
        pod_uid: Option<String>,
        /// StopLmtp: where the verify user's mail lives, read while Dovecot still runs.
        layout: Option<Box<MailLayout>>,
    },
    /// Not done yet; run it again later.
    Waiting { requeue: Duration, message: String },
    /// WaitSessions with strategy Move: not done yet, and what this poll saw and moved.
    Draining {
        requeue: Duration,
        message: String,
        poll: DrainPoll,
    },
    /// The world moved under the step (e.g. Dovecot running again before Reset): go back.
    Rewind { to: Step, message: String },
    /// What the step is about to do, written before it acts (the next pass acts on it).
    Intend(Intent),
    /// The step failed; the backend stays out of the ring and the rollout halts.
    Failed(StepError),
    /// The command could not be run (connection dropped, timeout): back off and retry.
    Transient { error: StepError },
}

/// An intent a step writes into the record before it acts, so that a crash or a conflict in
/// between repeats the action rather than forgetting it was the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Fail for this reason (a soak: drain again first).
    Fail(String),
    /// Deliver the probe message with this token (only it is ever expunged).
    Probe(String),
    /// Restore at a new IP whose entry stood for another pod and had this vhost count.
    RestoreSeen(u32),
}

impl Intent {
    /// Writes the intent into the record (the next pass acts on it).
    pub fn record(&self, rec: &mut crate::api::BackendStatus) {
        match self {
            Intent::Fail(why) => {
                rec.failing = Some(why.clone());
                rec.message = Some(format!("{why}; draining it again"));
            }
            Intent::Probe(token) => rec.probe_token = Some(token.clone()),
            Intent::RestoreSeen(n) => rec.restore_seen = Some(*n),
        }
    }
}

/// One poll of a Move drain, for the backend's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPoll {
    pub users_left: u64,
    pub sessions: u64,
    pub without_session: u64,
    /// Sessions moved in this poll.
    pub sessions_moved: u64,
    /// Users without a session moved in this poll.
    pub users_moved: u64,
    /// Sessions whose state the process titles do not show (`verbose_proctitle = no`).
    pub unknown: u64,
    /// This poll listed the users mapped here (`director map`).
    pub listed: bool,
    pub predicted_end: Option<k8s_openapi::jiff::Timestamp>,
}

/// Transient failures of one step before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 5;

impl Decision {
    pub fn wait(reason: WaitReason, message: impl Into<String>, requeue: Duration) -> Self {
        Decision::Wait {
            reason,
            message: message.into(),
            requeue,
        }
    }

    pub fn stall(reason: StallReason, message: impl Into<String>) -> Self {
        Decision::Stall {
            reason,
            message: message.into(),
        }
    }
}

impl StepResult {
    /// Done, with an optional message and nothing else to record.
    pub fn advanced(message: impl Into<Option<String>>) -> Self {
        StepResult::Advanced {
            message: message.into(),
            new_ip: None,
            pod_uid: None,
            layout: None,
        }
    }
}

/// How undoing one backend ended (abort or DBU deletion).
#[derive(Debug, Clone, PartialEq)]
pub enum Undone {
    /// Back in the ring at its original vhost count; `human_down`: left down, because a human
    /// took it down during the rollout (the operator had not).
    Restored { human_down: bool },
    /// Left out of the ring on purpose; the message says why and how to restore it by hand.
    LeftOut(String),
    /// The restore was tried and failed; the message says what failed.
    Failed(String),
    /// There was nothing to undo.
    Nothing,
}

/// What the engine did for a decision: the one action of a reconcile, handed back to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Acted {
    /// The decision needed no action (Stall, Wait, Complete, Aborted, DryRun, Begin).
    Nothing,
    /// `Reassert`: Ok, or the failed command and what it said.
    Reasserted(Result<(), String>),
    /// `Undo`: how it ended.
    Undone(Undone),
    /// `Run`: how the step ended, and the time it ended.
    Ran(StepResult),
    /// `Claim`: the lock now has these pods of this DBU, or why it could not be changed (another
    /// DBU changed it first: read again).
    Claimed(Result<(), String>),
    /// `Adopt`: the lock moved the left-out backends to this DBU, or why it could not.
    Adopted(Result<(), String>),
    /// `Begin`: the candidate as the API server has it (not the cache) is still outdated, or
    /// why the record is not written (a cache that lags would start a finished backend again).
    Checked(Result<(), String>),
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

/// A record that still holds a backend out of, or partly out of, the ring.
pub fn active(rec: &BackendStatus) -> bool {
    rec.step != Step::Done && !rec.removed
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Director,
    Backend,
}

/// One command of an undo, with how its exit code is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub on: On,
    pub argv: Vec<String>,
    pub kind: CommandKind,
}
