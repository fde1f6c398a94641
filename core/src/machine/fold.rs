//! Folds what happened into status: step results, Begin/Undo/Reassert/DryRun bookkeeping,
//! retries, compaction, progress, and the decision the conditions describe afterwards.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::cleanup::undone_note;
use super::conditions;
use super::decide::decide;
use super::decision::{Acted, Decision, MAX_ATTEMPTS, StepResult, Undone, active};
use super::note::{Note, failed_stall, failure_message};
use super::observed::Observed;
use crate::api::{
    BackendStatus, DovecotBackendUpgradeStatus, DrainProgress, DrainStrategy, RETRY_ANNOTATION,
    Step,
};
use crate::reason::{EventReason, StallReason, WaitReason};
use crate::settings::Settings;
use crate::time::{after, backoff, elapsed};
use crate::window;

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

/// Progress of one target revision never goes backwards: a backend once upgraded stays counted
/// while it restarts or is briefly not Ready (with OnDelete a pod only ever comes back at the
/// update revision). A new total (scale up or down) starts the count again, and so does a new
/// target (`retarget` clears it).
pub fn no_step_back(before: Option<&str>, now: String) -> String {
    let parse = |p: &str| -> Option<(u64, u64)> {
        let (d, t) = p.split_once('/')?;
        Some((d.parse().ok()?, t.parse().ok()?))
    };
    match (before.and_then(parse), parse(&now)) {
        (Some((d0, t0)), Some((d, t))) if t0 == t && d0 > d => format!("{d0}/{t}"),
        _ => now,
    }
}

/// When the target revision changes, finished records of the old target are dropped; records
/// still in flight or failed are kept, because they hold backends out of the ring, and so are
/// finished ones whose slot is still held (`lock::awaits_ring_pass`: the record is all that
/// knows the pod's new entry until the ring's pass has recorded it).
pub fn retarget(status: &mut DovecotBackendUpgradeStatus, target: &str) {
    if status.target_revision.as_deref() != Some(target) {
        let held = status.ring_held.clone();
        status.backends.retain(|r| holds_out(&held, r));
        status.target_revision = Some(target.to_string());
        status.progress = None;
    }
}

/// Whether a record still holds its backend out: in flight or failed, or its pod's slot still
/// held (`held`: `status.ringHeld`).
fn holds_out(held: &[String], r: &BackendStatus) -> bool {
    active(r) || held.contains(&r.pod)
}

/// Finished records kept in status; older ones are dropped (progress counts pods, not records),
/// so the status of a rollout over 1,000 backends stays small.
pub const DONE_KEPT: usize = 10;

/// Drops all but the newest `DONE_KEPT` finished records. Records in flight or failed are kept:
/// they hold backends out of the ring.
pub fn compact(status: &mut DovecotBackendUpgradeStatus) {
    let held = status.ring_held.clone();
    let kept = |r: &BackendStatus| holds_out(&held, r);
    let done = status.backends.iter().filter(|r| !kept(r)).count();
    let mut extra = done.saturating_sub(DONE_KEPT);
    status.backends.retain(|r| {
        if extra > 0 && !kept(r) {
            extra -= 1;
            return false;
        }
        true
    });
}

/// Records a finished backend's duration for the window prediction: its active step time
/// (records from before that was kept: since it started).
pub fn record_finish(status: &mut DovecotBackendUpgradeStatus, pod: &str, now: Timestamp) {
    let Some(rec) = status
        .backends
        .iter()
        .find(|r| r.pod == pod && r.step == Step::Done)
    else {
        return;
    };
    let took = match (rec.active_seconds, &rec.started) {
        (Some(s), _) => Duration::from_secs(s),
        (None, Some(started)) => elapsed(started, now),
        (None, None) => return,
    };
    window::remember(&mut status.recent_backend_seconds, took);
}

/// Adds the time spent in the step that just ended to the backend's active time, without its
/// backoff after transient errors.
fn add_active(rec: &mut BackendStatus, now: Timestamp) {
    let spent = elapsed(&rec.step_started, now)
        .as_secs()
        .saturating_sub(rec.backoff_seconds.take().unwrap_or(0));
    rec.active_seconds = Some(rec.active_seconds.unwrap_or(0).saturating_add(spent));
}

