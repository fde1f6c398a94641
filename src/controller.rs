//! Kubernetes glue: watches DBUs, their StatefulSet and pods; runs one engine pass; records status and events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::labels::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
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
    pub stores: Stores,
}

/// Local copies of what the operator watches, kept current by reflectors: a reconcile reads
/// these, never the API server, so a rollout costs no GET or LIST and an idle operator makes no
/// request beyond its watches.
#[derive(Clone)]
pub struct Stores {
    pub sts: Store<StatefulSet>,
    pub pods: Store<Pod>,
    pub dbus: Store<DovecotBackendUpgrade>,
}

impl Stores {
    /// Filled stores, marked ready (tests and tools that have the objects already).
    pub fn from_objects(
        sts: Vec<StatefulSet>,
        pods: Vec<Pod>,
        dbus: Vec<DovecotBackendUpgrade>,
    ) -> Self {
        fn fill<K>(objs: Vec<K>) -> Store<K>
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            let mut w = reflector::store::Writer::<K>::default();
            w.apply_watcher_event(&watcher::Event::Init);
            for o in objs {
                w.apply_watcher_event(&watcher::Event::InitApply(o));
            }
            w.apply_watcher_event(&watcher::Event::InitDone);
            w.as_reader()
        }
        Self {
            sts: fill(sts.into_iter().map(slim_sts).collect()),
            pods: fill(pods.into_iter().map(slim_pod).collect()),
            dbus: fill(dbus),
        }
    }

    /// One LIST of each kind in a namespace, for one-shot tools such as `plan`.
    pub async fn list(client: &Client, ns: &str) -> Result<Self, kube::Error> {
        let lp = kube::api::ListParams::default();
        Ok(Self::from_objects(
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .list(&lp)
                .await?
                .items,
            Api::<Pod>::namespaced(client.clone(), ns)
                .list(&lp)
                .await?
                .items,
            Api::<DovecotBackendUpgrade>::namespaced(client.clone(), ns)
                .list(&lp)
                .await?
                .items,
        ))
    }

    /// Waits for the first LIST of every watch; bounded, so that a reconcile never hangs (and
    /// never holds up a graceful shutdown) while the API server is away.
    async fn ready(&self) -> Result<(), ClusterError> {
        let gone = |_| ClusterError::Other("a watch stopped".into());
        let all = async {
            self.sts.wait_until_ready().await.map_err(gone)?;
            self.pods.wait_until_ready().await.map_err(gone)?;
            self.dbus.wait_until_ready().await.map_err(gone)
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .map_err(|_| ClusterError::Api("watch caches not filled after 30 s".into()))?
    }
}

/// Keeps only what the operator reads of a pod: the store holds every pod of the namespace.
pub fn slim_pod(mut p: Pod) -> Pod {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    p.spec = None;
    if let Some(st) = p.status.as_mut() {
        let ready = st
            .conditions
            .take()
            .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect());
        *st = k8s_openapi::api::core::v1::PodStatus {
            conditions: ready,
            pod_ip: st.pod_ip.take(),
            phase: st.phase.take(),
            ..Default::default()
        };
    }
    p
}

/// Keeps only what the operator reads of a StatefulSet (not its pod template).
pub fn slim_sts(mut s: StatefulSet) -> StatefulSet {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
    if let Some(st) = s.status.as_mut() {
        st.conditions = None;
    }
    s
}

