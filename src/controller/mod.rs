//! Kubernetes glue, one file per job: watch stores, the cluster adapter, status and events,
//! reconcile, leader election and the run wiring.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Recorder;

use crate::engine::ClusterError;

mod cluster;
mod leader;
mod reconcile;
mod run;
mod status;
mod stores;

pub use cluster::{KubeCluster, edges_for, pod_view};
pub use leader::{Election, LEASE_NAME, LeaderError, run_elected};
pub use reconcile::{error_policy, reconcile};
pub use run::run;
pub use status::status_patch;
pub use stores::{Stores, slim_pod, slim_sts};

/// The one field manager that writes DBU status.
pub const FIELD_MANAGER: &str = "dovecot-upgrade-operator";
pub const FINALIZER: &str = "mailops.io/ring-cleanup";

/// Errors of the controller layer, each with a stable category for events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("object has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Cluster(c) => c.category(),
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "bad_object",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub stores: Stores,
}
