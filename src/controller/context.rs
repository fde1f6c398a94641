//! What every reconcile shares: the client, the event recorder, metrics and stores; the layer's errors.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Recorder;

use super::stores::Stores;
use crate::engine::ClusterError;

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
    /// Namespace of the ring locks (Leases), the operator's own.
    pub lock_namespace: String,
    /// What the operator's flags allow beyond any DBU (custom reset commands).
    pub policy: crate::settings::Policy,
}

/// How the controller runs: what it watches, where its locks are, what it allows.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (None: all).
    pub namespace: Option<String>,
    /// Namespace of the ring locks (Leases), the operator's own.
    pub lock_namespace: String,
    pub policy: crate::settings::Policy,
}
