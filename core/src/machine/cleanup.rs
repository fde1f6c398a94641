//! What undoing a backend means at each step, for `spec.abort` and for deleting the DBU.

use crate::api::{BackendStatus, DovecotBackendUpgradeStatus, Step};
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
        Step::Done => Cleanup::Nothing,
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

/// What deleting the DBU does when no director can be reached: nothing can be undone, say so.
pub fn cleanup_without_director(status: &DovecotBackendUpgradeStatus) -> Vec<Note> {
    if status.backends.iter().any(active) {
        vec![Note::new(
            EventReason::CleanupSkipped,
            "no Ready director: backends in flight were left as they are",
        )]
    } else {
        Vec::new()
    }
}
