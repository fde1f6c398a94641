//! The step machine, pure: decide the next action, judge each step's outputs, fold results into status.
//!
//! Data flows one way: the engine observes and hands `Observed` to [`decide`]; it runs what the
//! decision names and hands the outputs to [`judge`]; [`record`] folds the result into status and
//! [`conclude`] writes progress and conditions. Nothing here does I/O or reads the clock.

mod cleanup;
mod decide;
mod decision;
mod dry_run;
mod fold;
mod gates;
pub mod judge;
mod note;
mod observed;

pub use cleanup::{
    Cleanup, Command, On, cleanup_for, cleanup_without_director, if_running, restore_commands,
    undone_note,
};
pub use decide::{active, check_world, decide, outdated, ring_drift};
pub use decision::{Acted, Decision, MAX_ATTEMPTS, StepResult, Undone};
pub use dry_run::{PLAN_LIMIT, dry_run, steps_for};
pub use fold::{
    DONE_KEPT, Recorded, apply_result, apply_retry, compact, conclude, failure_message,
    invalid_spec, progress, record, record_finish, requeue_after, retarget, settled,
};
pub use judge::{ReplaceMove, drain_outcome, replace_move};
pub use note::Note;
pub use observed::{Claimant, Missing, Observed, PodView, StsView, claimed_by_other, missing};

#[cfg(test)]
mod tests;
