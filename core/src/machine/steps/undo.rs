//! Undo (abort, DBU deletion) as a script: put a backend back, or leave it out, as its step's
//! `undo` says, looking first whether Dovecot runs where that decides.

use crate::api::{BackendStatus, Step};
use crate::dovecot::{self, CommandKind};
use crate::settings::Settings;

use super::super::decision::{Cleanup, Command, Undone};
use super::{Cx, Halt, On, Run, StepResult, judge, ring_restore};

/// Undoes the backend of `cx.rec` by `action`. Safe to repeat.
pub fn run(cx: &mut Cx<'_>, action: Cleanup) -> Run<Undone> {
    let rec = cx.rec;
    let action = match action {
        Cleanup::RestoreIfRunning => {
            match read(
                cx.dovecot_running(),
                rec,
                "could not tell whether Dovecot runs",
            ) {
                Ok(running) => if_running(rec, running),
                Err(end) => return end,
            }
        }
        c => c,
    };
    // a backend goes back only in the pod the rollout found: one that replaced it (a retry's
    // rewind forgets Replace's pod, an eviction, a new template) is unverified (found by the
    // model: a skip after a failed Verify and a retry put the broken pod back)
    if rec.step == Step::Drain && cx.obs.ring.is_none() {
        // whether Drain took it out decides what goes back: never guessed
        return Ok(Undone::Failed(format!(
            "{}: the director ring could not be read; it is looked at again",
            rec.pod
        )));
    }
    let action = match action {
        Cleanup::Restore if rec.step != Step::RingRestore && !untouched(cx) => {
            match read(replaced(cx), rec, "could not read its pod") {
                Ok(None) => Cleanup::Restore,
                Ok(Some(why)) => Cleanup::LeaveOut(super::left_out_message(rec, &why)),
                Err(end) => return end,
            }
        }
        c => c,
    };
    // put back, its pod since gone to another IP (as the API server has it: a lagging cache
    // may show the one before): its entry serves nobody and the new IP is not in the ring, so
    // it is left for the next DBU to rejoin, not let go with nothing (found by the model: the
    // DBU deleted in the soak of a pod that moved again, and no ring's pass had seen the entry
    // as its)
    let action = match action {
        Cleanup::Nothing if rec.step == Step::Soak && !rec.failed => {
            match read(moved_since(cx), rec, "could not read its pod") {
                Ok(Some(why)) => Cleanup::LeaveOut(super::left_out_message(rec, &why)),
                Ok(None) => Cleanup::Nothing,
                Err(end) => return end,
            }
        }
        c => c,
    };
    // a rejoin that took nothing out yet (its pod serves where the ring sends users) leaves
    // nothing out: kept out, the next DBU would take that serving host out unasked (found by
    // the model: beside another DBU's drain)
    let action = match action {
        Cleanup::LeaveOut(_) if super::rejoining(rec) => match cx.obs.ring.as_deref() {
            None => {
                return Ok(Undone::Failed(format!(
                    "{}: the director ring could not be read; it is looked at again",
                    rec.pod
                )));
            }
            Some(ring) if super::takes_out_serving(rec, ring, cx.obs) => Cleanup::Nothing,
            Some(_) => action,
        },
        c => c,
    };
    match action {
        Cleanup::Restore => match restore(cx) {
            Ok(human_down) => Ok(Undone::Restored { human_down }),
            Err(Halt::Need(a)) => Err(Halt::Need(a)),
            // the pod verified is gone (found by the model: an abort at RingRestore after the
            // pod was recreated failed for ever): the one under its name now is unverified
            Err(Halt::Done(StepResult::Rewind { message, .. })) => {
                Ok(Undone::LeftOut(super::left_out_message(rec, &message)))
            }
            Err(Halt::Done(e)) => Ok(Undone::Failed(format!(
                "{}: could not put it back: {e:?}",
                rec.pod
            ))),
        },
        Cleanup::LeaveOut(m) => Ok(Undone::LeftOut(m)),
        Cleanup::Nothing | Cleanup::RestoreIfRunning => Ok(Undone::Nothing),
    }
}

/// A backend whose Drain has not taken it out yet (the ring shows it at its count): nothing of
/// it is the operator's to keep out.
fn untouched(cx: &Cx<'_>) -> bool {
    let rec = cx.rec;
    rec.step == Step::Drain
        && cx
            .obs
            .ring
            .iter()
            .flatten()
            .any(|h| h.ip == rec.ip && h.vhosts > 0)
}

/// Why the pod under the record's name is not the one the rollout started from (it is at a new
/// IP not put in yet, or its revision is not `from_revision`), or None when it is.
fn replaced(cx: &mut Cx<'_>) -> Run<Option<String>> {
    let rec = cx.rec;
    // its pod is at another IP, not put in there yet (a rejoin, or a rewind after Replace found
    // a new IP): the recorded entry is nobody's (or another pod's), and the pod at the new one
    // was never verified (found by the model: a skip after a retry rewound a rejoin to StopLmtp
    // and put its old, dead entry back)
    if let Some(n) = rec.new_ip.as_deref().filter(|n| *n != rec.ip) {
        return Ok(Some(format!(
            "it came back at {n} (was {}) and was never verified there",
            rec.ip
        )));
    }
    let pod = cx.pod_now()?;
    // its pod came back at another IP before Replace (deleted, evicted, its node drained): the
    // recorded entry serves nobody now, and the pod at the new one was never verified (found
    // by the model: a DBU deleted mid-drain of a relocated pod put its dead entry back)
    if let Some(at) = pod
        .as_ref()
        .and_then(|p| p.ip.as_deref())
        .filter(|ip| *ip != rec.ip)
    {
        return Ok(Some(format!(
            "it came back at {at} (was {}) and was never verified there",
            rec.ip
        )));
    }
    let Some(from) = rec.from_revision.as_deref() else {
        return Ok(None);
    };
    let now = pod.as_ref().and_then(|p| p.revision.as_deref());
    Ok((now != Some(from)).then(|| {
        format!(
            "its pod is not the one the rollout started from (revision {}, not {from}) and was never verified",
            now.unwrap_or("none")
        )
    }))
}

