//! Each runbook step as one sans-IO script: it names the next action, folds each output, and
//! its plan entry and its undo come from the same file.
//!
//! A script is plain code run against a transcript: every action it asks for is answered from
//! the transcript while there is one, and the first action beyond it ends the run with
//! [`Next::Act`]. The engine performs that action, appends the output and runs the script again
//! from the top; the plan runs the same scripts against [`sim`], a world where every command
//! succeeds. The clock is passed in and a script never waits: a poll is a requeue.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{BackendStatus, DovecotBackendUpgradeStatus, Step, StepError};
use crate::dovecot::{self, CommandKind, RingHost, Verdict};
use crate::imap::{ImapTarget, ProbeInput};
use crate::probe::ProbeFailure;
use crate::reason::WaitReason;
use crate::settings::{ObjectKey, Settings};

use super::decision::{Cleanup, Decision, Intent, On, StepResult, Undone, active};
use super::gates;
use super::judge;
use super::lock;
use super::observed::{self, Observed, PodView};
use super::split;

mod credentials;
mod drain;
mod plan;
mod replace;
mod reset;
mod ring_remove;
mod ring_restore;
pub mod sim;
mod soak;
mod stop_dovecot;
mod stop_lmtp;
pub mod undo;
mod verify;
mod wait_sessions;

pub use credentials::credentials;
pub use plan::{PROBE_TOKEN, merge_poll, steps_for};
pub use undo::{if_running, restore_commands};

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What a script asks the engine to do next.
#[derive(Debug, Clone)]
pub enum Action {
    /// Run this argv in the director (the one chosen for this reconcile) or the backend pod.
    Exec { on: On, argv: Vec<String> },
    /// Read the backend pod from the API server, not a cache.
    ReadPod,
    /// Read the StatefulSet's `updateRevision` from the API server.
    ReadRevision,
    /// Delete the backend pod, only if it still has this UID.
    DeletePod { uid: String },
    /// Label the backend pod `maintenance::RELEASED_LABEL` (its value: `at`, in seconds since
    /// the epoch), only if it still has this UID.
    ReleasePod {
        uid: String,
        at: k8s_openapi::jiff::Timestamp,
    },
    /// Read one key of a Secret or ConfigMap in the DBU's namespace.
    ReadKey(ObjectKey),
    /// Deliver `message` to `user` over LMTP at `ip:port`.
    LmtpProbe {
        ip: String,
        port: u16,
        user: String,
        message: String,
    },
    /// Run the IMAP probe (or a login only) against `target`.
    ImapProbe {
        target: Box<ImapTarget>,
        input: Box<ProbeInput>,
    },
}

impl Action {
    /// Whether a replayed output answers this action: the same kind, and the same argv.
    fn answers(&self, asked: &Action) -> bool {
        match (self, asked) {
            (Action::Exec { on, argv }, Action::Exec { on: o, argv: a }) => on == o && argv == a,
            _ => std::mem::discriminant(self) == std::mem::discriminant(asked),
        }
    }
}

/// An edge's failure (the API server, a transport), with whether waiting may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeError {
    pub transient: bool,
    pub message: String,
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What performing an action gave. `Err` is the edge's failure (a transport, the API server),
/// never a command's non-zero exit, which is an `Exec` output like any other.
#[derive(Debug, Clone)]
pub enum Output {
    Exec(Result<ExecOutput, EdgeError>),
    Pod(Result<Option<PodView>, EdgeError>),
    Revision(Result<Option<String>, EdgeError>),
    Deleted(Result<(), EdgeError>),
    Released(Result<(), EdgeError>),
    /// `Ok(None)`: the object or its key does not exist.
    Key(Result<Option<Vec<u8>>, EdgeError>),
    Probe(Result<(), ProbeFailure>),
}

/// The result of running a script once over a transcript.
#[derive(Debug)]
pub enum Next<T> {
    /// Perform this, append its output to the transcript, run again.
    Act(Action),
    Done(T),
}

