//! The step machine, pure: decide the next action, judge each step's outputs, fold results into status.
//!
//! Data flows one way: the engine observes and hands `Observed` to [`decide`]; it runs what the
//! decision names and hands the outputs to [`judge`]; [`record`] folds the result into status and
//! [`conclude`] writes progress and conditions. Nothing here does I/O or reads the clock.

// the layer order (each module uses only those below it) is in tests/layers.rs
mod cleanup;
pub mod conditions;
mod decide;
mod decision;
pub mod drain;
mod dry_run;
pub mod face;
mod fold;
mod gates;
pub mod judge;
pub mod lock;
mod needs;
mod note;
mod observed;
pub mod ring;
pub mod split;
mod stages;
mod start;
pub mod steps;

pub use cleanup::{Deletion, cleanup_for, kept_by_hand, never_held, undone_note};
pub use decide::{argv_towards, check_world, decide, revision_pending, ring_drift};
pub use decision::{
    Acted, Cleanup, Command, Decision, DrainPoll, Intent, MAX_ATTEMPTS, On, StepResult, Undone,
    active,
};
pub use dry_run::{PLAN_LIMIT, dry_run};
pub use fold::{
    DONE_KEPT, Folded, acknowledge, apply_result, apply_retry, close_removed, compact, conclude,
    deletion_pending, human_counts, human_downs, invalid_spec, no_step_back, pause_clocks,
    progress, record, record_finish, requeue_after, retarget, ring_refused, settled,
};
pub use judge::{ReplaceMove, drain_outcome, replace_move};
pub use needs::{cached_lock_stands, lock_with_ring, missing};
pub use note::{Note, failed_stall, failure_message};
pub use observed::{
    Claimant, Missing, Observed, PodView, RingHolder, RingLock, StsView, Waiter, claimed_by_other,
    target_unconfirmed, unconfirmed,
};
pub use stages::{
    CHAIN_ROUNDS, Prepared, Recorded, chain_from, chain_into, decide_prepared, fold_ring_read,
    prepare, record as record_stage,
};
pub use start::outdated;
pub use steps::{ExecOutput, steps_for};
pub use steps::{if_running, restore_commands};

#[cfg(test)]
mod tests;
