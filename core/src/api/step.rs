//! The runbook's steps of one backend, in order.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Steps of one backend, in runbook order. The recorded step is the one intended or in progress;
/// it is advanced only after it succeeded, so a restart re-runs it (every step is idempotent).
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::Display,
)]
pub enum Step {
    Drain,
    WaitSessions,
    StopLmtp,
    StopDovecot,
    RingRemove,
    Reset,
    Replace,
    Verify,
    RingRestore,
    Soak,
    Done,
}

impl Step {
    /// Every step, in the order a backend goes through them.
    pub const ALL: &'static [Step] = <Step as strum::VariantArray>::VARIANTS;

    /// The step after this one (Done stays Done).
    pub fn next(self) -> Step {
        let i = self as usize;
        Step::ALL[(i + 1).min(Step::ALL.len() - 1)]
    }

    /// The name in status and Events (the variant's, as serde writes it).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