/// What a read the undo needs gave, or how the undo ends without it: the read asked of the
/// engine, or the undo failed, saying `what` went wrong (it is tried again).
fn read<T>(r: Run<T>, rec: &BackendStatus, what: &str) -> Result<T, Run<Undone>> {
    match r {
        Ok(v) => Ok(v),
        Err(Halt::Need(a)) => Err(Err(Halt::Need(a))),
        Err(Halt::Done(e)) => Err(Ok(Undone::Failed(format!("{}: {what}: {e:?}", rec.pod)))),
    }
}

/// Why a backend put back is no longer where it was put in (its pod has another IP now), or
/// None when it is (or has no pod now: it may come back at the same IP).
fn moved_since(cx: &mut Cx<'_>) -> Run<Option<String>> {
    let rec = cx.rec;
    let put_in = rec.new_ip.as_deref().unwrap_or(&rec.ip).to_string();
    let pod = cx.pod_now()?;
    Ok(pod
        .and_then(|p| p.ip)
        .filter(|ip| *ip != put_in)
        .map(|ip| format!("came back at {ip} after it was put in at {put_in}")))
}

/// Puts the backend back; true when it is left down because a human took it down.
fn restore(cx: &mut Cx<'_>) -> Run<bool> {
    let rec = cx.rec;
    if rec.step == Step::RingRestore {
        // verified already: finishing the step is the restore
        let pod = cx.bound_pod()?;
        let (old, new, now_ip) = judge::restore_ips(rec, pod.as_ref())?;
        return match ring_restore::put_back(cx, old, new, now_ip)? {
            StepResult::Advanced { .. } => Ok(false),
            other => Err(Halt::Done(other)),
        };
    }
    judge::record_ip(&rec.ip, rec.step)?;
    let human_down = human_downed(cx);
    // a count the ring shows above 0 at Drain is not the operator's (Drain only ever sets 0):
    // it stays, whoever set it (found by the model: the entry a moved pod left, taken by another
    // pod a human had given its count, was set back to the first pod's count)
    let set_count = !untouched(cx);
    for c in restore_commands(cx.s, rec, human_down, set_count).unwrap_or_default() {
        cx.run(c.on, &c.argv, c.kind)?;
    }
    Ok(human_down)
}

/// Whether the ring shows the backend down although its step never took it down (before
/// RingRemove) and it was up before the rollout: a human did, and it stays so.
fn human_downed(cx: &Cx<'_>) -> bool {
    let rec = cx.rec;
    rec.restores_up()
        && !super::ring_state(rec).down
        // a down the operator wanted (earlier, before a rewind) is not a human's
        && !rec.downed
        && cx
            .obs
            .ring
            .iter()
            .flatten()
            .any(|h| h.ip == rec.ip && !h.up)
}

/// `RestoreIfRunning` once the engine has looked: restore a running Dovecot, else leave it out.
pub fn if_running(rec: &BackendStatus, running: bool) -> Cleanup {
    if running {
        Cleanup::Restore
    } else {
        Cleanup::LeaveOut(super::left_out_message(rec, "Dovecot was already stopped"))
    }
}

/// The commands that put a backend before RingRestore back: reload re-opens the LMTP listener
/// that `service stop` closed (at StopLmtp or after, or back at the drain since), then the recorded vhost count and `up` (or `down`, for a backend
/// a human had taken down before the rollout, or during it: `keep_down`); the count only when
/// `set_count` (not for a backend Drain never took out). None when the record's IP is unusable.
/// (A backend at RingRestore is restored by running that step.)
pub fn restore_commands(
    s: &Settings,
    rec: &BackendStatus,
    keep_down: bool,
    set_count: bool,
) -> Option<Vec<Command>> {
    let ip = dovecot::validate_ip(&rec.ip).ok()?;
    let mut cmds = Vec::new();
    // StopLmtp records where the mail is when it closes LMTP: a record sent back to the drain
    // since (users mapped to it again while its Dovecot ran) has LMTP closed too (found by the
    // model: a skip's restore put it back with LMTP closed, and the next backend drained made
    // two out)
    if rec.step >= Step::StopLmtp || rec.mail_layout.is_some() {
        cmds.push(Command {
            on: On::Backend,
            argv: s.backend.reload(),
            kind: CommandKind::Plain,
        });
    }
    // up or down is touched only where the operator took the backend down itself: before that
    // the host's state is a human's, whatever it is now (found by the model: an abort's
    // restore put `down` back on a host a human had put up again)
    let state = match (rec.downed, rec.restores_up() && !keep_down) {
        (false, _) => None,
        (true, true) => Some(s.director.director_up(ip)),
        (true, false) => Some(s.director.director_down(ip)),
    };
    let count = set_count.then(|| s.director.director_update(ip, rec.original_vhosts));
    for argv in count.into_iter().chain(state) {
        cmds.push(Command {
            on: On::Director,
            argv,
            kind: CommandKind::Plain,
        });
    }
    Some(cmds)
}
