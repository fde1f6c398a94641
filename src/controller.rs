//! Kubernetes glue: watches DBUs, their StatefulSet and pods; runs one engine pass; records status and events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::api::{DovecotBackendUpgrade, DovecotBackendUpgradeStatus};
use crate::engine::{self, Cluster, ClusterError};
use crate::exec::KubeExec;
use crate::plan::{Decision, Note, Observed, PodView, StsView};
use crate::settings::{self, Settings};

/// The one field manager that writes DBU status.
pub const FIELD_MANAGER: &str = "dovecot-upgrade-operator";
pub const FINALIZER: &str = "mailops.io/ring-cleanup";
const REVISION_LABEL: &str = "controller-revision-hash";

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
}

/// The cluster as one DBU sees it.
pub struct KubeCluster {
    client: Client,
    ns: String,
    /// This DBU's name and creation time, to tell which of two DBUs owns a StatefulSet.
    me: (Option<Timestamp>, String),
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn owned_by_sts(p: &Pod, sts: &str) -> bool {
    p.owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet" && o.name == sts)
}

/// A pod as the plan sees it.
pub fn pod_view(p: &Pod) -> PodView {
    PodView {
        name: p.name_any(),
        uid: p.uid(),
        ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        revision: p.labels().get(REVISION_LABEL).cloned(),
        ready: pod_ready(p),
        terminating: p.metadata.deletion_timestamp.is_some(),
    }
}

fn api_err(e: kube::Error) -> ClusterError {
    ClusterError::Api(e.to_string())
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError> {
        let sts_api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let dbus: Api<DovecotBackendUpgrade> = Api::namespaced(self.client.clone(), &self.ns);
        let Some(sts) = sts_api.get_opt(&s.stateful_set).await.map_err(api_err)? else {
            return Ok(Observed::default());
        };
        let spec = sts.spec.clone().unwrap_or_default();
        let view = StsView {
            update_strategy: spec
                .update_strategy
                .and_then(|u| u.type_)
                .unwrap_or_else(|| "RollingUpdate".into()),
            update_revision: sts
                .status
                .as_ref()
                .and_then(|st| st.update_revision.clone()),
            replicas: spec.replicas.unwrap_or(1),
        };
        let backend_sel = settings::selector_string(&spec.selector).map_err(ClusterError::Other)?;
        let backend: Vec<Pod> = pods
            .list(&ListParams::default().labels(&backend_sel))
            .await
            .map_err(api_err)?
            .items
            .into_iter()
            .filter(|p| owned_by_sts(p, &s.stateful_set))
            .collect();
        let directors = pods
            .list(&ListParams::default().labels(&s.director_selector))
            .await
            .map_err(api_err)?
            .items;
        let director_overlap: Vec<String> = directors
            .iter()
            .filter(|d| {
                owned_by_sts(d, &s.stateful_set)
                    || backend.iter().any(|b| b.name_any() == d.name_any())
            })
            .map(|d| d.name_any())
            .collect();
        let mut ready: Vec<&Pod> = directors
            .iter()
            .filter(|d| pod_ready(d) && d.metadata.deletion_timestamp.is_none())
            .collect();
        ready.sort_by_key(|d| d.name_any());
        // the oldest DBU naming a StatefulSet owns it; later ones are refused
        let owned_by_other = dbus
            .list(&ListParams::default())
            .await
            .map_err(api_err)?
            .items
            .into_iter()
            .filter(|d| d.name_any() != self.me.1 && d.spec.backends.stateful_set == s.stateful_set)
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .map(|d| {
                (
                    d.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    d.name_any(),
                )
            })
            .filter(|other| *other < self.me)
            .min()
            .map(|(_, n)| n);
        Ok(Observed {
            sts: Some(view),
            pods: backend.iter().map(pod_view).collect(),
            director: ready.first().map(|d| d.name_any()),
            director_overlap,
            owned_by_other,
            ring: None,
            ring_synced: None,
        })
    }

    async fn delete_pod(&self, pod: &str) -> Result<(), ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        match pods.delete(pod, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err(e)),
        }
    }
}

