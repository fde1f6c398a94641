//! Leader election: the controller runs only while this replica holds the Lease.

use std::sync::Arc;

use kube::Client;

use super::context::Options;
use super::run::run;

/// Errors of leader election, each with a stable category.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Another replica holds the Lease now (or it could not be renewed); campaign again.
    #[error("lost the leader lease")]
    Lost,
    /// The lease manager ended (the API server went away); campaign again.
    #[error("the lease manager stopped")]
    Stopped,
}

impl LeaderError {
    pub fn category(&self) -> &'static str {
        match self {
            LeaderError::Lease(_) => "lease",
            LeaderError::Lost => "lease_lost",
            LeaderError::Stopped => "lease_stopped",
        }
    }
}

/// Name of the Lease that elects the one replica allowed to act.
pub const LEASE_NAME: &str = "dovecot-upgrade-operator";

/// Where the Lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub identity: String,
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

type LeaseTask = tokio::task::JoinHandle<
    Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
>;

/// Waits for the lease task, which releases the Lease once its channel is dropped.
async fn release(task: LeaseTask) -> Result<(), kube_lease_manager::LeaseManagerError> {
    match task.await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// Ends a lease task before another campaign: a release that cannot reach the API server is
/// given up after 5 s (the Lease then expires by itself).
async fn end(task: LeaseTask) {
    let abort = task.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(5), release(task))
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Runs the controller only while this replica holds the Lease: a replica that is not the
/// leader never writes or execs. Losing the Lease (or not reaching the API server to campaign)
/// stops the controller at once and campaigns again in the same process: a step cut short is
/// safe to run again (its intent is in status), and exiting instead would add the kubelet's
/// CrashLoop backoff to every API outage. A graceful stop releases the Lease for the next leader.
pub async fn run_elected(
    client: Client,
    opts: Options,
    election: Option<Election>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(), LeaderError> {
    let Some(e) = election else {
        run(client, opts, metrics).await;
        return Ok(());
    };
    loop {
        match campaign(client.clone(), opts.clone(), &e, metrics.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, category = err.category(), "campaigning for the leader lease again in 2 s");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    _ = shutdown_signal() => return Ok(()),
                }
            }
        }
    }
}

/// One campaign: wait for the Lease, run the controller while it is held. `Ok` on a graceful
/// stop; `Err` when the Lease was lost or could not be campaigned for.
async fn campaign(
    client: Client,
    opts: Options,
    e: &Election,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(), LeaderError> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&e.namespace)
        .with_identity(&e.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(identity = %e.identity, lease = LEASE_NAME, namespace = %e.namespace, "waiting for the leader lease");
    while !*leader.borrow_and_update() {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    end(task).await;
                    return Err(LeaderError::Stopped);
                }
            }
            _ = shutdown_signal() => {
                drop(leader);
                return Ok(release(task).await?);
            }
        }
    }
    tracing::info!(identity = %e.identity, "acquired the leader lease; starting the controller");
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        _ = run(client, opts, metrics) => {
            tracing::info!("controller stopped; releasing the leader lease");
        }
        _ = lost => {
            tracing::error!("lost the leader lease; the controller stopped so that nothing acts without it");
            // the lease task must end before the next campaign starts another
            drop(leader);
            end(task).await;
            return Err(LeaderError::Lost);
        }
    }
    drop(leader);
    Ok(release(task).await?)
}