/// Why a script stopped before its end: it needs an action performed, or it has its result.
#[derive(Debug)]
pub enum Halt {
    Need(Action),
    Done(StepResult),
}

impl From<StepResult> for Halt {
    fn from(r: StepResult) -> Self {
        Halt::Done(r)
    }
}

/// A script's own result: `Err` is an early end (an action to perform, or a result).
pub type Run<T> = Result<T, Halt>;

/// What a step's script reads: the record, the settings, the world as observed, the time.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub s: &'a Settings,
    pub rec: &'a BackendStatus,
    pub obs: &'a Observed,
    pub now: Timestamp,
    /// WaitSessions at its ceiling: the users the director still maps to the backend.
    pub ceiling_users: Option<u64>,
}

/// One run of a script over a transcript.
pub struct Cx<'a> {
    pub s: &'a Settings,
    pub rec: &'a BackendStatus,
    pub obs: &'a Observed,
    pub now: Timestamp,
    pub ceiling_users: Option<u64>,
    seen: &'a [(Action, Output)],
    next: usize,
}

impl<'a> Cx<'a> {
    pub fn new(input: Input<'a>, seen: &'a [(Action, Output)]) -> Self {
        Cx {
            s: input.s,
            rec: input.rec,
            obs: input.obs,
            now: input.now,
            ceiling_users: input.ceiling_users,
            seen,
            next: 0,
        }
    }

