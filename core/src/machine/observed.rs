//! The world as one reconcile sees it (StatefulSet, pods, director, ring), what a decision still
//! needs read, and which DBU owns a StatefulSet.

use k8s_openapi::jiff::Timestamp;

use super::conditions;
use super::decision::Decision;
use crate::api::DovecotBackendUpgradeStatus;
pub use crate::api::RingHolder;
use crate::dovecot::RingHost;

/// The backend StatefulSet as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsView {
    /// `spec.updateStrategy.type`, "RollingUpdate" when unset (the Kubernetes default).
    pub update_strategy: String,
    pub update_revision: Option<String>,
    pub replicas: i32,
    /// `spec.ordinals.start`: the pods are `<sts>-<start>` to `<sts>-<start + replicas - 1>`.
    pub ordinals_start: i32,
    /// `status.observedGeneration` has reached `metadata.generation`: `update_revision` is that
    /// of the template as it is now, not of one the StatefulSet controller has not seen yet.
    pub current: bool,
    /// The pod template's `mailops.io/revision` annotation.
    pub template_revision: Option<String>,
    /// The pod template's `terminationGracePeriodSeconds` (the API server sets 30 when unset).
    pub termination_grace: Option<std::time::Duration>,
}

/// A backend pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// `metadata.uid`: tells a recreated pod from the one whose Dovecot was stopped.
    pub uid: Option<String>,
    pub ip: Option<String>,
    /// `controller-revision-hash` label.
    pub revision: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    /// Why the pod's node is under maintenance (cordoned, or a maintenance taint the operator
    /// was told to follow), when it is: the pod is relocated through the runbook.
    pub maintenance: Option<String>,
    /// When Replace gave it to the node drain's eviction: the value of its
    /// `maintenance::RELEASED_LABEL` (seconds since the epoch; a value that is not one is none).
    pub released: Option<k8s_openapi::jiff::Timestamp>,
    /// `metadata.deletionGracePeriodSeconds`: how long the kubelet may take to stop it, once it
    /// is being deleted.
    pub deletion_grace: Option<std::time::Duration>,
}

/// Another DBU of the ring waiting for a slot, and since when (its `status.ringWaitingSince`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    /// `namespace/name` of the DBU.
    pub dbu: String,
    pub since: Timestamp,
}

/// The ring's lock as read: its version (for compare-and-swap; None while it does not exist)
/// and its holders, those of DBUs that no longer exist already left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RingLock {
    pub version: Option<String>,
    pub holders: Vec<RingHolder>,
}