/// The cluster as one DBU sees it.
pub struct KubeCluster {
    client: Client,
    ns: String,
    /// This DBU's name and creation time, to tell which of two DBUs owns a StatefulSet.
    me: (Option<Timestamp>, String),
    stores: Stores,
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
        self.stores.ready().await?;
        let ns = Some(self.ns.clone());
        let Some(sts) = self
            .stores
            .sts
            .get(&ObjectRef::new(&s.stateful_set).within(&self.ns))
        else {
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
        let selector = |sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
            Selector::try_from(sel.clone()).map_err(|e| ClusterError::Other(e.to_string()))
        };
        let backend_sel = selector(&spec.selector)?;
        let director_sel = selector(&s.director_label_selector)?;
        let in_ns: Vec<Arc<Pod>> = self
            .stores
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace() == ns)
            .collect();
        let mut backend: Vec<&Arc<Pod>> = in_ns
            .iter()
            .filter(|p| backend_sel.matches(p.labels()) && owned_by_sts(p, &s.stateful_set))
            .collect();
        backend.sort_by_key(|p| p.name_any());
        let directors: Vec<&Arc<Pod>> = in_ns
            .iter()
            .filter(|p| director_sel.matches(p.labels()))
            .collect();
        let director_overlap: Vec<String> = directors
            .iter()
            .filter(|d| {
                owned_by_sts(d, &s.stateful_set)
                    || backend.iter().any(|b| b.name_any() == d.name_any())
            })
            .map(|d| d.name_any())
            .collect();
        let mut ready: Vec<&&Arc<Pod>> = directors
            .iter()
            .filter(|d| pod_ready(d) && d.metadata.deletion_timestamp.is_none())
            .collect();
        ready.sort_by_key(|d| d.name_any());
        // the oldest DBU naming a StatefulSet owns it; later ones are refused
        let owned_by_other = self
            .stores
            .dbus
            .state()
            .into_iter()
            .filter(|d| d.namespace() == ns)
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
            pods: backend.iter().map(|p| pod_view(p)).collect(),
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
    if !crate::conditions::worth_writing(dbu.status.as_ref(), status) {
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
    edges_for(&ctx.client, &ctx.stores, dbu, ns)
}

/// The cluster and exec edges as one DBU sees them.
pub fn edges_for(
    client: &Client,
    stores: &Stores,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
) -> (KubeCluster, KubeExec) {
    let cluster = KubeCluster {
        stores: stores.clone(),
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

/// DBUs to wake when a pod changes: those whose StatefulSet owns it or whose director selector
/// matches it (a director turning Ready ends a `NoReadyDirector` wait at once).
fn dbus_for_pod(
    dbus: &Store<DovecotBackendUpgrade>,
    pod: &Pod,
) -> Vec<ObjectRef<DovecotBackendUpgrade>> {
    let ns = pod.namespace();
    let owners: Vec<&str> = pod
        .owner_references()
        .iter()
        .filter(|o| o.kind == "StatefulSet")
        .map(|o| o.name.as_str())
        .collect();
    dbus.state()
        .into_iter()
        .filter(|d| d.namespace() == ns)
        .filter(|d| {
            owners.contains(&d.spec.backends.stateful_set.as_str())
                || Selector::try_from(d.spec.director.selector.clone())
                    .is_ok_and(|sel| sel.matches(pod.labels()))
        })
        .map(|d| ObjectRef::from_obj(&*d))
        .collect()
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
    let (sts_store, sts_writer) = reflector::store::<StatefulSet>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let sts_events = watcher(stss, watcher::Config::default())
        .default_backoff()
        .modify(|s| *s = slim_sts(std::mem::take(s)))
        .reflect(sts_writer)
        .touched_objects();
    let pod_events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .modify(|p| *p = slim_pod(std::mem::take(p)))
        .reflect(pod_writer)
        .touched_objects();
    let controller = Controller::new(dbus, watcher::Config::default());
    let dbu_store = controller.store();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        stores: Stores {
            sts: sts_store,
            pods: pod_store,
            dbus: dbu_store.clone(),
        },
    });
    let by_sts = dbu_store.clone();
    controller
        .watches_stream(sts_events, move |sts: StatefulSet| {
            let ns = sts.namespace();
            let name = sts.name_any();
            by_sts
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && d.spec.backends.stateful_set == name)
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .watches_stream(pod_events, move |pod: Pod| dbus_for_pod(&dbu_store, &pod))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
