//! Watch stores: local copies of StatefulSets, pods, DBUs and rings, slimmed to what the machine reads.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::lean::LeanPod;
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
    pub pods: Store<LeanPod>,
    pub dbus: Store<DovecotBackendUpgrade>,
    pub rings: Store<DovecotRing>,
    /// The nodes and the maintenance taints followed, when node maintenance is on
    /// (`--node-maintenance`): a backend on a node being emptied is relocated.
    pub nodes: Option<NodeWatch>,
    /// Earlier releases' ring Leases looked for and not found (`namespace/name`): not looked
    /// for again by this process (that release no longer runs, so none appears later).
    pub absent_leases: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Held while a DBU adds its StatefulSet to a ring the operator created: such joins go one
    /// at a time in this process (see `rings::bind`).
    pub joins: std::sync::Arc<tokio::sync::Mutex<()>>,
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
            pods: fill(pods.into_iter().map(LeanPod::from).collect()),
            dbus: fill(dbus),
            rings: fill(rings),
            nodes: None,
            absent_leases: Default::default(),
            joins: Default::default(),
        }
    }

    /// These stores with node maintenance on: `nodes` as the node watch has them.
    pub fn with_nodes(mut self, nodes: Vec<Node>, taints: Vec<String>) -> Self {
        let mut w = reflector::store::Writer::<Node>::default();
        w.apply_watcher_event(&watcher::Event::Init);
        for n in nodes {
            w.apply_watcher_event(&watcher::Event::InitApply(slim_node(n)));
        }
        w.apply_watcher_event(&watcher::Event::InitDone);
        self.nodes = Some(NodeWatch {
            nodes: w.as_reader(),
            taints,
        });
        self
    }

    /// Why the node `pod` runs on is under maintenance, when node maintenance is on and it is.
    pub fn maintenance_of(&self, pod: &LeanPod) -> Option<String> {
        let w = self.nodes.as_ref()?;
        let name = pod.node_name.as_deref()?;
        let node = w
            .nodes
            .get(&kube::runtime::reflector::ObjectRef::new(name))?;
        let spec = node.spec.as_ref()?;
        let taints: Vec<dbu_core::maintenance::Taint> = spec
            .taints
            .iter()
            .flatten()
            .map(|t| dbu_core::maintenance::Taint {
                key: t.key.clone(),
                effect: t.effect.clone(),
            })
            .collect();
        dbu_core::maintenance::of_node(
            name,
            spec.unschedulable.unwrap_or(false),
            &taints,
            &w.taints,
        )
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
            if let Some(w) = &self.nodes {
                w.nodes.wait_until_ready().await.map_err(gone)?;
            }
            self.rings.wait_until_ready().await.map_err(gone)
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .map_err(|_| ClusterError::Transient("watch caches not filled after 30 s".into()))?
    }
}

/// The node watch of node maintenance: the nodes, slimmed, and the taint keys followed.
#[derive(Clone)]
pub struct NodeWatch {
    pub nodes: Store<Node>,
    pub taints: Vec<String>,
}

/// Keeps only what node maintenance reads of a node: whether it is cordoned and its taints.
pub fn slim_node(n: Node) -> Node {
    Node {
        metadata: ObjectMeta {
            name: n.metadata.name,
            resource_version: n.metadata.resource_version,
            uid: n.metadata.uid,
            ..Default::default()
        },
        spec: n.spec.map(|s| k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: s.unschedulable,
            taints: s.taints,
            ..Default::default()
        }),
        status: None,
    }
}

/// What of a node wakes the DBUs of its pods: its cordon and its taints, not its heartbeats.
pub fn node_maintenance_hash(n: &Node) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let spec = n.spec.as_ref();
    spec.and_then(|s| s.unschedulable).hash(&mut h);
    for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        (&t.key, &t.effect).hash(&mut h);
    }
    Some(h.finish())
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