/// The world, read fresh on every reconcile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// `namespace/name` of the DBU this reconcile is for (its name in the ring lock).
    pub me: String,
    /// The director ring's lock; read only when a backend is about to be registered or released
    /// (None: not read yet; Err: could not be read).
    pub ring_lock: Option<Result<RingLock, String>>,
    /// `ring_lock` is the watch cache's copy, not the API server's: a wait of a DBU with
    /// nothing in flight stands on it (`needs::cached_lock_stands`), anything else reads it
    /// again from the source.
    pub ring_lock_cached: bool,
    /// The other DBUs of the ring that wait for a slot (`RingBusy`): slots go first to those
    /// waiting longest.
    pub ring_queue: Vec<Waiter>,
    /// Every backend pod of the ring (of all its StatefulSets) with its IP now: an IP another
    /// pod holds is never taken out or removed for a record's sake (IPs are reused).
    pub ring_pods: Vec<(String, Option<String>)>,
    /// The ring's record of which backend pod each host stood for when its pass last read it
    /// (`RingHostStatus::former_pod`, else `pod`), as IP and pod. A pod of this StatefulSet at
    /// another IP now, with no record here, rejoins in that host's place; a host whose pod left
    /// its IP serves nobody.
    pub ring_former: Vec<crate::api::StoodFor>,
    /// IPs of the ring's backend pods that are not Ready (or are being deleted): their hosts
    /// serve nobody, whatever the ring shows, and capacity never counts them.
    pub ring_unready: Vec<String>,
    /// None when the StatefulSet does not exist.
    pub sts: Option<StsView>,
    pub pods: Vec<PodView>,
    /// A Ready director pod to send director commands to (the first of `directors`).
    pub director: Option<String>,
    /// Every Ready director pod by name, with its pod IP: the ring's sync state is read from
    /// each, and none may be a host of the ring.
    pub directors: Vec<(String, Option<String>)>,
    /// Directors whose `director ring status` did not say `ring synced` when it was read.
    pub unsynced: Vec<String>,
    /// Every Ready director's `director ring status`, read with the sync state: the directors
    /// it names and whether it is connected to each (None: it could not be read).
    pub ring_members: Vec<(String, Option<Vec<crate::dovecot::RingMember>>)>,
    /// `director status` of every other Ready director (None: not read yet; an inner None:
    /// that director could not be read), read only before a backend is stopped or taken down:
    /// each must show it drained.
    pub other_rings: Option<Vec<(String, Option<Vec<RingHost>>)>>,
    /// Pods matched by the director selector that also belong to the backend StatefulSet.
    pub director_overlap: Vec<String>,
    /// Another DBU in the namespace that already owns this StatefulSet.
    pub owned_by_other: Option<String>,
    /// `director status`, None when it could not be read.
    pub ring: Option<Vec<RingHost>>,
    /// Whether the director ring reports `ring synced`; read only when a backend is about to
    /// start (None: not read yet).
    pub ring_synced: Option<bool>,
    /// Whether what Verify's IMAP probe reads (Secret, CA bundle) can be read: checked before a
    /// backend is drained (None: not checked yet; Ok also when there is no IMAP probe).
    pub probe_credentials: Option<Result<(), String>>,
    /// The StatefulSet, pods and DBUs were read from the API server in this reconcile, not from
    /// the watch caches (which lag after an outage or a leader change).
    pub fresh: bool,
}

impl Observed {
    /// Every director's view of the ring this pass read: the commanded director's, then the
    /// others' that could be read (a human may have used any of them).
    pub fn ring_views(&self) -> impl Iterator<Item = &Vec<RingHost>> {
        self.ring.iter().chain(
            self.other_rings
                .iter()
                .flatten()
                .filter_map(|(_, r)| r.as_ref()),
        )
    }

