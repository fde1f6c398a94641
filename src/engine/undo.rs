//! Puts one in-flight backend back into the ring, or leaves it out, as `machine::cleanup` says.

use dbu_core::api::{BackendStatus, Step};
use dbu_core::machine::{self, Cleanup, StepResult, Undone, judge};

use super::runner::Runner;
use super::step::{StepContext, run_step};

/// Undoes one backend (abort or DBU deletion). Safe to repeat.
pub(crate) async fn undo(cx: &StepContext<'_>, rec: &BackendStatus, action: Cleanup) -> Undone {
    let r = Runner::for_record(cx.s, cx.exec, cx.obs.director.as_deref(), rec);
    let action = match action {
        Cleanup::RestoreIfRunning => match r.dovecot_running().await {
            Ok(running) => machine::if_running(rec, running),
            Err(e) => {
                return Undone::Failed(format!(
                    "{}: could not tell whether Dovecot runs: {e:?}",
                    rec.pod
                ));
            }
        },
        c => c,
    };
    match action {
        Cleanup::Restore => match restore(cx, &r, rec).await {
            Ok(()) => Undone::Restored,
            Err(e) => Undone::Failed(format!("{}: could not put it back: {e:?}", rec.pod)),
        },
        Cleanup::LeaveOut(m) => Undone::LeftOut(m),
        Cleanup::Nothing | Cleanup::RestoreIfRunning => Undone::Nothing,
    }
}

async fn restore(
    cx: &StepContext<'_>,
    r: &Runner<'_>,
    rec: &BackendStatus,
) -> Result<(), StepResult> {
    if rec.step == Step::RingRestore {
        // verified already: finishing the step is the restore
        return match run_step(cx, rec, None).await {
            StepResult::Advanced { .. } => Ok(()),
            other => Err(other),
        };
    }
    judge::record_ip(&rec.ip, rec.step)?;
    for c in machine::restore_commands(cx.s, rec).unwrap_or_default() {
        r.run(c.on, &c.argv, c.kind).await?;
    }
    Ok(())
}