    /// The output the transcript holds for `action`, or the end of this run asking for it.
    pub fn ask(&mut self, action: Action) -> Run<&'a Output> {
        let Some((done, out)) = self.seen.get(self.next) else {
            return Err(Halt::Need(action));
        };
        // a script is deterministic over its transcript; a divergence is a bug, never acted on
        if !done.answers(&action) {
            return Err(Halt::Done(StepResult::Transient {
                error: self.error(
                    &[],
                    None,
                    &format!(
                        "step script diverged from its transcript at action {}",
                        self.next
                    ),
                ),
            }));
        }
        self.next += 1;
        Ok(out)
    }

    pub fn error(&self, argv: &[String], exit_code: Option<i32>, stderr: &str) -> StepError {
        judge::step_error(self.rec.step, argv, exit_code, stderr)
    }

    fn transient(&self, argv: &[String], why: &str) -> Halt {
        Halt::Done(StepResult::Transient {
            error: self.error(argv, None, why),
        })
    }

    /// Runs argv; an exec that could not complete is a transient error of the step.
    pub fn raw(&mut self, on: On, argv: &[String]) -> Run<ExecOutput> {
        match self.ask(Action::Exec {
            on,
            argv: argv.to_vec(),
        })? {
            Output::Exec(Ok(out)) => Ok(out.clone()),
            Output::Exec(Err(e)) => Err(self.transient(argv, &e.message)),
            other => Err(self.transient(argv, &format!("unexpected output {other:?}"))),
        }
    }

    /// Runs argv; a non-zero exit that is not "already done" fails the step (or retries it,
    /// where doveadm says so).
    pub fn run(
        &mut self,
        on: On,
        argv: &[String],
        kind: CommandKind,
    ) -> Run<(Verdict, ExecOutput)> {
        let out = self.raw(on, argv)?;
        match dovecot::classify(kind, out.exit_code, &out.stderr) {
            Verdict::Failed => Err(Halt::Done(StepResult::Failed(self.error(
                argv,
                Some(out.exit_code),
                &out.stderr,
            )))),
            Verdict::Retry => Err(Halt::Done(StepResult::Transient {
                error: self.error(argv, Some(out.exit_code), &out.stderr),
            })),
            v => Ok((v, out)),
        }
    }

    /// Whether Dovecot's master runs in the backend pod: master.pid present and its process alive.
    pub fn dovecot_running(&mut self) -> Run<bool> {
        let read = dovecot::read_master_pid(&self.s.base_dir);
        let (v, out) = self.run(On::Backend, &read, CommandKind::ReadPid)?;
        if v == Verdict::AlreadyDone {
            return Ok(false);
        }
        let pid = dovecot::parse_pid(&out.stdout)
            .map_err(|e| StepResult::Failed(self.error(&read, Some(0), &e.to_string())))?;
        let alive = self.raw(On::Backend, &dovecot::process_alive(pid))?;
        Ok(alive.exit_code == 0)
    }

    /// The backend pod as the API server has it now, not as a cache does: the steps that act on
    /// "the pod" (which one was stopped, which one to delete, which IP goes into the ring) read it.
    pub fn pod_now(&mut self) -> Run<Option<PodView>> {
        match self.ask(Action::ReadPod)? {
            Output::Pod(Ok(p)) => Ok(p.clone()),
            Output::Pod(Err(e)) => Err(self.transient(&[], &format!("read the pod: {e}"))),
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }

    /// The pod Replace found Ready at the target (`new_pod_uid`), as the API server has it now.
    /// Another pod under the name (recreated by a human, an eviction, a new template) ends the
    /// run with a rewind to Replace, which takes the pod that runs now through Verify again (or
    /// replaces it at the target revision): no step acts on a pod it did not verify.
    pub fn bound_pod(&mut self) -> Run<Option<PodView>> {
        let pod = self.pod_now()?;
        if let Some(want) = self.rec.new_pod_uid.as_deref() {
            let now = pod.as_ref().and_then(|p| p.uid.as_deref());
            if now != Some(want) {
                return Err(judge::unbound(want, pod.as_ref()).into());
            }
        }
        Ok(pod)
    }

    /// The StatefulSet's update revision as the API server has it now.
    pub fn revision_now(&mut self) -> Run<Option<String>> {
        match self.ask(Action::ReadRevision)? {
            Output::Revision(Ok(r)) => Ok(r.clone()),
            Output::Revision(Err(e)) => {
                Err(self.transient(&[], &format!("read the StatefulSet: {e}")))
            }
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }

    pub fn delete_pod(&mut self, uid: &str) -> Run<()> {
        match self.ask(Action::DeletePod {
            uid: uid.to_string(),
        })? {
            Output::Deleted(Ok(())) => Ok(()),
            Output::Deleted(Err(e)) => Err(self.transient(&[], &format!("delete pod: {e}"))),
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }

    pub fn release_pod(&mut self, uid: &str) -> Run<()> {
        match self.ask(Action::ReleasePod {
            uid: uid.to_string(),
            at: self.now,
        })? {
            Output::Released(Ok(())) => Ok(()),
            Output::Released(Err(e)) => Err(self.transient(&[], &format!("release pod: {e}"))),
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }

    /// A key's value, or why it cannot be had, for the caller to judge.
    pub fn read_key(&mut self, key: &ObjectKey) -> Run<Result<Option<Vec<u8>>, EdgeError>> {
        match self.ask(Action::ReadKey(key.clone()))? {
            Output::Key(k) => Ok(k.clone()),
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }

    pub fn lmtp_probe(
        &mut self,
        ip: &str,
        port: u16,
        message: &str,
    ) -> Run<Result<(), ProbeFailure>> {
        let action = Action::LmtpProbe {
            ip: ip.to_string(),
            port,
            user: self.s.user.clone(),
            message: message.to_string(),
        };
        match self.ask(action)? {
            Output::Probe(p) => Ok(p.clone()),
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }

    pub fn imap_probe(
        &mut self,
        target: ImapTarget,
        input: ProbeInput,
    ) -> Run<Result<(), ProbeFailure>> {
        let action = Action::ImapProbe {
            target: Box::new(target),
            input: Box::new(input),
        };
        match self.ask(action)? {
            Output::Probe(p) => Ok(p.clone()),
            other => Err(self.transient(&[], &format!("unexpected output {other:?}"))),
        }
    }
}

/// Runs a script once over `seen`.
pub fn resume<T>(
    input: Input<'_>,
    seen: &[(Action, Output)],
    script: impl FnOnce(&mut Cx<'_>) -> Run<T>,
    early: impl FnOnce(StepResult) -> T,
) -> Next<T> {
    let mut cx = Cx::new(input, seen);
    match script(&mut cx) {
        Ok(t) => Next::Done(t),
        Err(Halt::Need(a)) => Next::Act(a),
        Err(Halt::Done(r)) => Next::Done(early(r)),
    }
}

/// The credentials check before a backend is drained, run once over `seen` (a record of no
/// backend: the script reads keys only).
pub fn credentials_check(
    s: &Settings,
    obs: &Observed,
    now: Timestamp,
    seen: &[(Action, Output)],
) -> Next<Result<(), String>> {
    let rec = plan::record("", "", 0, None, now);
    let input = Input {
        s,
        rec: &rec,
        obs,
        now,
        ceiling_users: None,
    };
    resume(input, seen, credentials, |r| Err(format!("{r:?}")))
}

/// Undo of one backend, run once over `seen`.
pub fn undo_step(input: Input<'_>, action: &Cleanup, seen: &[(Action, Output)]) -> Next<Undone> {
    let rec = input.rec;
    resume(
        input,
        seen,
        |cx| undo::run(cx, action.clone()),
        |r| Undone::Failed(format!("{}: {r:?}", rec.pod)),
    )
}

/// The recorded step's script, run once over `seen`.
pub fn step(input: Input<'_>, seen: &[(Action, Output)]) -> Next<StepResult> {
    resume(input, seen, script(input.rec.step), |r| r)
}

/// Everything the machine knows of one step, as the step's own file declares it.
pub struct StepSpec {
    /// Its script.
    pub run: fn(&mut Cx<'_>) -> Run<StepResult>,
    /// What must come first (None: run it).
    pub gate: fn(&GateInput<'_>) -> Option<Gated>,
    /// The director reads its gate needs.
    pub reads: Reads,
    /// How the ring must show the backend meanwhile.
    pub ring: fn(&BackendStatus) -> RingState,
    /// What abort and deletion do for a backend at this step (unless it failed).
    pub undo: fn(&BackendStatus) -> Cleanup,
    /// The pod its commands run in, for the plan.
    pub target: &'static str,
    /// What it does besides its commands, for the plan.
    pub note: fn(&Settings, &str, &str) -> Option<String>,
}

/// A backend that is done: nothing to run, assert or undo.
const DONE: StepSpec = StepSpec {
    run: |_| Ok(StepResult::advanced(None)),
    gate: no_gate,
    reads: Reads::NONE,
    ring: |_| RingState::SERVING,
    undo: |_| Cleanup::Nothing,
    target: "director",
    note: |_, _, _| None,
};

/// The one table from a step to its file.
pub fn spec(step: Step) -> &'static StepSpec {
    match step {
        Step::Drain => &drain::STEP,
        Step::WaitSessions => &wait_sessions::STEP,
        Step::StopLmtp => &stop_lmtp::STEP,
        Step::StopDovecot => &stop_dovecot::STEP,
        Step::RingRemove => &ring_remove::STEP,
        Step::Reset => &reset::STEP,
        Step::Replace => &replace::STEP,
        Step::Verify => &verify::STEP,
        Step::RingRestore => &ring_restore::STEP,
        Step::Soak => &soak::STEP,
        Step::Done => &DONE,
    }
}

/// The script of one step.
pub fn script(step: Step) -> fn(&mut Cx<'_>) -> Run<StepResult> {
    spec(step).run
}

/// What undoing a backend at its recorded step means, for `spec.abort` and deleting the DBU.
pub fn undo(rec: &BackendStatus) -> Cleanup {
    if rec.failed {
        return Cleanup::LeaveOut(format!(
            "{}: failed at {}; left out of the ring for a human to check",
            rec.pod, rec.step
        ));
    }
    (spec(rec.step).undo)(rec)
}

/// The pod a step's commands run in, for the plan.
pub fn target(step: Step) -> &'static str {
    spec(step).target
}

/// What a step does besides its commands, for the plan.
pub fn note(step: Step, s: &Settings, pod: &str, ip: &str) -> Option<String> {
    (spec(step).note)(s, pod, ip)
}

/// What a step's gate reads: the rollout, the record, the world, the ring as read, the time.
pub struct GateInput<'a> {
    pub s: &'a Settings,
    pub status: &'a DovecotBackendUpgradeStatus,
    pub rec: &'a BackendStatus,
    pub obs: &'a Observed,
    pub ring: &'a [RingHost],
    pub now: Timestamp,
}

/// A gate's answer: another decision first (a claim, a reassert, a wait, a run with a ceiling),
/// or a wait of this long with why.
pub type Gated = Result<Decision, Held>;

/// A record that waits while the others go on: when to look again, the Reconciling reason it
/// shows if it is the soonest, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub requeue: Duration,
    pub reason: WaitReason,
    pub message: String,
}

impl Held {
    /// A step that waits for its own work (sessions to end, a pod to be Ready, a retry).
    pub fn step(requeue: Duration, message: String) -> Held {
        Held {
            requeue,
            reason: WaitReason::StepInProgress,
            message,
        }
    }

    /// The wait a decision made of it, the soonest of several.
    pub fn decision(self) -> Decision {
        Decision::Wait {
            reason: self.reason,
            message: self.message,
            requeue: self.requeue,
        }
    }
}

/// Before the recorded step's script runs: what must come first, from the step's own file.
/// None: run it.
pub fn gate(g: &GateInput<'_>) -> Option<Gated> {
    (spec(g.rec.step).gate)(g)
}

/// The gate of a step that needs nothing first.
fn no_gate(_: &GateInput<'_>) -> Option<Gated> {
    None
}

/// What a step reads from the directors before it runs, beyond `director status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// `director ring status` on every director.
    pub ring_sync: bool,
    /// `director status` of every other Ready director.
    pub other_rings: bool,
}

impl Reads {
    pub const NONE: Reads = Reads {
        ring_sync: false,
        other_rings: false,
    };
}

/// The reads a step's gate needs, from the step's own file.
pub fn reads(step: Step) -> Reads {
    spec(step).reads
}

/// How the director ring must show a backend while it is at a step: anything more available
/// than this is drift (it would send users to a backend that is stopped, unverified or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingState {
    /// At 0 vhosts: no new user is sent to it.
    pub drained: bool,
    /// Down, and flushed: no user is sent to it at all.
    pub down: bool,
}

impl RingState {
    /// Nothing asserted: the backend serves as it did, or is back.
    pub const SERVING: RingState = RingState {
        drained: false,
        down: false,
    };
    pub const DRAINED: RingState = RingState {
        drained: true,
        down: false,
    };
    pub const DOWN: RingState = RingState {
        drained: true,
        down: true,
    };
}

/// The ring state a record's step asks for, from the step's own file.
pub fn ring_state(rec: &BackendStatus) -> RingState {
    (spec(rec.step).ring)(rec)
}

/// The ring state a backend left out of the ring is kept in: what its step asks, and down
/// from StopDovecot on. A DBU in flight takes it down at RingRemove, but nobody drives a
/// left-out backend on, and its Dovecot may be stopped: a user still mapped there would fail
/// to log in until a flush moves them.
pub fn left_out_state(rec: &BackendStatus) -> RingState {
    match rec.step {
        Step::StopDovecot | Step::RingRemove => RingState::DOWN,
        _ => ring_state(rec),
    }
}

/// Users mapped here while its Dovecot runs go back to WaitSessions before anything stops:
/// WaitSessions found it stopped (a pod deleted and not yet back) and had nobody to wait for,
/// and it came back since (found by the model: a login failed on the stopped backend); or a
/// human gave it vhosts after the drain and users came. StopLmtp and StopDovecot ask first.
pub(super) fn mapped_while_running(cx: &mut Cx<'_>) -> Run<Option<StepResult>> {
    let mapped: u64 = cx
        .obs
        .ring
        .iter()
        .flatten()
        .filter(|h| h.ip == cx.rec.ip)
        .map(|h| h.users)
        .sum();
    if mapped > 0 && cx.dovecot_running()? {
        return Ok(Some(StepResult::Rewind {
            to: Step::WaitSessions,
            message: format!(
                "{mapped} users are mapped to it and its Dovecot runs: drained again before anything stops"
            ),
        }));
    }
    Ok(None)
}

/// The pod under the record's name came back at another IP before this record stopped its
/// Dovecot (deleted by hand, evicted, its node lost): the drain so far was of an entry no pod
/// serves any more, while the new pod may already serve users at its own IP, e.g. one the ring
/// has for another pod that moved (found by the model: the record stopped the pod at the reused
/// IP, and a user's login there failed). Nothing of this incarnation was stopped, so it goes to
/// Replace, which binds it at the target (or replaces it), and Verify and RingRestore put it in
/// at its new IP at the recorded count, as a rejoin does; the drift keeps both IPs out meanwhile.
/// The cache shows the move; the API server confirms it before the record acts on it.
pub(super) fn moved_before_stop(cx: &mut Cx<'_>) -> Run<Option<StepResult>> {
    let (name, was) = (cx.rec.pod.clone(), cx.rec.ip.clone());
    let moved = |p: &PodView| {
        p.name == name && p.ready && !p.terminating && p.ip.as_deref().is_some_and(|ip| ip != was)
    };
    if !cx.obs.pods.iter().any(moved) {
        return Ok(None);
    }
    // the step's gate was passed over for it (`moved_hold`): never act on a cache's word
    let Some(p) = cx.pod_now()?.filter(|p| moved(p)) else {
        return Ok(Some(StepResult::Waiting {
            requeue: Duration::from_secs(5),
            message: format!(
                "{name}: the pod cache shows it at another IP than {was}, the API server does not (yet)"
            ),
        }));
    };
    let at = p.ip.clone().unwrap_or_default();
    Ok(Some(StepResult::Rewind {
        to: Step::Replace,
        message: format!(
            "came back at {at} (was {was}) before its Dovecot was stopped here; verified before it rejoins the ring at its new IP"
        ),
    }))
}

/// Before a step up to StopDovecot runs for a pod that came back at another IP: its own gate
/// judges the IP the pod left, so the step runs straight away, and `moved_before_stop` sends
/// it to Replace (found by the model: Drain's capacity check on the left IP, now another pod's,
/// waited for ever). Where the ring sends users to the new IP (another moved pod's entry),
/// verifying the pod takes that host out, which must leave enough others serving (found by the
/// model: it was the only one); a wait here lets the other records go on meanwhile (a moved
/// pod's rejoin may be what brings a host back).
pub fn moved_hold(g: &GateInput<'_>) -> Option<Gated> {
    let rec = g.rec;
    if !(Step::Drain..=Step::StopDovecot).contains(&rec.step) || rec.failed {
        return None;
    }
    let at = g
        .obs
        .pods
        .iter()
        .find(|p| p.name == rec.pod && p.ready && !p.terminating)?
        .ip
        .as_deref()
        .filter(|ip| *ip != rec.ip)?;
    let run = Some(Ok(Decision::Run {
        pod: rec.pod.clone(),
        step: rec.step,
        ceiling_users: None,
    }));
    let Ok(ip) = dovecot::validate_ip(at) else {
        return run;
    };
    if !g.ring.iter().any(|h| h.ip == at && g.obs.takes_users(h)) {
        return run;
    }
    let out = lock::out_ips(g.status, g.obs, &rec.pod);
    let out: Vec<&str> = out
        .iter()
        .map(String::as_str)
        .chain([rec.ip.as_str()])
        .collect();
    let Some(Decision::Wait {
        message, reason, ..
    }) = gates::ring_gate(g.s, g.status, g.obs, g.ring, &rec.pod, ip, &out)
    else {
        return run;
    };
    // the ring gate's reason: a wait for capacity a human took away shows as such
    Some(Err(Held {
        requeue: Duration::from_secs(30),
        reason,
        message: format!(
            "{}: came back at {at} (was {}), where users are sent; verified there once others serve: {message}",
            rec.pod, rec.ip
        ),
    }))
}

/// Whether `ip` is the record's new IP (not its old one) and its pod, now at `pod_ip`, has left
/// it: the entry is not the record's any more, and neither its DBU's drift nor the ring's pass
/// for a left-out record keeps it out (found by the model: it was another backend's old entry).
pub fn left_new_ip(rec: &BackendStatus, ip: &str, pod_ip: Option<&str>) -> bool {
    ip != rec.ip && rec.new_ip.as_deref() == Some(ip) && pod_ip.is_some_and(|at| at != ip)
}

/// A rejoin as `rejoin` begins it: at Verify with its new IP, nothing stopped here; or sent
/// back to Replace since, and verified again, with its pod recreated under it at the IP it
/// was just put in at (RingRestore made that its IP; found by the model: taken out there at
/// the soak beside another backend's drain).
pub fn rejoining(rec: &BackendStatus) -> bool {
    rec.rejoin
        && matches!(rec.step, Step::Replace | Step::Verify)
        && rec.stopped_pod_uid.is_none()
        && !rec.failed
}

/// The IPs a record keeps out that the ring still sends users to, where its pod is now (its
/// new IP, or the old one the pod came back to): taking one out is a backend out. An entry the
/// pod left serves nobody, and one another pod has is never this record's.
pub fn serving_ips<'a>(rec: &'a BackendStatus, ring: &[RingHost], obs: &Observed) -> Vec<&'a str> {
    std::iter::once(rec.ip.as_str())
        .chain(rec.new_ip.as_deref())
        .filter(|ip| obs.is_at(&rec.pod, ip))
        .filter(|ip| ring.iter().any(|h| h.ip == *ip && obs.takes_users(h)))
        .collect()
}

