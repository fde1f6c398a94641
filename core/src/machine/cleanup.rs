//! What undoing a backend means at each step, for `spec.abort` and for deleting the DBU.

use crate::api::{BackendStatus, DovecotBackendUpgradeStatus, FORCE_DELETE_ANNOTATION, Step};
use crate::dovecot::{self, CommandKind};
use crate::reason::EventReason;
use crate::settings::Settings;

use super::decision::{Cleanup, Command, On, Undone, active};
use super::note::Note;

pub fn cleanup_for(rec: &BackendStatus) -> Cleanup {
    if rec.failed {
        return Cleanup::LeaveOut(format!(
            "{}: failed at {}; left out of the ring for a human to check",
            rec.pod, rec.step
        ));
    }
    match rec.step {
        Step::Drain | Step::WaitSessions => Cleanup::Restore,
        // the restore reloads Dovecot to re-open LMTP: only a running one can be put back
        Step::StopLmtp | Step::StopDovecot => Cleanup::RestoreIfRunning,
        Step::RingRemove | Step::Reset | Step::Replace | Step::Verify => {
            Cleanup::LeaveOut(format!(
                "{}: deleted at step {}, after Dovecot was stopped; left out of the ring (restore by hand with doveadm director update <ip> {} and director up <ip>)",
                rec.pod, rec.step, rec.original_vhosts
            ))
        }
        // verified already: finishing the restore is the safe thing
        Step::RingRestore => Cleanup::Restore,
        // back in the ring and verified; a failed soak drained it again (failed: left out)
        Step::Soak | Step::Done => Cleanup::Nothing,
    }
}

/// `RestoreIfRunning` once the engine has looked: restore a running Dovecot, else leave it out.
pub fn if_running(rec: &BackendStatus, running: bool) -> Cleanup {
    if running {
        Cleanup::Restore
    } else {
        Cleanup::LeaveOut(format!(
            "{}: Dovecot was already stopped; left out of the ring (restore by hand with doveadm director update <ip> {} and director up <ip>)",
            rec.pod, rec.original_vhosts
        ))
    }
}

/// The commands that put a backend before RingRestore back: reload re-opens the LMTP listener
/// that `service stop` closed, then the recorded vhost count and `up` (or `down`, for a backend
/// a human had taken down before the rollout). None when the record's
/// IP is unusable. (A backend at RingRestore is restored by running that step.)
pub fn restore_commands(s: &Settings, rec: &BackendStatus) -> Option<Vec<Command>> {
    let ip = dovecot::validate_ip(&rec.ip).ok()?;
    let mut cmds = Vec::new();
    if rec.step >= Step::StopLmtp {
        cmds.push(Command {
            on: On::Backend,
            argv: s.backend.reload(),
            kind: CommandKind::Plain,
        });
    }
    let state = if rec.restores_up() {
        s.director.director_up(ip)
    } else {
        s.director.director_down(ip)
    };
    for argv in [s.director.director_update(ip, rec.original_vhosts), state] {
        cmds.push(Command {
            on: On::Director,
            argv,
            kind: CommandKind::Plain,
        });
    }
    Some(cmds)
}

/// The Event an undo implies.
pub fn undone_note(rec: &BackendStatus, undone: &Undone) -> Option<Note> {
    let n = match undone {
        Undone::Restored => Note::new(
            EventReason::BackendRestored,
            format!(
                "{}: put back into the ring with {} vhosts{}",
                rec.pod,
                rec.original_vhosts,
                if rec.restores_up() {
                    ""
                } else {
                    ", left down as it was before the rollout"
                }
            ),
        ),
        Undone::LeftOut(m) => Note::new(EventReason::BackendLeftOut, m.clone()),
        Undone::Failed(m) => Note::new(EventReason::BackendRestoreFailed, m.clone()),
        Undone::Nothing => return None,
    };
    Some(n.about(&rec.pod, rec.step))
}

/// How deleting a DBU ends for its in-flight backends, once each was undone (or could not be).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deletion {
    pub notes: Vec<Note>,
    /// Backends that stay out of the ring, with their records: the ring's lock keeps them for
    /// the next DBU of the StatefulSet.
    pub left: Vec<BackendStatus>,
    /// Why the finalizer must stay: backends that should go back and could not yet.
    pub pending: Vec<String>,
}

impl Deletion {
    /// Adds how one backend's undo ended.
    pub fn undone(&mut self, rec: &BackendStatus, undone: Undone) {
        self.notes.extend(undone_note(rec, &undone));
        match undone {
            Undone::Restored | Undone::Nothing => {}
            Undone::LeftOut(m) => self.left.push(BackendStatus {
                message: Some(m),
                ..rec.clone()
            }),
            Undone::Failed(m) => self.pending.push(m),
        }
    }

    /// A backend that should go back but no Ready director can take it.
    pub fn no_director(&mut self, rec: &BackendStatus) {
        match cleanup_for(rec) {
            Cleanup::LeaveOut(m) => self.undone(rec, Undone::LeftOut(m)),
            Cleanup::Nothing => {}
            Cleanup::Restore | Cleanup::RestoreIfRunning => self.pending.push(format!(
                "{}: at {} and no Ready director to put it back",
                rec.pod, rec.step
            )),
        }
    }

    /// `mailops.io/force-delete`: nothing is undone; every in-flight backend stays as it is.
    pub fn forced(status: &DovecotBackendUpgradeStatus) -> Self {
        let left: Vec<BackendStatus> = status
            .backends
            .iter()
            .filter(|r| active(r))
            .cloned()
            .collect();
        let mut d = Deletion::default();
        if !left.is_empty() {
            d.notes.push(Note::new(
                EventReason::CleanupForced,
                format!(
                    "deleted with {FORCE_DELETE_ANNOTATION}: left as they are, out of the ring: {}; the next DovecotBackendUpgrade of the StatefulSet takes them over",
                    names(&left)
                ),
            ));
        }
        d.left = left;
        d
    }

    /// The finalizer may go: nothing that should go back is still out.
    pub fn finished(&self) -> bool {
        self.pending.is_empty()
    }

    /// Why deleting waits, for the condition and the Event.
    pub fn pending_message(&self) -> String {
        format!(
            "deleting waits until the backends it took out are back: {}; retrying with backoff (annotate {FORCE_DELETE_ANNOTATION}=true to delete anyway and leave them as they are)",
            self.pending.join("; ")
        )
    }
}

fn names(recs: &[BackendStatus]) -> String {
    recs.iter()
        .map(|r| format!("{} (at {})", r.pod, r.step))
        .collect::<Vec<_>>()
        .join(", ")
}
