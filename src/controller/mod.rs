//! Kubernetes glue, one file per job: watch stores, the cluster adapter, status and events,
//! reconcile, leader election and the run wiring. Each uses only those before it in this list:
//! lean, stores, context, budget, rings, cluster, status, reconcile, ringpass, run, leader.

mod budget;
mod cluster;
mod context;
mod leader;
mod lean;
mod reconcile;
mod ringpass;
mod rings;
mod run;
mod status;
mod stores;

pub use budget::{RING_LABEL, budget_name};
pub use cluster::{KubeCluster, edges_for, pod_view};
pub use context::{Context, Error, FIELD_MANAGER, FINALIZER, Options, RingNudge};
pub use leader::{Election, LEASE_NAME, LeaderError, run_elected};
pub use lean::LeanPod;
pub use reconcile::{error_policy, reconcile, retry_after_failures};
pub use ringpass::{reconcile_ring, ring_error_policy};
pub use rings::{Binding, MANAGED_BY, bind_read_only};
pub use run::run;
pub use status::status_patch;
pub use stores::{NodeWatch, Stores, slim_node, slim_sts};