/// The status patch body for server-side apply.
pub fn status_patch(status: &DovecotBackendUpgradeStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "mailops.io/v1alpha1",
        "kind": "DovecotBackendUpgrade",
        "status": status,
    })
}

async fn publish(ctx: &Context, dbu: &DovecotBackendUpgrade, notes: &[Note]) {
    let reference = dbu.object_ref(&());
    for n in notes {
        // every line names the DBU, the backend and the step, for log queries per backend
        let backend = n.pod.as_deref().unwrap_or("");
        let step = n.step.map_or("", |s| s.as_str());
        if n.warning {
            tracing::warn!(dbu = %dbu.name_any(), backend, step, reason = n.reason, "{}", n.message);
        } else {
            tracing::info!(dbu = %dbu.name_any(), backend, step, reason = n.reason, "{}", n.message);
        }
        let ev = Event {
            type_: if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: n.reason.to_string(),
            note: Some(crate::dovecot::bounded(&n.message, 1024)),
            // the recorder folds events with equal reason, action and related object into one
            // series: the step as action and the pod as related object keep every step visible
            action: n.step.map_or("Upgrade", |s| s.as_str()).to_string(),
            secondary: n.pod.as_ref().map(|p| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(p.clone()),
                namespace: reference.namespace.clone(),
                ..Default::default()
            }),
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "could not publish event");
        }
    }
}

async fn write_status(
    api: &Api<DovecotBackendUpgrade>,
    dbu: &DovecotBackendUpgrade,
    status: &DovecotBackendUpgradeStatus,
) -> Result<(), Error> {
    // no-op patches cost API calls and wake every watcher
    if dbu.status.as_ref() == Some(status) {
        return Ok(());
    }
    api.patch_status(
        &dbu.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status_patch(status)),
    )
    .await?;
    Ok(())
}

fn edges(dbu: &DovecotBackendUpgrade, ctx: &Context, ns: &str) -> (KubeCluster, KubeExec) {
    edges_for(&ctx.client, dbu, ns)
}

/// The cluster and exec edges as one DBU sees them.
pub fn edges_for(
    client: &Client,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
) -> (KubeCluster, KubeExec) {
    let cluster = KubeCluster {
        client: client.clone(),
        ns: ns.to_string(),
        me: (
            dbu.metadata.creation_timestamp.as_ref().map(|t| t.0),
            dbu.name_any(),
        ),
    };
    (cluster, KubeExec::new(Api::namespaced(client.clone(), ns)))
}

