//! Leader election: the controller runs only while this replica holds the Lease.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

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

/// The leader Lease as this replica holds it, read from the API server right before every exec
/// that may change something: a replica deposed (a network partition, a long pause) while a
/// step is in flight refuses to act even before its lease manager notices.
pub struct LeaseFence {
    leases: Api<Lease>,
    identity: String,
}

#[async_trait]
impl crate::exec::Fence for LeaseFence {
    async fn check(&self) -> Result<(), String> {
        let lease = self
            .leases
            .get(LEASE_NAME)
            .await
            .map_err(|e| format!("could not read the leader Lease {LEASE_NAME}: {e}"))?;
        held_by(&lease, &self.identity, Timestamp::now())
    }
}

/// Whether `lease` is held by `identity` at `now`: it names it, and its last renewal is younger
/// than its duration.
pub fn held_by(lease: &Lease, identity: &str, now: Timestamp) -> Result<(), String> {
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.as_deref());
    if holder != Some(identity) {
        return Err(format!(
            "the leader Lease {LEASE_NAME} is held by {}, not by this replica ({identity})",
            holder.unwrap_or("nobody")
        ));
    }
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let duration = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    match renewed {
        Some(at) if now.duration_since(at).as_secs() < i64::from(duration) => Ok(()),
        _ => Err(format!(
            "the leader Lease {LEASE_NAME} was not renewed within its {duration} s"
        )),
    }
}

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
        metrics.leading(true);
        run(client, opts, metrics, None).await;
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
    metrics.leading(true);
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    let fence: Arc<dyn crate::exec::Fence> = Arc::new(LeaseFence {
        leases: Api::namespaced(client.clone(), &e.namespace),
        identity: e.identity.clone(),
    });
    tokio::select! {
        _ = run(client, opts, metrics.clone(), Some(fence)) => {
            tracing::info!("controller stopped; releasing the leader lease");
            metrics.leading(false);
        }
        _ = lost => {
            tracing::error!("lost the leader lease; the controller stopped so that nothing acts without it");
            // the next leader reports the DBUs now; stale gauges here would count them twice
            metrics.forget_all();
            // the lease task must end before the next campaign starts another
            drop(leader);
            end(task).await;
            return Err(LeaderError::Lost);
        }
    }
    drop(leader);
    Ok(release(task).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: Option<i64>, duration: i32) -> Lease {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": LEASE_NAME},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration,
                "renewTime": renewed_secs_ago.map(|s| (now - std::time::Duration::from_secs(s as u64)).to_string()),
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_lease_is_held_only_by_its_holder_and_only_while_renewed() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let cases = [
            (Some("me"), Some(3), 15, true),
            (Some("me"), Some(14), 15, true),
            (Some("me"), Some(15), 15, false), // expired: another replica may take it now
            (Some("me"), None, 15, false),
            (Some("other"), Some(1), 15, false),
            (None, Some(1), 15, false),
        ];
        for (holder, ago, duration, held) in cases {
            let r = held_by(&lease(holder, ago, duration), "me", now);
            assert_eq!(r.is_ok(), held, "{holder:?} {ago:?}: {r:?}");
        }
        let why = held_by(&lease(Some("other"), Some(1), 15), "me", now).unwrap_err();
        assert!(why.contains("held by other"), "{why}");
    }
}
