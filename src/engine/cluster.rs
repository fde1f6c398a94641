//! The edges the engine acts through besides exec: the cluster (observe, delete a pod) and the clock.

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use dbu_core::machine::Observed;
use dbu_core::settings::Settings;

/// Failure to read or change the cluster (not a step failure).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubernetes API: {0}")]
    Api(String),
    #[error("{0}")]
    Other(String),
}

impl ClusterError {
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Api(_) => "kube_api",
            ClusterError::Other(_) => "cluster",
        }
    }
}

/// The Kubernetes side of a rollout: what is there, and replacing a pod.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// StatefulSet, backend pods and director pods (the ring is read by the engine).
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError>;
    /// Deletes a backend pod so that its StatefulSet recreates it at the update revision.
    async fn delete_pod(&self, pod: &str) -> Result<(), ClusterError>;
    /// Resolves when the observed world may have changed (the controller has watches for this;
    /// `drive` uses it to wake before its requeue). Default: never.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

/// The clock, read only at the edges and passed into the machine.
pub type Clock<'a> = &'a (dyn Fn() -> Timestamp + Sync);