/// The IPs a rejoin weighs for room before it takes them out: those that serve
/// (`serving_ips`), and one where its pod is now that is down with its vhosts kept. The
/// operator's own take-out zeroes before it downs, so that down is someone else's (a human's
/// seen after a rewind, when `downed` cannot tell), and zeroed, the entry is the operator's out
/// as much as theirs (found by the model: a rejoin's pod recreated during its soak, a human's
/// `down` of it, and the drift zeroed it beside another backend's drain).
pub fn weighed_ips<'a>(rec: &'a BackendStatus, ring: &[RingHost], obs: &Observed) -> Vec<&'a str> {
    std::iter::once(rec.ip.as_str())
        .chain(rec.new_ip.as_deref())
        .filter(|ip| weighed_at(&rec.pod, ip, ring, obs))
        .collect()
}

/// Whether the entry at `ip`, where `pod` is now, is one a rejoin weighs for room before it
/// takes it out (`weighed_ips`): one that serves, or one down with its vhosts kept. A rejoin
/// begins only with room for it, as it is weighed once begun (found by the model with seed
/// 2027: a pod whose new entry a human had taken down began a rejoin, was dropped for want of a
/// slot the next pass, and began again, so the backend holding the slot never got a pass).
pub fn weighed_at(pod: &str, ip: &str, ring: &[RingHost], obs: &Observed) -> bool {
    obs.is_at(pod, ip)
        && ring.iter().any(|h| {
            h.ip == ip
                && (obs.takes_users(h)
                    || (!h.up && h.vhosts > 0 && !obs.ring_unready.contains(&h.ip)))
        })
}

