//! The edges the engine acts through besides exec: the cluster (observe, delete a pod) and the clock.

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use dbu_core::machine::{Observed, PodView, RingHolder, RingLock};
use dbu_core::settings::{ObjectKey, Settings};

/// Failure to read or change the cluster (not a step failure).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubernetes API: {0}")]
    Api(String),
    /// A compare-and-swap lost: someone changed the object first.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Other(String),
}

impl ClusterError {
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Api(_) => "kube_api",
            ClusterError::Conflict(_) => "conflict",
            ClusterError::Other(_) => "cluster",
        }
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
    /// One backend pod read from the source, not a cache (None: it does not exist): Replace
    /// judges the pod by it. Default: as `observe` sees it.
    async fn fresh_pod(&self, s: &Settings, pod: &str) -> Result<Option<PodView>, ClusterError> {
        Ok(self
            .observe(s)
            .await?
            .pods
            .into_iter()
            .find(|p| p.name == pod))
    }
    /// Verify's LMTP probe: delivers `message` to `user` at the pod's own `ip:port`. Default:
    /// over TCP (`crate::probe`), as the operator pod reaches pod IPs.
    async fn lmtp_probe(
        &self,
        ip: &str,
        port: u16,
        timeout: std::time::Duration,
        user: &str,
        message: &str,
    ) -> Result<(), crate::probe::ProbeFailure> {
        crate::probe::lmtp(ip, port, timeout, user, message).await
    }
    /// Verify's IMAP probe at `target` (the pod's own IP). Default: over TCP (`crate::probe`).
    async fn imap_probe(
        &self,
        target: &crate::probe::ImapTarget,
        input: dbu_core::imap::ProbeInput,
    ) -> Result<(), crate::probe::ProbeFailure> {
        crate::probe::imap(target, input).await
    }
    /// One key of a Secret or ConfigMap in the DBU's namespace, read by name from the source
    /// each time (never listed, watched or cached): the IMAP probe's password and CA bundle.
    /// None: the object or the key does not exist. Default: nothing can be read.
    async fn read_key(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ClusterError> {
        Err(ClusterError::Other(format!("cannot read {key:?} here")))
    }
    /// The StatefulSet's `status.updateRevision` read from the source, not a cache: checked
    /// before a pod is deleted. Default: as `observe` sees it.
    async fn fresh_update_revision(&self, s: &Settings) -> Result<Option<String>, ClusterError> {
        Ok(self.observe(s).await?.sts.and_then(|x| x.update_revision))
    }
    /// The lock of the director ring this DBU's directors form (shared by every DBU of the
    /// ring), with holders of DBUs that no longer exist left out. Default: a lock of its own
    /// that nobody else shares (a single-DBU world).
    async fn read_ring_lock(&self, _s: &Settings) -> Result<RingLock, ClusterError> {
        Ok(RingLock::default())
    }
    /// Replaces the ring lock's holders if it is still at `version` (None: it does not exist
    /// yet), else `ClusterError::Conflict`.
    async fn write_ring_lock(
        &self,
        _s: &Settings,
        _version: Option<&str>,
        _holders: &[RingHolder],
    ) -> Result<(), ClusterError> {
        Ok(())
    }
    /// Resolves when the observed world may have changed (the controller has watches for this;
    /// `drive` uses it to wake before its requeue). Default: never.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

/// The clock, read only at the edges and passed into the machine.
pub type Clock<'a> = &'a (dyn Fn() -> Timestamp + Sync);
