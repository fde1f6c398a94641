//! What every reconcile shares: the client, the event recorder, metrics and stores; the layer's errors.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;

use super::stores::Stores;
use crate::api::DovecotRing;
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
    /// Deleting waits for backends to go back into the ring (the finalizer stays).
    #[error("{0}")]
    CleanupPending(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Cluster(c) => c.category(),
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "bad_object",
            Error::CleanupPending(_) => "cleanup_pending",
        }
    }
}

/// A kube error by kind: the API server's status code says whether waiting can help.
pub fn api_err(e: kube::Error) -> ClusterError {
    match &e {
        kube::Error::Api(s) => match s.code {
            404 => ClusterError::NotFound(e.to_string()),
            409 => ClusterError::Conflict(e.to_string()),
            401 | 403 => ClusterError::Forbidden(e.to_string()),
            400 | 422 => ClusterError::Invalid(e.to_string()),
            _ => ClusterError::Transient(e.to_string()),
        },
        _ => ClusterError::Transient(e.to_string()),
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
    /// Per DBU (by UID): what this process last wrote, and its failures in a row.
    pub memory: Memory,
    /// Every exec's fence (the leader Lease; None: one replica) and in-pod time bound.
    pub guard: crate::exec::Guard,
    /// Wakes a ring's own pass from a DBU's reconcile.
    pub ring_nudge: RingNudge,
}

/// Wakes a ring's own pass when a DBU waits for it: a backend put back at a new IP keeps its
/// slot until the pass has recorded the entry as the pod's (`WaitingForRingPass`), and nothing
/// on the ring object changed to wake the pass (it would run at its next busy poll, up to 30 s
/// later). In-process, no API call.
#[derive(Clone)]
pub struct RingNudge(tokio::sync::mpsc::UnboundedSender<ObjectRef<DovecotRing>>);

impl RingNudge {
    /// The nudge, and the stream of rings to pass that the ring controller reconciles on.
    pub fn channel() -> (
        RingNudge,
        impl futures::Stream<Item = ObjectRef<DovecotRing>> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rings =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        (RingNudge(tx), rings)
    }

    /// Asks for a pass of ring `name` in `namespace` (dropped when the ring controller is gone).
    pub fn wake(&self, namespace: &str, name: &str) {
        let _ = self.0.send(ObjectRef::new(name).within(namespace));
    }
}

/// What the operator remembers per DBU between reconciles (by UID; lost on restart, when the
/// caches are fresh lists anyway).
#[derive(Debug, Default)]
pub struct Memory(std::sync::Mutex<std::collections::HashMap<String, Remembered>>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The `status.writeSeq` last written.
    pub written: u64,
    /// Reconciles that failed in a row (API errors, conflicts): the backoff.
    pub failures: u32,
}

impl Memory {
    pub fn get(&self, uid: &str) -> Remembered {
        self.0
            .lock()
            .map(|m| m.get(uid).copied().unwrap_or_default())
            .unwrap_or_default()
    }
    pub fn update(&self, uid: &str, f: impl FnOnce(&mut Remembered)) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(uid.to_string()).or_default());
        }
    }
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }
}

/// How the controller runs: what it watches, where its locks are, what it allows.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (None: all).
    pub namespace: Option<String>,
    /// Namespace of the ring locks (Leases), the operator's own.
    pub lock_namespace: String,
    pub policy: crate::settings::Policy,
    /// Path of `timeout` in the pods' images (`--in-pod-timeout`; None: not bounded in the pod).
    pub in_pod_timeout: Option<String>,
    /// Node maintenance (`--node-maintenance`): the maintenance taint keys followed besides a
    /// cordon (`--maintenance-taints`); None: off (no node watch, no PodDisruptionBudget).
    pub node_maintenance: Option<Vec<String>>,
    /// DBUs reconciled at once (`--max-concurrent-reconciles`; 0: unbounded).
    pub concurrency: u16,
}