    /// Whether `pod` of StatefulSet `sts` is gone for good: the StatefulSet's ordinal range
    /// (`spec.ordinals.start`, `replicas` long) no longer holds its ordinal and it no longer
    /// runs (scaled down: nothing will bring it back).
    pub fn gone_for_good(&self, sts: &str, pod: &str) -> bool {
        let Some((replicas, start)) = self.sts.as_ref().map(|x| (x.replicas, x.ordinals_start))
        else {
            return false;
        };
        let range = start..start.saturating_add(replicas);
        let ordinal: Option<i32> = pod
            .strip_prefix(sts)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|n| n.parse().ok());
        ordinal.is_some_and(|n| !range.contains(&n))
            && !self.pods.iter().any(|p| p.name == pod && !p.terminating)
    }

    /// Whether `host` takes users: up, with vhosts, and not the host of a ring pod that is not
    /// Ready (found by the model: a recreated pod that never became Ready was counted, and the
    /// only host that served was drained).
    pub fn takes_users(&self, host: &RingHost) -> bool {
        host.up
            && host.vhosts > 0
            && !self.ring_unready.contains(&host.ip)
            // the entry a moved pod left: nothing listens at it
            && !self
                .ring_former
                .iter()
                .any(|f| f.ip == host.ip && self.ip_held_by_other(&f.ip, "").is_none())
            // nor at the entry a backend held out stands at when its pod has left it: a
            // rejoin's new entry, put back, is not in the ring's pass until it runs again
            // (found by the model with seed 7: a drain re-asserted its `update 0` while the only
            // other serving host was such an entry, its pod moved on, and no host served)
            && !self.held_vacated(&host.ip)
    }

    /// Whether the ring's record (as read in this pass) holds a backend out at `ip` while no
    /// pod of the ring has that IP now.
    fn held_vacated(&self, ip: &str) -> bool {
        let Some(Ok(lock)) = &self.ring_lock else {
            return false;
        };
        lock.holders.iter().any(|h| h.ip == ip) && self.ip_held_by_other(ip, "").is_none()
    }

    /// Whether the pod whose Dovecot `rec`'s StopDovecot stopped is still the one under its
    /// name (not recreated since: its Dovecot stays stopped).
    pub fn runs_stopped_pod(&self, rec: &crate::api::BackendStatus) -> bool {
        rec.stopped_pod_uid.is_some()
            && self
                .pods
                .iter()
                .any(|p| p.name == rec.pod && p.uid == rec.stopped_pod_uid)
    }

    /// Whether backend pod `pod` has `ip` now.
    pub fn is_at(&self, pod: &str, ip: &str) -> bool {
        self.pods
            .iter()
            .any(|p| p.name == pod && p.ip.as_deref() == Some(ip))
    }

    /// The record the ring's record keeps of `pod` as left out by a deleted DBU, when the lock
    /// was read and holds it so (until a DBU's claim makes the backend its own).
    pub fn left_out_copy(&self, pod: &str) -> Option<&crate::api::BackendStatus> {
        let Some(Ok(lock)) = &self.ring_lock else {
            return None;
        };
        lock.holders
            .iter()
            .filter(|h| h.pod == pod)
            .find_map(|h| h.left_out.as_deref())
            .map(|l| &l.record)
    }

    /// The backend pod other than `pod` whose entry `ip` is: the pod at it now
    /// (`ip_held_by_other`); one the ring's record holds out at it, when read (another backend
    /// drained there, or put back there by its rejoin and kept until the ring's pass knows the
    /// entry as its: its pod may have moved on since); or the one the ring's pass last saw it
    /// stand for. None where `pod` itself is now: the pod at an entry is what it stands for.
    pub fn entry_of_other(&self, ip: &str, pod: &str) -> Option<&str> {
        let here = self.is_at(pod, ip)
            || self
                .ring_pods
                .iter()
                .any(|(n, i)| n == pod && i.as_deref() == Some(ip));
        if here {
            return None;
        }
        let held = || {
            let Some(Ok(lock)) = &self.ring_lock else {
                return None;
            };
            lock.holders
                .iter()
                .find(|h| h.ip == ip && h.pod != pod)
                .map(|h| h.pod.as_str())
        };
        // a pod listed only as the one the host counts for is not what it stands for: the pod
        // it does stand for takes its entry out for its own rejoin (nothing listens there)
        let stood_for = || {
            self.ring_former
                .iter()
                .find(|f| f.ip == ip && f.pod != pod && !f.counted)
                .map(|f| f.pod.as_str())
        };
        self.ip_held_by_other(ip, pod)
            .or_else(held)
            .or_else(stood_for)
    }

    /// The backend pod other than `pod` whose state the count and up/down at `ip` are, by the
    /// ring's pass (`RingHostStatus::counts_for`), while `pod` is not at `ip`: another pod's
    /// rejoin put that pod back there since `pod` left (found by the model: the count it put
    /// back was taken for a human's by the rejoin of the pod that had left the entry, and that
    /// pod went back at it).
    pub fn count_of_other(&self, ip: &str, pod: &str) -> Option<&str> {
        if self.is_at(pod, ip) {
            return None;
        }
        self.ring_former
            .iter()
            .filter(|f| f.ip == ip)
            .find_map(|f| f.counts_for.as_deref())
            .filter(|c| *c != pod)
    }

    /// Whether the state at `ip` is another backend's, not `pod`'s: its entry
    /// (`entry_of_other`), its count (`count_of_other`), or another pod sat there since `pod` left
    /// (`taken_since`). No human's change there is `pod`'s.
    pub fn others_state_at(&self, ip: &str, pod: &str) -> bool {
        self.entry_of_other(ip, pod).is_some()
            || self.count_of_other(ip, pod).is_some()
            || self.taken_since(ip, pod)
    }

    /// Whether the ring's pass saw another pod at `ip` since `pod` left it
    /// (`RingHostStatus::taken_by`), while `pod` is not there: what the entry shows since may be
    /// that pod's doing.
    pub fn taken_since(&self, ip: &str, pod: &str) -> bool {
        !self.is_at(pod, ip)
            && self.ring_former.iter().any(|f| {
                f.ip == ip && f.pod == pod && f.taken_by.as_deref().is_some_and(|t| t != pod)
            })
    }

    /// The backend pod other than `pod` that has `ip` now, if any.
    pub fn ip_held_by_other(&self, ip: &str, pod: &str) -> Option<&str> {
        let theirs = |n: &str, i: Option<&str>| n != pod && i == Some(ip);
        self.pods
            .iter()
            .find(|p| theirs(&p.name, p.ip.as_deref()))
            .map(|p| p.name.as_str())
            .or_else(|| {
                self.ring_pods
                    .iter()
                    .find(|(n, i)| theirs(n, i.as_deref()))
                    .map(|(n, _)| n.as_str())
            })
    }

    /// " on director-1, director-2": the directors that did not say `ring synced`, for messages.
    pub fn unsynced_on(&self) -> String {
        if self.unsynced.is_empty() {
            String::new()
        } else {
            format!(" on {}", self.unsynced.join(", "))
        }
    }
}

