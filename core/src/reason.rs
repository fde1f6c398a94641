//! Typed reasons for waits, stalls and events: each has one wire name, so no module matches strings.

/// What every reason kind offers besides strum's derives: its variants, and its wire name (the
/// variant's, CamelCase and stable) both ways.
macro_rules! wire_names {
    ($($name:ident),+) => {$(
        impl $name {
            pub const ALL: &'static [$name] = <$name as strum::VariantArray>::VARIANTS;

            /// The reason with this wire name.
            pub fn from_name(name: &str) -> Option<Self> {
                name.parse().ok()
            }

            /// The name written into conditions and Events.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        /// Lets tests and tools compare with the wire name (`note.reason == "StepFailed"`).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )+};
}

/// Why the rollout cannot go on without a human (Stalled=True).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
pub enum StallReason {
    StatefulSetNotFound,
    UpdateStrategyNotOnDelete,
    StatefulSetClaimed,
    DirectorSelectorMatchesBackends,
    BackendFailed,
    BackendNotInRing,
    BackendAlreadyDrained,
    /// Reset stopped before deleting: a reset path holds mail or mail metadata.
    ResetWouldDeleteMailData,
    /// Verify's LMTP or IMAP probe was refused by the new backend.
    ProbeFailed,
    /// What Verify's IMAP probe needs (its Secret, a CA bundle) cannot be read: no backend
    /// is drained until it can.
    ProbeCredentialsUnreadable,
    /// A restored backend took no traffic within the soak time, or stopped being Ready:
    /// it was drained again.
    SoakFailed,
    /// A backend is predicted to take longer than the whole maintenance window.
    MaintenanceWindowTooShort,
    /// The spec does not validate; nothing runs until it changes.
    InvalidSpec,
    /// `spec.baseDir` is not Dovecot's own `base_dir`: the operator could not tell a running
    /// Dovecot from a stopped one (master.pid), so nothing on the backend is stopped.
    BaseDirMismatch,
    /// The DBU's DovecotRing cannot be settled (missing, not listing the StatefulSet, or
    /// sharing a StatefulSet or director pods with another ring); nothing runs until it can.
    RingConflict,
}

/// Why nothing acts right now (Reconciling=True, or Paused when a human or the calendar holds it).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
pub enum WaitReason {
    /// A new DBU, seen before anything else was read: in progress from its first moment.
    Initializing,
    WaitingForRevision,
    WaitingForPods,
    NoReadyDirector,
    RingUnreadable,
    Paused,
    StepInProgress,
    WaitingForBackends,
    AwaitingApproval,
    OutsideMaintenanceWindow,
    WindowTooShort,
    BackendHeld,
    BackendNotReady,
    BackendWithoutIP,
    InsufficientRingCapacity,
    RingNotSynced,
    /// Another DBU of the same director ring holds as many backends out as the ring allows.
    RingBusy,
    /// The directors disagree (host lists, vhosts, up/down, or who is connected to whom): no
    /// backend is taken out and nothing is stopped until they agree.
    RingSplit,
    /// The director ring's lock (a Lease) could not be read, or is being read.
    RingLockUnreadable,
    /// A backend is back in the ring at a new IP; its slot is let go once the DovecotRing's
    /// own pass has recorded the entry as that pod's (what a later move rejoins by).
    WaitingForRingPass,
    /// The DBU is being deleted, and a backend it holds out could not be put back yet.
    CleanupPending,
}

impl StallReason {
    /// Decided from what the watch caches show of the StatefulSet, its pods or the DBUs (not
    /// from a step's recorded failure): a cache that has not caught up can show it for a while,
    /// so it stands only when a fresh read shows it too.
    pub fn read_from_world(self) -> bool {
        matches!(
            self,
            StallReason::StatefulSetNotFound
                | StallReason::UpdateStrategyNotOnDelete
                | StallReason::StatefulSetClaimed
                | StallReason::DirectorSelectorMatchesBackends
                | StallReason::BackendNotInRing
                | StallReason::BackendAlreadyDrained
        )
    }
}

impl WaitReason {
    /// Held by a human or the calendar, not by work in progress: the phase is Paused and
    /// Reconciling is False, so GitOps tools show Suspended rather than Progressing.
    pub fn is_hold(self) -> bool {
        matches!(
            self,
            WaitReason::Paused
                | WaitReason::AwaitingApproval
                | WaitReason::OutsideMaintenanceWindow
                | WaitReason::WindowTooShort
                | WaitReason::BackendHeld
        )
    }

    /// Before a target revision exists the rollout is Pending, not Progressing.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            WaitReason::WaitingForRevision | WaitReason::Initializing
        )
    }
}

/// Why an Event (or a demo line) was emitted.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
pub enum EventReason {
    BackendStarted,
    /// A backend a human had taken down is upgraded and left down.
    BackendKeptDown,
    /// A backend a human had taken down before its rollout and put back up during it is
    /// restored up.
    BackendKeptUp,
    /// A human set the vhost count of a backend in flight: it goes back at that count.
    BackendVhostsKept,
    StepStarted,
    StepSucceeded,
    StepRewound,
    /// A Move drain moved users off a drained backend (sessions kicked to reconnect, or
    /// sessionless mappings moved at once).
    UsersMoved,
    /// A Move drain cannot tell IDLE sessions from commands (the backend's process titles do
    /// not show them: `verbose_proctitle = no`): those sessions are waited for, up to the
    /// ceiling; users without a session still move.
    SessionsWaited,
    StepRetrying,
    StepFailed,
    BackendUpgraded,
    RetryRequested,
    RingReasserted,
    RingReassertFailed,
    BackendRestored,
    BackendRestoreFailed,
    BackendLeftOut,
    /// The StatefulSet was scaled below the backend's ordinal: its record is closed.
    BackendRemoved,
    /// A backend a deleted DBU left out of the ring is taken over by this one.
    BackendAdopted,
    /// Deleting the DBU waits: a backend it holds out could not be put back yet.
    CleanupPending,
    /// Deleting the DBU was forced: backends it held out stay as they are.
    CleanupForced,
    CleanupSkipped,
    /// The DBU turned Stalled, or stalls for another reason.
    Stalled,
    InvalidSpec,
    RingConflict,
    /// A write of the DovecotRing's record (a slot, a hand-over) failed other than by losing
    /// a compare-and-swap.
    RingWriteFailed,
    /// A human released a left-out backend from the ring (`mailops.io/release`).
    RingReleased,
    /// For a DBU from before rings: a DovecotRing was created from its `spec.director`, or its
    /// StatefulSet added to one; or such a ring was folded into the ring a human declared.
    RingMigrated,
}

impl EventReason {
    /// Whether the Event is a Warning (else Normal).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventReason::StepRewound
                | EventReason::SessionsWaited
                | EventReason::BackendKeptDown
                | EventReason::BackendVhostsKept
                | EventReason::StepRetrying
                | EventReason::StepFailed
                | EventReason::RingReasserted
                | EventReason::RingReassertFailed
                | EventReason::BackendRestoreFailed
                | EventReason::BackendLeftOut
                | EventReason::BackendRemoved
                | EventReason::BackendAdopted
                | EventReason::CleanupPending
                | EventReason::CleanupForced
                | EventReason::CleanupSkipped
                | EventReason::Stalled
                | EventReason::InvalidSpec
                | EventReason::RingConflict
                | EventReason::RingWriteFailed
                | EventReason::RingReleased
        )
    }
}

wire_names!(StallReason, WaitReason, EventReason);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn wire_names_are_unique_camel_case_and_compare_with_str() {
        let names: Vec<&str> = StallReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(WaitReason::ALL.iter().map(|r| r.as_str()))
            .collect();
        let unique: HashSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a wait and a stall share a name");
        for n in names
            .into_iter()
            .chain(EventReason::ALL.iter().map(|r| r.as_str()))
        {
            assert!(n.chars().next().unwrap().is_ascii_uppercase(), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_alphanumeric()), "{n}");
        }
        assert!(EventReason::StepFailed == "StepFailed");
        assert!(WaitReason::BackendWithoutIP == "BackendWithoutIP");
        assert_eq!(StallReason::InvalidSpec.to_string(), "InvalidSpec");
    }

    #[test]
    fn holds_are_the_human_and_calendar_waits() {
        let holds: Vec<&str> = WaitReason::ALL
            .iter()
            .filter(|r| r.is_hold())
            .map(|r| r.as_str())
            .collect();
        assert_eq!(
            holds,
            [
                "Paused",
                "AwaitingApproval",
                "OutsideMaintenanceWindow",
                "WindowTooShort",
                "BackendHeld"
            ]
        );
    }
}
