//! The edges the engine acts through besides exec: the cluster (kube), the network probes and
//! the clock. No method has a default body: an edge that forgot one would act without it.

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use dbu_core::imap::{ImapTarget, ProbeInput};
use dbu_core::machine::{Observed, PodView, RingHolder, RingLock};
use dbu_core::probe::ProbeFailure;
use dbu_core::settings::{ObjectKey, Settings};

/// Failure to read or change the cluster (not a step failure), by kind: callers decide by the
/// kind, never by the text.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The object is not there (a caller that can do without it reads `Ok(None)` instead).
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-swap lost: someone changed the object first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operator's RBAC does not allow it: waits for a human.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// What the operator read or would write is malformed (a selector, a lock's JSON): waits
    /// for a change.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The API server could not be reached or did not answer in time: retried with backoff.
    #[error("kubernetes API: {0}")]
    Transient(String),
    /// Not written: this replica does not hold the leader Lease (a deposed leader's late write
    /// would hand the next leader a record one write older than what it acts on).
    #[error("not written: {0}")]
    Fenced(String),
}

impl ClusterError {
    /// Stable category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::NotFound(_) => "not_found",
            ClusterError::Conflict(_) => "conflict",
            ClusterError::Forbidden(_) => "forbidden",
            ClusterError::Invalid(_) => "invalid",
            ClusterError::Transient(_) => "kube_api",
            ClusterError::Fenced(_) => "fenced",
        }
    }

    /// Whether trying again later may help without a human.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            ClusterError::Transient(_) | ClusterError::Conflict(_) | ClusterError::Fenced(_)
        )
    }
}

/// The Kubernetes side of a rollout: what is there, and replacing a pod.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// StatefulSet, backend pods and director pods (the ring is read by the engine).
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError>;
    /// The same, read from the API server and not from a cache: the reconcile asks for it
    /// before a conclusion a lagging cache could cause stands, and marks it `Observed::fresh`
    /// itself. Where `observe` already reads the source, it is `observe`.
    async fn observe_fresh(&self, s: &Settings) -> Result<Observed, ClusterError>;
    /// Deletes a backend pod so that its StatefulSet recreates it at the update revision, only
    /// if it still has this UID (a pod already replaced is left alone: Ok).
    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError>;
    /// Labels a stopped backend pod on a node under maintenance `maintenance::RELEASED_LABEL`,
    /// only if it still has this UID, so that the ring's budget lets the node drain evict it.
    async fn release_pod(&self, pod: &str, uid: &str, at: Timestamp) -> Result<(), ClusterError>;
    /// One backend pod read from the source, not a cache (None: it does not exist): the steps
    /// that act on "the pod" judge it by this.
    async fn fresh_pod(&self, s: &Settings, pod: &str) -> Result<Option<PodView>, ClusterError>;
    /// One key of a Secret or ConfigMap in the DBU's namespace, read by name from the source
    /// each time (never listed, watched or cached): the IMAP probe's password and CA bundle.
    /// None: the object or the key does not exist.
    async fn read_key(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ClusterError>;
    /// The StatefulSet's `status.updateRevision` read from the source, not a cache: checked
    /// before a pod is deleted.
    async fn fresh_update_revision(&self, s: &Settings) -> Result<Option<String>, ClusterError>;
    /// The lock of the director ring this DBU's directors form (shared by every DBU of the
    /// ring), with holders of DBUs that no longer exist left out.
    async fn read_ring_lock(&self, s: &Settings) -> Result<RingLock, ClusterError>;
    /// The same lock as the watch cache holds it, for a decision that only waits
    /// (`machine::cached_lock_stands`); None where the cache cannot say (not filled, an earlier
    /// release's Lease not yet looked for): the engine then reads `read_ring_lock`. An edge
    /// with no cache reads its source.
    async fn cached_ring_lock(&self, s: &Settings) -> Option<RingLock>;
    /// Replaces the ring lock's holders if it is still at `version` (None: it does not exist
    /// yet), else `ClusterError::Conflict`.
    async fn write_ring_lock(
        &self,
        s: &Settings,
        version: Option<&str>,
        holders: &[RingHolder],
    ) -> Result<(), ClusterError>;
    /// Resolves when the observed world may have changed (the controller has watches for this;
    /// `drive` uses it to wake before its requeue); an edge without watches never resolves.
    async fn changed(&self);
}

/// The network side of Verify and the soak: protocol probes at a pod's own IP.
#[async_trait]
pub trait Probes: Send + Sync {
    /// Delivers `message` to `user` over LMTP at `ip:port`.
    async fn lmtp(
        &self,
        ip: &str,
        port: u16,
        timeout: std::time::Duration,
        user: &str,
        message: &str,
    ) -> Result<(), ProbeFailure>;
    /// The IMAP probe (or a login only) at `target`.
    async fn imap(&self, target: &ImapTarget, input: ProbeInput) -> Result<(), ProbeFailure>;
}

/// The probes over TCP, as the operator pod reaches pod IPs (`crate::probe`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetProbes;

#[async_trait]
impl Probes for NetProbes {
    async fn lmtp(
        &self,
        ip: &str,
        port: u16,
        timeout: std::time::Duration,
        user: &str,
        message: &str,
    ) -> Result<(), ProbeFailure> {
        crate::probe::lmtp(ip, port, timeout, user, message).await
    }
    async fn imap(&self, target: &ImapTarget, input: ProbeInput) -> Result<(), ProbeFailure> {
        crate::probe::imap(target, input).await
    }
}

/// The clock, read only at the edges and passed into the machine.
pub type Clock<'a> = &'a (dyn Fn() -> Timestamp + Sync);
