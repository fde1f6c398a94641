//! Run wiring: the watches, the stores they fill, and which DBUs a StatefulSet or pod event wakes.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::core::labels::{Selector, SelectorExt};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::context::{Context, FIELD_MANAGER, Options};
use super::lean::LeanPod;
use super::reconcile::{error_policy, reconcile};
use super::ringpass::{reconcile_ring, ring_error_policy};
use super::rings::dbus_of_ring;
use super::stores::{NodeWatch, Stores, node_maintenance_hash, slim_node, slim_sts};
use crate::api::{DovecotBackendUpgrade, DovecotRing};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// DBUs to wake when a pod changes: those whose StatefulSet owns it, whose director selector
/// matches it, or whose ring's does (a director turning Ready ends a `NoReadyDirector` wait at
/// once).
fn dbus_for_pod(
    dbus: &Store<DovecotBackendUpgrade>,
    rings: &Store<DovecotRing>,
    pod: &LeanPod,
) -> Vec<ObjectRef<DovecotBackendUpgrade>> {
    let ns = pod.namespace();
    let owners: Vec<&str> = pod
        .owner_references()
        .iter()
        .filter(|o| o.kind == "StatefulSet")
        .map(|o| o.name.as_str())
        .collect();
    let picks = |sel: &LabelSelector| {
        Selector::try_from(sel.clone()).is_ok_and(|sel| sel.matches(pod.labels()))
    };
    let all: Vec<_> = dbus
        .state()
        .into_iter()
        .filter(|d| d.namespace() == ns)
        .collect();
    let mut woken: Vec<ObjectRef<DovecotBackendUpgrade>> = all
        .iter()
        .filter(|d| {
            owners.contains(&d.spec.backends.stateful_set.as_str())
                || d.spec
                    .director
                    .as_ref()
                    .is_some_and(|dir| picks(&dir.selector))
        })
        .map(|d| ObjectRef::from_obj(&**d))
        .collect();
    for ring in rings.state().iter().filter(|r| r.namespace() == ns) {
        if picks(&ring.spec.directors.selector) {
            woken.extend(
                dbus_of_ring(ring, &all)
                    .iter()
                    .map(|d| ObjectRef::from_obj(&**d)),
            );
        }
    }
    woken.sort_by(|a, b| a.name.cmp(&b.name));
    woken.dedup();
    woken
}

/// How long a watch waits before it tries again after an error: doubling from 250 ms to at most
/// 4 s. kube's default (client-go's) grows to 30 s, so after an API outage of half a minute the
/// caches came back up to 30 s after the API server did, and reconciles decided from caches
/// that had not caught up meanwhile. At 4 s a long outage costs one LIST per watch every 4 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchBackoff {
    next: std::time::Duration,
}