/// Whether a record keeps out an entry the ring still sends users to (`serving_ips`).
pub fn takes_out_serving(rec: &BackendStatus, ring: &[RingHost], obs: &Observed) -> bool {
    !serving_ips(rec, ring, obs).is_empty()
}

/// The ring state the operator holds a record's backend in: its step's, or for a failed one
/// the left-out state (nobody drives it on and its Dovecot may be stopped: a user mapped there
/// in the meantime, e.g. while a human had given it vhosts, would fail to log in until a
/// flush moves them; found by the model after an abort left a backend out at StopDovecot).
pub fn held_state(rec: &BackendStatus) -> RingState {
    if rec.failed {
        left_out_state(rec)
    } else {
        ring_state(rec)
    }
}

/// Every other director must show the backend drained before anything on it is stopped or it
/// is taken down: one that missed `update 0` gets it again, on that director. `wait_unread`:
/// a director that cannot be asked holds the step (it may still send users).
fn others_drained(g: &GateInput<'_>, wait_unread: bool) -> Option<Gated> {
    let rec = g.rec;
    let ip = dovecot::validate_ip(&rec.ip).ok()?;
    for (name, other) in g.obs.other_rings.iter().flatten() {
        match other {
            Some(hosts) if hosts.iter().any(|h| h.ip == rec.ip && h.vhosts != 0) => {
                return Some(Ok(Decision::Reassert {
                    pod: rec.pod.clone(),
                    commands: vec![g.s.director.director_update(ip, 0)],
                    director: Some(name.clone()),
                }));
            }
            Some(_) => {}
            None if wait_unread => {
                return Some(Ok(Decision::wait(
                    WaitReason::RingUnreadable,
                    format!(
                        "{}: could not read director status from {name}; Dovecot is not stopped until every director shows the backend drained",
                        rec.pod
                    ),
                    Duration::from_secs(10),
                )));
            }
            None => {}
        }
    }
    None
}