/// A pause freezes in-flight steps, so it must not count against their clocks (the drain
/// ceiling, the stop and replace timeouts, the active time): when it ends, every in-flight
/// step's start moves on by its length. Called before deciding.
pub fn pause_clocks(status: &mut DovecotBackendUpgradeStatus, paused: bool, now: Timestamp) {
    match (status.paused_since.clone(), paused) {
        (None, true) if status.backends.iter().any(|r| active(r) && !r.failed) => {
            status.paused_since = Some(Time(now));
        }
        (Some(since), false) => {
            let d = elapsed(&since, now);
            for r in status.backends.iter_mut().filter(|r| active(r)) {
                r.step_started = Time(after(r.step_started.0, d));
            }
            status.paused_since = None;
        }
        _ => {}
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
        Decision::Run { .. }
        | Decision::Begin(_)
        | Decision::Claim { .. }
        | Decision::Adopt { .. }
        | Decision::Undo { .. }
        | Decision::Wait {
            reason: WaitReason::StepInProgress,
            ..
        } => {
            if let Some(f) = status.backends.iter().find(|r| r.failed) {
                return failed_stall(f);
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

/// Folds a step's result into the record. Returns the events it implies.
pub fn apply_result(rec: &mut BackendStatus, result: &StepResult, now: Timestamp) -> Vec<Note> {
    let ran = rec.step;
    let notes = fold_result(rec, result, now);
    // "started" notes are about the next step, all others about the one that ran
    let pod = rec.pod.clone();
    notes
        .into_iter()
        .map(|n| {
            let s = if n.reason == EventReason::StepStarted {
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
            pod_uid,
            layout,
        } => {
            if let Some(l) = layout {
                rec.mail_layout = Some((**l).clone());
            }
            if let Some(ip) = new_ip {
                rec.new_ip = (ip != &rec.ip).then(|| ip.clone());
            }
            rec.bind_pod(step, pod_uid.as_deref());
            add_active(rec, now);
            // what the restore saw before it acted is of that restore only
            rec.restore_seen = None;
            rec.step = step.next();
            rec.step_started = Time(now);
            rec.attempts = 0;
            rec.retry_after = None;
            rec.last_error = None;
            if message.is_some() {
                rec.message = message.clone();
            }
            let mut notes = vec![Note::new(
                EventReason::StepSucceeded,
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
                Note::new(
                    EventReason::BackendUpgraded,
                    match &rec.relocation {
                        Some(_) => format!("{}: relocated and back in the ring", rec.pod),
                        None => format!("{}: upgraded and back in the ring", rec.pod),
                    },
                )
            } else {
                Note::new(
                    EventReason::StepStarted,
                    format!("{}: {} started", rec.pod, rec.step),
                )
            });
            notes
        }
        StepResult::Draining { message, poll, .. } => {
            let d = rec.drain.get_or_insert(DrainProgress::start(0, Time(now)));
            // said once per drain that turns blind: why sessions are waited for, not moved
            let blind = poll.unknown > 0 && d.unknown_sessions.is_none_or(|n| n == 0);
            d.unknown_sessions = (poll.unknown > 0).then_some(poll.unknown);
            if poll.listed {
                d.users_listed = Some(Time(now));
            }
            d.users_left = poll.users_left;
            d.without_session = Some(poll.without_session);
            d.sessions = Some(poll.sessions);
            d.sessions_moved += poll.sessions_moved;
            d.users_moved += poll.users_moved;
            d.predicted_end = poll.predicted_end.map(Time);
            d.observed = Time(now);
            rec.message = Some(message.clone());
            rec.attempts = 0;
            rec.retry_after = None;
            let mut notes = Vec::new();
            if blind {
                notes.push(Note::new(
                    EventReason::SessionsWaited,
                    format!(
                        "{}: {} sessions are waited for, not moved: the backend's process titles do not show whether they sit in IDLE or run a command (set verbose_proctitle = yes); users without a session are still moved",
                        rec.pod, poll.unknown
                    ),
                ));
            }
            if poll.sessions_moved + poll.users_moved > 0 {
                notes.push(Note::new(
                    EventReason::UsersMoved,
                    format!("{}: {message}", rec.pod),
                ));
            }
            notes
        }
        StepResult::Waiting { message, .. } => {
            rec.message = Some(message.clone());
            // attempts count consecutive transient failures: a poll that worked ends the run
            rec.attempts = 0;
            rec.retry_after = None;
            Vec::new()
        }
        StepResult::Rewind { to, message } => {
            if *to <= Step::Replace {
                rec.new_pod_uid = None;
                // past RingRestore the ring holds the pod's new IP: that entry is the one to
                // keep out now (drift takes it down) and to replace at the next RingRestore
                if rec.step > Step::RingRestore
                    && let Some(ip) = rec.new_ip.take()
                {
                    rec.ip = ip;
                }
            }
            add_active(rec, now);
            rec.restore_seen = None;
            rec.step = *to;
            rec.step_started = Time(now);
            rec.attempts = 0;
            rec.retry_after = None;
            rec.message = Some(message.clone());
            vec![Note::new(
                EventReason::StepRewound,
                format!("{}: {message}; back to {to}", rec.pod),
            )]
        }
        StepResult::Intend(intent) => {
            intent.record(rec);
            Vec::new()
        }
        StepResult::Failed(e) => {
            rec.failed = true;
            rec.last_error = Some(e.clone());
            rec.attempts += 1;
            vec![Note::new(EventReason::StepFailed, failure_message(rec))]
        }
        StepResult::Transient { error } => {
            rec.attempts += 1;
            rec.last_error = Some(error.clone());
            let wait = backoff(rec.attempts);
            rec.retry_after = Some(Time(after(now, wait)));
            rec.backoff_seconds = Some(rec.backoff_seconds.unwrap_or(0) + wait.as_secs());
            if rec.attempts >= MAX_ATTEMPTS {
                rec.failed = true;
                vec![Note::new(EventReason::StepFailed, failure_message(rec))]
            } else {
                vec![Note::new(
                    EventReason::StepRetrying,
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

/// Closes the records of pods that are gone for good: the StatefulSet's ordinal range
/// (`spec.ordinals.start`, `replicas` long) no longer holds their ordinal and the pod no longer
/// runs. Nothing will come back to finish them, so they neither
/// hold the rollout nor the ring's lock; their ring entries stay as they were, and the Event
/// says how to remove them.
pub fn close_removed(
    s: &Settings,
    status: &mut DovecotBackendUpgradeStatus,
    obs: &Observed,
    now: Timestamp,
) -> Vec<Note> {
    let Some((replicas, start)) = obs.sts.as_ref().map(|x| (x.replicas, x.ordinals_start)) else {
        return Vec::new();
    };
    let range = start..start.saturating_add(replicas);
    let mut notes = Vec::new();
    for rec in status.backends.iter_mut().filter(|r| active(r)) {
        if !obs.gone_for_good(&s.stateful_set, &rec.pod) {
            continue;
        }
        rec.removed = true;
        rec.retry_after = None;
        let message = format!(
            "{}: the StatefulSet now keeps {replicas} pods, ordinals {} to {}, so the pod is gone for good; its record is closed at {}. Its ring entry {} stays as it is (drained or down): remove it with doveadm director remove {} once it is decommissioned",
            rec.pod,
            range.start,
            range.end - 1,
            rec.step,
            rec.ip,
            rec.ip
        );
        rec.message = Some(message.clone());
        rec.step_started = Time(now);
        notes.push(Note::new(EventReason::BackendRemoved, message).about(&rec.pod, rec.step));
    }
    notes
}

/// Honors a new retry token: failed backends run again. One whose pod is not at the target
/// revision after Replace (e.g. the config was fixed by a newer revision) goes back to Reset:
/// the failed pod's cache is wiped and the pod replaced, nothing is reused from it. Not to
/// StopLmtp: a pod whose Dovecot refused its config never started, and every doveadm in it
/// fails on that config. Reset itself rewinds to StopLmtp when Dovecot runs in the pod. One
/// that failed its soak was drained again: it goes back to Verify (then RingRestore and a new
/// soak), never straight on from a soak that would find it out of the ring.
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
            rec.step = Step::Reset;
        } else if rec.step == Step::Soak {
            rec.step = Step::Verify;
        }
        rec.failing = None;
        rec.backoff_seconds = None;
        rec.failed = false;
        rec.attempts = 0;
        rec.retry_after = None;
        rec.step_started = Time(now);
        rec.message = Some(format!("retry requested ({RETRY_ANNOTATION}={token})"));
        notes.push(Note::new(
            EventReason::RetryRequested,
            format!("{}: retrying from {} (failed at {from})", rec.pod, rec.step),
        ));
    }
    notes
}

/// What recording one action produced besides the new status.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// Events it implies.
    pub notes: Vec<Note>,
    /// When to look again; None waits for a change.
    pub requeue: Option<Duration>,
    /// A step that succeeded, and how long it took since it started.
    pub finished: Option<(Step, Duration)>,
}

/// Folds what the engine did for `decision` into the status, and says when to look again.
/// `acted_at` is when the action ended: a step's duration ends and the next step starts there.
pub fn record(
    status: &mut DovecotBackendUpgradeStatus,
    decision: &Decision,
    acted: Acted,
    acted_at: Timestamp,
) -> Folded {
    let mut notes = Vec::new();
    let mut finished = None;
    if !matches!(decision, Decision::DryRun(_)) {
        status.plan = None;
    }
    let requeue = match (decision, acted) {
        // Secrets are not watched: look again soon after one may have been created
        (
            Decision::Stall {
                reason: StallReason::ProbeCredentialsUnreadable,
                ..
            },
            _,
        ) => Some(Duration::from_secs(15)),
        (Decision::Stall { .. } | Decision::Aborted { .. }, _) => Some(Duration::from_secs(300)),
        (Decision::Complete, _) => None,
        (Decision::Wait { requeue, .. }, _) => Some(*requeue),
        (Decision::DryRun(p), _) => {
            status.plan = Some((**p).clone());
            Some(Duration::from_secs(60))
        }
        (Decision::Begin(_), Acted::Checked(Err(_))) => Some(Duration::from_secs(2)),
        (Decision::Begin(rec), _) => {
            notes = begin(status, rec);
            Some(Duration::ZERO)
        }
        (
            Decision::Reassert {
                pod,
                commands,
                director,
            },
            Acted::Reasserted(res),
        ) => {
            let (note, requeue) = reasserted(pod, commands, director.as_deref(), res);
            notes.push(note);
            Some(requeue)
        }
        (Decision::Claim { pods }, Acted::Claimed(res)) => match res {
            Ok(()) => {
                // a slot granted now: the wait for it was not work (the window's prediction
                // counts a backend's time from here)
                let granted: Vec<&String> = pods
                    .iter()
                    .filter(|p| !status.ring_held.contains(p))
                    .collect();
                for r in status
                    .backends
                    .iter_mut()
                    .filter(|r| active(r) && r.step == Step::Drain && granted.contains(&&r.pod))
                {
                    r.step_started = Time(acted_at);
                }
                status.ring_held = pods.clone();
                Some(Duration::ZERO)
            }
            Err(e) => ring_write_failed(&mut notes, "take a slot", &e),
        },
        (Decision::Adopt { records }, Acted::Adopted(res)) => match res {
            Ok(()) => {
                notes = adopt(status, records, acted_at);
                Some(Duration::ZERO)
            }
            Err(e) => ring_write_failed(&mut notes, "take over left-out backends", &e),
        },
        (Decision::Undo { pod, .. }, Acted::Undone(undone)) => {
            let (n, requeue) = undone_in(status, pod, undone);
            notes.extend(n);
            Some(requeue)
        }
        (Decision::Run { pod, step, .. }, Acted::Ran(result)) => {
            let Some(idx) = status.backends.iter().position(|r| &r.pod == pod) else {
                return Folded {
                    notes,
                    requeue: Some(Duration::ZERO),
                    finished,
                };
            };
            if matches!(result, StepResult::Advanced { .. }) {
                finished = Some((*step, elapsed(&status.backends[idx].step_started, acted_at)));
            }
            let rec = &mut status.backends[idx];
            notes = apply_result(rec, &result, acted_at);
            let attempts = rec.attempts;
            record_finish(status, pod, acted_at);
            compact(status);
            Some(requeue_after(&result, attempts))
        }
        // an action that did not happen (a decision the engine could not act on): look again soon
        (_, _) => Some(Duration::ZERO),
    };
    Folded {
        notes,
        requeue,
        finished,
    }
}

/// When to look again after a step: at once after progress or a failure (the next decision says
/// what follows), when the step asked while it waits, with backoff after a transient error.
pub fn requeue_after(result: &StepResult, attempts: u32) -> Duration {
    match result {
        StepResult::Advanced { .. }
        | StepResult::Rewind { .. }
        | StepResult::Intend(_)
        | StepResult::Failed(_) => Duration::ZERO,
        StepResult::Waiting { requeue, .. } | StepResult::Draining { requeue, .. } => *requeue,
        StepResult::Transient { .. } => backoff(attempts),
    }
}

/// A write of the ring's record that did not land: another DBU changing it first is read
/// again at once, anything else (forbidden, invalid, the API server away) is a Warning and
/// backs off.
fn ring_write_failed(notes: &mut Vec<Note>, what: &str, e: &str) -> Option<Duration> {
    if e.starts_with("conflict") {
        return Some(Duration::from_secs(1));
    }
    notes.push(Note::new(
        EventReason::RingWriteFailed,
        format!("could not write the DovecotRing's record to {what}: {e}; retrying"),
    ));
    Some(Duration::from_secs(10))
}

/// Begin: the new record replaces any finished one of the same pod; the intent (Drain) is in
/// status before anything runs.
fn begin(status: &mut DovecotBackendUpgradeStatus, rec: &BackendStatus) -> Vec<Note> {
    status.backends.retain(|r| r.pod != rec.pod);
    status.backends.push(rec.clone());
    let kept_down = (!rec.restores_up()).then(|| {
        Note::new(
            EventReason::BackendKeptDown,
            format!(
                "{}: is down in the director ring (taken out by hand) before the rollout; it is upgraded and left down with {} vhosts",
                rec.pod, rec.original_vhosts
            ),
        )
        .about(&rec.pod, Step::Drain)
    });
    let started = match (rec.step, &rec.message) {
        // a pod that came back at a new IP: verified before it rejoins
        (Step::Verify, Some(m)) => format!("{}: {m}", rec.pod),
        _ if let Some(why) = &rec.relocation => format!(
            "{}: relocating for node maintenance ({why}), through the runbook ({} vhosts)",
            rec.pod, rec.original_vhosts
        ),
        _ => format!(
            "{}: upgrading from {} ({} vhosts)",
            rec.pod,
            rec.from_revision.as_deref().unwrap_or("?"),
            rec.original_vhosts
        ),
    };
    let mut notes = vec![
        Note::new(EventReason::BackendStarted, started).about(&rec.pod, rec.step),
        Note::new(
            EventReason::StepStarted,
            format!("{}: {} started", rec.pod, rec.step),
        )
        .about(&rec.pod, rec.step),
    ];
    notes.extend(kept_down);
    notes
}

/// Adopt: the records as the deleted DBU left them, their clocks started now; the claim that
/// follows registers them.
fn adopt(
    status: &mut DovecotBackendUpgradeStatus,
    records: &[BackendStatus],
    now: Timestamp,
) -> Vec<Note> {
    let mut notes = Vec::new();
    for r in records {
        let mut rec = r.clone();
        rec.step_started = Time(now);
        // the ring keeps a left-out backend down from StopDovecot on
        rec.downed |= rec.step >= Step::StopDovecot;
        rec.attempts = 0;
        rec.retry_after = None;
        let what = if rec.failed {
            "it had failed, so it stays out until a retry"
        } else {
            "its rollout goes on from there"
        };
        let m = format!(
            "{}: left out of the director ring by a deleted DovecotBackendUpgrade at step {}; adopted: {what}",
            rec.pod, rec.step
        );
        rec.message = Some(m.clone());
        notes.push(Note::new(EventReason::BackendAdopted, m).about(&rec.pod, rec.step));
        // not registered yet: the ring's record still holds it as left out until this DBU's
        // claim (the next pass) makes it its own, so a crash in between loses nothing
        status.backends.retain(|x| x.pod != rec.pod);
        status.backends.push(rec);
    }
    notes
}

/// Reassert: the Event, and a director that refuses is not hammered.
fn reasserted(
    pod: &str,
    commands: &[Vec<String>],
    director: Option<&str>,
    res: Result<(), String>,
) -> (Note, Duration) {
    let on = director.map(|d| format!(" on {d}")).unwrap_or_default();
    match res {
        Ok(()) => (
            Note::new(
                EventReason::RingReasserted,
                format!(
                    "{pod}: the director{on} showed it more available than its step allows (a director restart, a name resolved again, or the old entry of a pod that moved); re-applied: {}",
                    commands
                        .iter()
                        .map(|c| c.join(" "))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
            Duration::ZERO,
        ),
        Err(m) => (
            Note::new(EventReason::RingReassertFailed, format!("{pod}: {m}")),
            Duration::from_secs(10),
        ),
    }
}

/// Undo: a restored (or untouched) backend's record goes; one left out stays, marked failed, so
/// that it is named in Stalled and never put back without a human.
fn undone_in(
    status: &mut DovecotBackendUpgradeStatus,
    pod: &str,
    undone: Undone,
) -> (Option<Note>, Duration) {
    let Some(idx) = status.backends.iter().position(|r| r.pod == pod) else {
        return (None, Duration::ZERO);
    };
    let note = undone_note(&status.backends[idx], &undone);
    let requeue = match undone {
        Undone::Restored { .. } | Undone::Nothing
            if stays_finished(&status.backends[idx], &undone) =>
        {
            let r = &mut status.backends[idx];
            if r.step < Step::RingRestore {
                // never put in at its new IP: its pod's entry is the one it left
                r.new_ip = None;
            }
            r.step = Step::Done;
            Duration::ZERO
        }
        Undone::Restored { .. } | Undone::Nothing => {
            status.backends.remove(idx);
            Duration::ZERO
        }
        Undone::LeftOut(m) => {
            let r = &mut status.backends[idx];
            r.failed = true;
            r.message = Some(m);
            Duration::ZERO
        }
        Undone::Failed(_) => Duration::from_secs(10),
    };
    (note, requeue)
}

/// Whether an undone record stays as a finished one, the one memory of which entry its pod
/// is at in the ring and of its count and state there:
/// - back in the ring at its new IP, verified (RingRestore finished, or the soak cut short;
///   found by the model: a pod that moved again after an abort was never followed);
/// - a rejoin dropped for want of room before it put its pod in: its pod serves where it is
///   now, its entry is still the one the record names (the one it left, or the one an earlier
///   RingRestore of the record put it in at, before its pod was recreated), and the drift may
///   have taken that entry out since the pod left it. The record's count and state there are
///   the pod's, and the next rejoin puts them back (found by the model: the record went, the
///   ring's pass first saw the entry at 0, down, and the next rejoin took that for the pod's
///   own count and left it out while another backend was drained).
fn stays_finished(rec: &BackendStatus, undone: &Undone) -> bool {
    let restored = matches!(undone, Undone::Restored { .. } | Undone::Nothing)
        && rec.step >= Step::RingRestore
        && rec.new_ip.is_some();
    let dropped = matches!(undone, Undone::Nothing)
        && rec.rejoin
        && rec.step < Step::RingRestore
        && rec.stopped_pod_uid.is_none()
        && !rec.failed;
    restored || dropped
}

/// Every record that enters Verify while a probe is on carries its probe's token from the write
/// that put it there: the token is written before the probe message is delivered (only that
/// message is ever expunged), without a status write of its own as Verify's first pass made
/// (one write per step transition). Verify still writes one first for a record without it.
pub fn intend_probe(s: &Settings, status: &mut DovecotBackendUpgradeStatus, now: Timestamp) {
    if s.lmtp_probe.is_none() && s.imap_probe.is_none() {
        return;
    }
    for rec in status
        .backends
        .iter_mut()
        .filter(|r| active(r) && r.step == Step::Verify && r.probe_token.is_none())
    {
        rec.probe_token = Some(crate::probe::token(&rec.pod, now.as_millisecond()));
    }
}

/// After recording: progress, and the conditions for the decision as it settled.
pub fn conclude(
    s: &Settings,
    decision: &Decision,
    status: &mut DovecotBackendUpgradeStatus,
    obs: &Observed,
    generation: Option<i64>,
    now: Timestamp,
) {
    if let Some(target) = obs.sts.as_ref().and_then(|x| x.update_revision.as_deref()) {
        let now_seen = progress(status, obs, target);
        status.progress = Some(no_step_back(status.progress.as_deref(), now_seen));
    }
    drain_seen(s, status, obs, now);
    let after = settled(s, decision, status, obs, now);
    conditions::summarize(status, &after, generation, now);
}

/// The director's count of users left on every draining backend, at each reconcile that read
/// the ring. With strategy Wait the end is the ceiling: mappings of clients that stay
/// connected never expire, and the director cannot say which those are.
fn drain_seen(
    s: &Settings,
    status: &mut DovecotBackendUpgradeStatus,
    obs: &Observed,
    now: Timestamp,
) {
    let Some(ring) = &obs.ring else { return };
    for rec in status.backends.iter_mut() {
        if rec.step != Step::WaitSessions || !active(rec) {
            continue;
        }
        let Some(host) = ring.iter().find(|h| h.ip == rec.ip) else {
            continue;
        };
        let ceiling = Time(after(rec.step_started.0, s.drain_timeout));
        let d = rec
            .drain
            .get_or_insert(DrainProgress::start(host.users, Time(now)));
        if d.users_left != host.users {
            d.users_left = host.users;
            d.observed = Time(now);
        }
        if s.drain_strategy == DrainStrategy::Wait {
            d.predicted_end = Some(ceiling);
        }
    }
}

/// A spec that does not validate: Stalled with the field and the problem, and a Warning the
/// first time (an unchanged status means it was announced already).
pub fn invalid_spec(
    status: &mut DovecotBackendUpgradeStatus,
    problem: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Note> {
    stalled_before_any_step(status, StallReason::InvalidSpec, problem, generation, now)
}

/// Conditions (and a Warning the first time) while the DBU's ring cannot be settled.
pub fn ring_refused(
    status: &mut DovecotBackendUpgradeStatus,
    problem: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Note> {
    stalled_before_any_step(status, StallReason::RingConflict, problem, generation, now)
}

/// Stalled for `reason` before the machine is asked at all, with a Warning of the same reason
/// the first time.
fn stalled_before_any_step(
    status: &mut DovecotBackendUpgradeStatus,
    reason: StallReason,
    problem: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Note> {
    let before = status.clone();
    let d = Decision::stall(reason, problem);
    conditions::summarize(status, &d, generation, now);
    if *status == before {
        return Vec::new();
    }
    let event = match reason {
        StallReason::RingConflict => EventReason::RingConflict,
        _ => EventReason::InvalidSpec,
    };
    vec![Note::new(event, problem)]
}

/// Conditions (and a Warning the first time) while deleting waits for backends to go back.
pub fn deletion_pending(
    status: &mut DovecotBackendUpgradeStatus,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Note> {
    let before = status.clone();
    let d = Decision::wait(WaitReason::CleanupPending, message, Duration::from_secs(15));
    conditions::summarize(status, &d, generation, now);
    if *status == before {
        Vec::new()
    } else {
        vec![Note::new(EventReason::CleanupPending, message)]
    }
}

/// A DBU with no status yet: `observedGeneration` and `Reconciling=True` before anything else
/// (the finalizer, the first read of the world), so that kstatus, Argo CD and `kubectl wait`
/// never read a new DBU's missing status as done. False when a status exists already.
pub fn acknowledge(
    status: &mut DovecotBackendUpgradeStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    if !status.conditions.is_empty() {
        return false;
    }
    let d = Decision::wait(
        WaitReason::Initializing,
        "seen by the operator; reading the StatefulSet, its pods and the director ring",
        Duration::ZERO,
    );
    conditions::summarize(status, &d, generation, now);
    true
}

/// A backend in flight that the ring shows down before the operator ever wanted it down
/// (`downed`: RingRemove on, a failed soak, a left-out backend the ring kept down; a retry
/// that rewinds keeps it) and before RingRemove: a human did. Its record then restores it
/// down, so RingRestore never undoes the human's down (found by the model: a human's
/// `director down` between Begin and RingRemove was undone by RingRestore's `up`); a human's
/// `up` of a backend down before the rollout is kept the same way.
pub fn human_downs(status: &mut DovecotBackendUpgradeStatus, obs: &Observed) -> Vec<Note> {
    // every director's view this pass read: a human may have used any of them
    let views: Vec<&Vec<crate::dovecot::RingHost>> = obs.ring_views().collect();
    let mut notes = Vec::new();
    for rec in status.backends.iter_mut().filter(|r| active(r)) {
        // from RingRemove to RingRestore the operator downs and ups it itself; in the soak it
        // is up by the operator's restore, and a down is a human's again
        let own_steps = rec.step > Step::StopDovecot && rec.step != Step::Soak;
        if rec.downed || rec.failing.is_some() || own_steps {
            continue;
        }
        // in the soak the backend is in at the IP RingRestore put it in at
        let ip = match rec.step {
            Step::Soak => rec.new_ip.clone().unwrap_or_else(|| rec.ip.clone()),
            _ => rec.ip.clone(),
        };
        // an IP another pod has now is that pod's entry: its down is not this backend's
        // (found by the model: another pod's rejoin downed it, and this one went back down);
        // what it was for this pod is what the ring's pass kept when it first saw the pod
        // leave (a human's change before that is this pod's; found by the model with seed
        // 4242: a human's `up` made while the ring could not be read, before the pod moved and
        // another took its IP, was lost, and the pod went back down at its new IP)
        let rows: Vec<bool> = if obs.others_state_at(&ip, &rec.pod) {
            match obs
                .ring_former
                .iter()
                .find(|f| f.ip == ip && f.pod == rec.pod && f.counts_for(&rec.pod))
            {
                Some(f) => vec![f.up],
                None => continue,
            }
        } else {
            views
                .iter()
                .filter_map(|v| v.iter().find(|h| h.ip == ip).map(|h| h.up))
                .collect()
        };
        if rows.is_empty() {
            continue;
        }
        let (down_somewhere, up_everywhere) = (rows.contains(&false), rows.iter().all(|u| *u));
        let (reason, what) = if down_somewhere && rec.restores_up() {
            rec.original_up = Some(false);
            (
                EventReason::BackendKeptDown,
                "taken down in the director ring by hand during the rollout; it is upgraded and left down",
            )
        } else if up_everywhere && !rec.restores_up() && rec.step != Step::Soak {
            // (not in the soak: a director that restarted since RingRestore downed it shows it
            // up, and that is no human's)
            // a human put back up a host they had taken down before the rollout
            rec.original_up = Some(true);
            (
                EventReason::BackendKeptUp,
                "put back up in the director ring by hand during the rollout; it is restored up",
            )
        } else {
            continue;
        };
        notes.push(
            Note::new(
                reason,
                format!("{}: {what} with {} vhosts", rec.pod, rec.original_vhosts),
            )
            .about(&rec.pod, rec.step),
        );
    }
    notes
}

/// A backend in flight that the director the operator commands shows at a vhost count other
/// than 0 and other than its record's: a human set it (`director update`) after Begin. The
/// record then restores that count, so RingRestore never undoes it (found by the model: a
/// count set during the drain was put back to the one recorded at Begin). The operator still
/// holds the backend at 0 until it is verified; only the count it goes back at changes.
/// Folded before the decision, so that the restore in this very pass uses it.
///
/// Only the commanded director's view is read: another one may lag and show a count from
/// before Begin. RingRestore's own `update` sets the recorded count, so a count seen then
/// that differs is still a human's; from Soak on the backend serves and its count is the
/// human's to set. A restart of every director resets counts to the default (100), which
/// cannot be told from a human's 100: that one count is never taken for a human's.
pub fn human_counts(status: &mut DovecotBackendUpgradeStatus, obs: &Observed) -> Vec<Note> {
    status
        .backends
        .iter_mut()
        .filter(|r| active(r))
        .filter_map(|rec| {
            // adopted, not claimed yet: the ring's record still holds it as left out, and the
            // ring's pass folds a human's count into its copy there (then zeroes the host); the
            // record takes that copy's count and reads none itself until its claim makes it
            // its own (found by the model: the count the pass folded was lost when the claim
            // replaced the copy, and the backend went back at the count from before)
            if let Some(copy) = obs.left_out_copy(&rec.pod) {
                return take_ring_count(rec, copy);
            }
            let view = obs.ring.as_ref()?;
            let read_new = new_entry_read(&obs.ring_former, rec);
            // an IP another pod has now is that pod's entry: a count there is not this
            // backend's (found by the model: the count another record restored at a moved
            // pod's old IP was taken for a human's, and the moved pod rejoined at it); its new
            // entry still is (found by the model: a human's count there, after a restore whose
            // status write was lost, was overwritten when the restore ran again)
            // and so is one another pod's rejoin put back at since this one left it
            if obs.others_state_at(&rec.ip, &rec.pod) {
                let own: Vec<_> = view.iter().filter(|h| h.ip != rec.ip).cloned().collect();
                return read_new
                    .then(|| keep_human_count(rec, &own, true))
                    .flatten();
            }
            keep_human_count(rec, view, read_new)
        })
        .collect()
}

/// An adopted record takes the count the ring's pass folded into the ring's copy of it.
fn take_ring_count(rec: &mut BackendStatus, copy: &BackendStatus) -> Option<Note> {
    if copy.original_vhosts == rec.original_vhosts {
        return None;
    }
    Some(kept_count(
        rec,
        copy.original_vhosts,
        "while it was left out",
    ))
}

/// Records a human's count `vhosts` as the one `rec` goes back at, with the Event.
fn kept_count(rec: &mut BackendStatus, vhosts: u32, when: &str) -> Note {
    let was = std::mem::replace(&mut rec.original_vhosts, vhosts);
    Note::new(
        EventReason::BackendVhostsKept,
        format!(
            "{}: vhost count set to {vhosts} in the director ring by hand {when} (recorded {was}); it is held at 0 until verified and goes back at {vhosts}",
            rec.pod
        ),
    )
    .about(&rec.pod, rec.step)
}

/// Whether the entry at a record's new IP is read for a human's count: only at RingRestore,
/// whose restore adds it at the recorded count (a count there other than that, 0 or the
/// default is then a human's; found by the model: one set after the restore's `add`, in a
/// pass cut short, was overwritten when the restore ran again). Before, an entry there is what
/// another pod left, held at 0 while this one is verified (found by the model: the count a
/// moved pod left at the IP another pod rejoined at was taken for a human's); one the ring's
/// record says stands for another pod is that pod's still, until the restore wrote what it saw
/// there (`restore_seen`) before its first command (found by the model: a human's count on a
/// pod put back at another pod's old IP, in a pass whose status write was lost, was overwritten
/// when the restore ran again).
pub fn new_entry_read(stood_for: &[crate::api::StoodFor], rec: &BackendStatus) -> bool {
    rec.step == Step::RingRestore
        && rec.new_ip.as_deref().is_some_and(|n| {
            rec.restore_seen.is_some() || !stood_for.iter().any(|f| f.ip == n && f.pod != rec.pod)
        })
}

/// Folds a count a human set (see `human_counts`) into one record that has yet to go back
/// (in flight, or left out of the ring by a deleted DBU), with the Event that says so. A
/// record whose pod came back at a new IP reads the entry there first when `new_entry` allows
/// (found by the model: a human's count on the host a rejoin had just added was overwritten
/// when the restore, cut short, ran again).
pub fn keep_human_count(
    rec: &mut BackendStatus,
    view: &[crate::dovecot::RingHost],
    new_entry: bool,
) -> Option<Note> {
    if rec.failing.is_some() || rec.failed || rec.step > Step::RingRestore {
        return None;
    }
    let at = |ip: &str| view.iter().find(|h| h.ip == ip);
    let host = rec
        .new_ip
        .as_deref()
        .filter(|n| new_entry && *n != rec.ip)
        .and_then(at)
        .or_else(|| at(&rec.ip))?;
    // the default is what a ring whose directors all restarted shows for every host: not a
    // human's (a real-Dovecot test caught the restart's 100 taken for one; a human who wants
    // 100 sets it after the rollout)
    if [0, rec.original_vhosts, crate::dovecot::DEFAULT_VHOSTS].contains(&host.vhosts) {
        return None;
    }
    // what another pod left at the new entry before the restore began is not a human's
    if new_entry
        && rec.new_ip.as_deref() == Some(host.ip.as_str())
        && rec.restore_seen == Some(host.vhosts)
    {
        return None;
    }
    Some(kept_count(rec, host.vhosts, "while it was out"))
}

/// Marks the records whose step wants the backend down in the ring (see `BackendStatus::downed`).
/// Put back (Soak, not failing), the backend is up by the operator's own RingRestore: a down
/// seen from then on is a human's again (found by the model: a rejoin that had downed its old
/// IP took a human's down of its new one, in its soak, for its own).
pub fn mark_downed(status: &mut DovecotBackendUpgradeStatus) {
    for rec in status.backends.iter_mut().filter(|r| active(r)) {
        if super::steps::held_state(rec).down {
            rec.downed = true;
        } else if rec.step == Step::Soak && rec.failing.is_none() {
            rec.downed = false;
        }
    }
}