async fn apply(dbu: Arc<DovecotBackendUpgrade>, ctx: &Context) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = dbu.metadata.generation;
    let status = dbu.status.clone().unwrap_or_default();
    let s = match settings::validate(&dbu.spec) {
        Ok(mut s) => {
            s.retry_token = dbu
                .annotations()
                .get(crate::plan::RETRY_ANNOTATION)
                .cloned();
            if let Some(rev) = dbu.annotations().get(crate::plan::APPROVE_ANNOTATION) {
                s.approved_revisions.push(rev.clone());
            }
            s
        }
        Err(e) => {
            // permanent: nothing runs until the spec changes
            let mut st = status;
            let d = Decision::Stall {
                reason: "InvalidSpec",
                message: e.to_string(),
            };
            crate::conditions::summarize(&mut st, &d, generation, Timestamp::now());
            let changed = dbu.status.as_ref() != Some(&st);
            write_status(&api, &dbu, &st).await?;
            if changed {
                publish(ctx, &dbu, &[Note::warning("InvalidSpec", e.to_string())]).await;
            }
            return Ok(Action::await_change());
        }
    };
    let (cluster, exec) = edges(&dbu, ctx, &ns);
    let out =
        engine::reconcile_once(&s, status, generation, &exec, &cluster, &Timestamp::now).await?;
    write_status(&api, &dbu, &out.status).await?;
    ctx.metrics.record(
        &format!("{ns}/{}", dbu.name_any()),
        &out,
        Timestamp::now().as_millisecond() as f64 / 1000.0,
    );
    let mut notes = out.notes;
    notes.extend(crate::conditions::stall_note(
        dbu.status.as_ref(),
        &out.status,
    ));
    publish(ctx, &dbu, &notes).await;
    Ok(match out.requeue {
        Some(d) if d.is_zero() => Action::requeue(Duration::from_millis(200)),
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

async fn cleanup(dbu: Arc<DovecotBackendUpgrade>, ctx: &Context) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let status = dbu.status.clone().unwrap_or_default();
    if let Ok(s) = settings::validate(&dbu.spec) {
        let (cluster, exec) = edges(&dbu, ctx, &ns);
        let notes = engine::cleanup(&s, &status, &exec, &cluster).await?;
        publish(ctx, &dbu, &notes).await;
    }
    ctx.metrics.forget(&format!("{ns}/{}", dbu.name_any()));
    Ok(Action::await_change())
}

/// Reconciles one DBU behind the finalizer that guarantees ring cleanup on delete.
pub async fn reconcile(
    dbu: Arc<DovecotBackendUpgrade>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!("reconcile", dbu = %dbu.name_any(), namespace = %ns);
    finalizer(&api, FINALIZER, dbu, |ev| async {
        match ev {
            Finalizer::Apply(d) => apply(d, &ctx).await,
            Finalizer::Cleanup(d) => cleanup(d, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Transient errors back off; the step machine itself decides about step failures.
pub fn error_policy(dbu: Arc<DovecotBackendUpgrade>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.category());
    tracing::warn!(dbu = %dbu.name_any(), category = err.category(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
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

/// Runs the controller only while this replica holds the Lease: a replica that is not the
/// leader never writes or execs. Losing the Lease ends the process (a step cut short is safe to
/// run again: its intent is in status); a graceful stop releases the Lease for the next leader.
pub async fn run_elected(
    client: Client,
    namespace: Option<String>,
    election: Option<Election>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let Some(e) = election else {
        run(client, namespace, metrics).await;
        return Ok(());
    };
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
                    tracing::error!("the lease manager stopped");
                    return release(task).await;
                }
            }
            _ = shutdown_signal() => {
                drop(leader);
                return release(task).await;
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
        _ = run(client, namespace, metrics) => {
            tracing::info!("controller stopped; releasing the leader lease");
        }
        _ = lost => {
            tracing::error!("lost the leader lease; exiting so that nothing acts without it");
            std::process::exit(1);
        }
    }
    drop(leader);
    release(task).await
}

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, namespace: Option<String>, metrics: Arc<crate::metrics::Metrics>) {
    let (dbus, pods, stss): (Api<DovecotBackendUpgrade>, Api<Pod>, Api<StatefulSet>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
    });
    let controller = Controller::new(dbus, watcher::Config::default());
    let store = controller.store();
    let store2 = store.clone();
    controller
        .watches(stss, watcher::Config::default(), move |sts: StatefulSet| {
            let ns = sts.namespace();
            let name = sts.name_any();
            store
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && d.spec.backends.stateful_set == name)
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .watches(
            pods,
            watcher::Config::default().labels(REVISION_LABEL),
            move |pod: Pod| {
                let ns = pod.namespace();
                let owners: Vec<String> = pod
                    .owner_references()
                    .iter()
                    .filter(|o| o.kind == "StatefulSet")
                    .map(|o| o.name.clone())
                    .collect();
                store2
                    .state()
                    .into_iter()
                    .filter(|d| {
                        d.namespace() == ns && owners.contains(&d.spec.backends.stateful_set)
                    })
                    .map(|d| ObjectRef::from_obj(&*d))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