impl WatchBackoff {
    pub const FIRST: std::time::Duration = std::time::Duration::from_millis(250);
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(4);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Objects per LIST page of every watch (kube's default is 500): the page, not the store, sets
/// the peak of a (re)list; 100 pods are a few hundred KiB of JSON, and 1,000 pods 10 requests.
const LIST_PAGE: u32 = 100;

/// Runs the controller until the process is asked to stop. `lock_namespace` holds the ring locks.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: Arc<crate::metrics::Metrics>,
    fence: Option<Arc<dyn crate::exec::Fence>>,
) {
    let Options {
        namespace,
        lock_namespace,
        policy,
        in_pod_timeout,
        node_maintenance,
        concurrency,
    } = opts;
    // every watch in the watched namespace, or cluster-wide
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let dbus: Api<DovecotBackendUpgrade> = api(&client, &namespace);
    let pods: Api<LeanPod> = api(&client, &namespace);
    let stss: Api<StatefulSet> = api(&client, &namespace);
    let rings: Api<DovecotRing> = api(&client, &namespace);
    let ring_pass: Api<DovecotRing> = api(&client, &namespace);
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let (sts_store, sts_writer) = reflector::store::<StatefulSet>();
    let (pod_store, pod_writer) = reflector::store::<LeanPod>();
    // small pages: a LIST's page is decoded whole before its first object is slimmed
    let lists = watcher::Config::default().page_size(LIST_PAGE);
    let sts_events = watcher(stss, lists.clone())
        .backoff(WatchBackoff::default())
        .modify(|s| *s = slim_sts(std::mem::take(s)))
        .reflect(sts_writer)
        .touched_objects();
    // pods decoded lean (only what `LeanPod` keeps is ever built)
    let pod_events = watcher(pods, lists.clone())
        .backoff(WatchBackoff::default())
        .reflect(pod_writer)
        .touched_objects();
    // a ring's change (a slot released, a StatefulSet added) wakes its DBUs at once
    let (ring_store, ring_writer) = reflector::store::<DovecotRing>();
    let ring_events = watcher(rings, lists.clone())
        .backoff(WatchBackoff::default())
        .modify(|r| r.metadata.managed_fields = None)
        .reflect(ring_writer)
        .touched_objects();
    // node maintenance: a cordon or a maintenance taint wakes the DBUs of the node's pods (the
    // nodes' heartbeats do not: only what `maintenance_of` reads is hashed)
    let (node_store, node_writer) = reflector::store::<Node>();
    let node_events: futures::stream::BoxStream<'static, Result<Node, watcher::Error>> =
        if node_maintenance.is_some() {
            watcher(Api::<Node>::all(client.clone()), lists.clone())
                .backoff(WatchBackoff::default())
                .modify(|n| *n = slim_node(std::mem::take(n)))
                .reflect(node_writer)
                .touched_objects()
                .predicate_filter(node_maintenance_hash, Default::default())
                .boxed()
        } else {
            futures::stream::empty().boxed()
        };
    let nodes = node_maintenance.map(|taints| NodeWatch {
        nodes: node_store,
        taints,
    });
    // the DBU watch and the triggers above back off together, as fast as the caches
    let controller = Controller::new(dbus, lists.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .trigger_backoff(WatchBackoff::default());
    let dbu_store = controller.store();
    let (ring_nudge, nudged) = super::context::RingNudge::channel();
    let ctx = Arc::new(Context {
        ring_nudge,
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        lock_namespace,
        policy,
        memory: Default::default(),
        guard: crate::exec::Guard {
            fence,
            in_pod_timeout,
        },
        stores: Stores {
            sts: sts_store,
            pods: pod_store,
            dbus: dbu_store.clone(),
            rings: ring_store.clone(),
            nodes,
            absent_leases: Default::default(),
            joins: Default::default(),
        },
    });
    let by_sts = dbu_store.clone();
    let by_ring = dbu_store.clone();
    // the rings' own pass (their face, conditions and left-out backends), on its own watch of
    // the few ring objects
    let rings_done = Controller::new(ring_pass, lists)
        .trigger_backoff(WatchBackoff::default())
        .reconcile_on(nudged)
        .shutdown_on_signal()
        .run(reconcile_ring, ring_error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "ring controller event");
            }
        });
    let dbus_done = controller
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
        .watches_stream(ring_events, move |ring: DovecotRing| {
            dbus_of_ring(&ring, &by_ring.state())
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        })
        .watches_stream(node_events, {
            let (dbus, rings, pods) = (
                dbu_store.clone(),
                ring_store.clone(),
                ctx.stores.pods.clone(),
            );
            move |node: Node| {
                let name = node.name_any();
                let mut woken: Vec<ObjectRef<DovecotBackendUpgrade>> = pods
                    .state()
                    .iter()
                    .filter(|p| p.node_name.as_deref() == Some(&name))
                    .flat_map(|p| dbus_for_pod(&dbus, &rings, p))
                    .collect();
                woken.sort_by_key(|r| r.to_string());
                woken.dedup();
                woken
            }
        })
        .watches_stream(pod_events, move |pod: LeanPod| {
            dbus_for_pod(&dbu_store, &ring_store, &pod)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        });
    futures::join!(dbus_done, rings_done);
}

#[cfg(test)]
mod tests {
    use super::WatchBackoff;
    use kube::runtime::utils::Backoff;
    use std::time::Duration;

    #[test]
    fn watch_backoff_doubles_to_four_seconds_and_resets() {
        let mut b = WatchBackoff::default();
        let first: Vec<Duration> = b.by_ref().take(7).collect();
        let ms: Vec<u128> = first.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        // a watch that came back starts from the shortest wait again
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
        // the whole wait after an outage of any length: the API server is seen again within 4 s
        assert!(first.iter().all(|d| *d <= WatchBackoff::MAX));
    }
}