/// A wait while the directors disagree beyond the backends out of the ring right now (this
/// DBU's in flight, and those the ring's record holds): `what` is held back.
fn directors_agree(g: &GateInput<'_>, what: &str) -> Option<Gated> {
    let out = lock::out_ips(g.status, g.obs, "");
    let changing: Vec<&str> = out.iter().map(String::as_str).collect();
    let diff = split::differences(g.obs, &changing);
    (!diff.is_empty()).then(|| {
        Ok(Decision::wait(
            WaitReason::RingSplit,
            format!(
                "the directors disagree: {}; {what} until they agree",
                diff.join("; ")
            ),
            Duration::from_secs(10),
        ))
    })
}

/// The steps that act on the replaced pod: it must exist, Ready, to be looked at.
fn pod_ready(g: &GateInput<'_>) -> Option<Gated> {
    let ready = g
        .obs
        .pods
        .iter()
        .any(|p| p.name == g.rec.pod && p.ready && !p.terminating);
    (!ready).then(|| {
        Err(Held::step(
            Duration::from_secs(5),
            format!("{}: waiting for the pod to be Ready", g.rec.pod),
        ))
    })
}

/// Undo after Dovecot was stopped: the backend stays out, and the ring keeps it out.
fn left_out_stopped(rec: &BackendStatus) -> Cleanup {
    Cleanup::LeaveOut(left_out_message(
        rec,
        &format!("deleted at step {}, after Dovecot was stopped", rec.step),
    ))
}

/// What a left-out backend's Event says: the ring keeps it out (a restore by hand would be
/// undone), the next DBU of its StatefulSet finishes it, or a human releases it first.
pub(super) fn left_out_message(rec: &BackendStatus, why: &str) -> String {
    format!(
        "{}: {why}; left out of the ring, and its DovecotRing keeps it out until the next DovecotBackendUpgrade of its StatefulSet finishes it; to put it back yourself, release it first (kubectl dbu ring-release <ring> {}), then doveadm director update <ip> {} and director up <ip>",
        rec.pod, rec.pod, rec.original_vhosts
    )
}

#[cfg(test)]
mod tests;
