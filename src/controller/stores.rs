//! Watch stores: local copies of StatefulSets, pods, DBUs and rings, slimmed to what the machine reads.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;

use crate::api::{DovecotBackendUpgrade, DovecotRing, REVISION_ANNOTATION};
use crate::engine::ClusterError;

/// Local copies of what the operator watches, kept current by reflectors: a reconcile reads
/// these, never the API server, so a rollout costs no GET or LIST and an idle operator makes no
/// request beyond its watches.
#[derive(Clone)]
pub struct Stores {
    pub sts: Store<StatefulSet>,
    pub pods: Store<Pod>,
    pub dbus: Store<DovecotBackendUpgrade>,
    pub rings: Store<DovecotRing>,
    /// Earlier releases' ring Leases looked for and not found (`namespace/name`): not looked
    /// for again by this process (that release no longer runs, so none appears later).
    pub absent_leases: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Stores {
    /// Filled stores, marked ready (tests and tools that have the objects already).
    pub fn from_objects(
        sts: Vec<StatefulSet>,
        pods: Vec<Pod>,
        dbus: Vec<DovecotBackendUpgrade>,
        rings: Vec<DovecotRing>,
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
            rings: fill(rings),
            absent_leases: Default::default(),
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
            Api::<DovecotRing>::namespaced(client.clone(), ns)
                .list(&lp)
                .await?
                .items,
        ))
    }

    /// Waits for the first LIST of every watch; bounded, so that a reconcile never hangs (and
    /// never holds up a graceful shutdown) while the API server is away.
    pub(super) async fn ready(&self) -> Result<(), ClusterError> {
        let gone = |_| ClusterError::Transient("a watch stopped".into());
        let all = async {
            self.sts.wait_until_ready().await.map_err(gone)?;
            self.pods.wait_until_ready().await.map_err(gone)?;
            self.dbus.wait_until_ready().await.map_err(gone)?;
            self.rings.wait_until_ready().await.map_err(gone)
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .map_err(|_| ClusterError::Transient("watch caches not filled after 30 s".into()))?
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

/// The pod template's `mailops.io/revision` annotation.
pub fn template_revision(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .cloned()
}

/// Keeps only what the operator reads of a StatefulSet (of its pod template, the revision
/// annotation).
pub fn slim_sts(mut s: StatefulSet) -> StatefulSet {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    let revision = template_revision(&s);
    if let Some(spec) = s.spec.as_mut() {
        spec.template = Default::default();
        if let Some(rev) = revision {
            spec.template.metadata = Some(ObjectMeta {
                annotations: Some([(REVISION_ANNOTATION.to_string(), rev)].into()),
                ..Default::default()
            });
        }
        spec.volume_claim_templates = None;
    }
    if let Some(st) = s.status.as_mut() {
        st.conditions = None;
    }
    s
}