/// An observation a decision needs before it can stand; the engine reads it and decides again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// `director status`: every decision about in-flight or new backends.
    Ring,
    /// `director ring status` on every director: before draining a backend, before stopping
    /// LMTP on it, or for a dry-run plan's guard.
    RingSync,
    /// The director ring's lock: before a backend is registered in it or released from it.
    RingLock,
    /// `director status` of the other Ready directors: before a backend is stopped or taken down.
    OtherRings,
    /// The IMAP probe's Secret and CA bundle: before a backend is drained.
    ProbeCredentials,
    /// The StatefulSet, pods and DBUs from the API server instead of the caches: before a
    /// conclusion a lagging cache could cause stands (`unconfirmed`). The engine reads them and
    /// starts the reconcile over from that world.
    FreshWorld,
}

/// Whether a decision taken from the watch caches must be taken again from a fresh read before
/// it stands: a stall that a cache which has not caught up can cause (a pod's old IP or
/// revision, a StatefulSet or DBU not seen yet), or a rollout's first completion (GitOps tools
/// act on both at once). A stall that stands after a fresh read needs a human; one that does not
/// was never one. `before`: the status as read; what it says already (Ready=True, or Stalled=True
/// for the same reason) was confirmed when it was written, so a rollout at rest or stalled, woken
/// by every pod event, makes no request.
pub fn unconfirmed(
    decision: &Decision,
    obs: &Observed,
    before: &DovecotBackendUpgradeStatus,
) -> bool {
    if obs.fresh {
        return false;
    }
    match decision {
        Decision::Stall { reason, .. } => {
            reason.read_from_world() && !conditions::stalled_for(before, reason.as_str())
        }
        Decision::Complete => !conditions::ready(before),
        _ => false,
    }
}

/// A new target revision is seen: it drops the finished records of the old target, so it is
/// taken only from a fresh read (a StatefulSet cache that lags shows an old `updateRevision`).
pub fn target_unconfirmed(status: &DovecotBackendUpgradeStatus, obs: &Observed) -> bool {
    let seen = obs.sts.as_ref().and_then(|x| x.update_revision.as_deref());
    !obs.fresh
        && status.target_revision.is_some()
        && seen.is_some()
        && seen != status.target_revision.as_deref()
}

/// A DBU as the ownership rule sees it: creation time, then name.
pub type Claimant = (Option<Timestamp>, String);

/// The oldest DBU naming a StatefulSet owns it (ties by name); a later one is refused. Returns
/// the owner when it is not `me`. `others`: the other live DBUs naming the same StatefulSet.
pub fn claimed_by_other(
    me: &Claimant,
    others: impl IntoIterator<Item = Claimant>,
) -> Option<String> {
    others
        .into_iter()
        .filter(|other| other < me)
        .min()
        .map(|(_, n)| n)
}
