//! The `Cluster` adapter: what one DBU sees of the watch stores, and deleting a backend pod.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::labels::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::context::api_err;
use super::lean::LeanPod;
use super::rings;
use super::stores::{Stores, slim_sts, template_revision};
use crate::api::DovecotBackendUpgrade;
use crate::engine::{Cluster, ClusterError};
use crate::exec::KubeExec;
use crate::machine::{
    Claimant, Observed, PodView, RingHolder, RingLock, StsView, Waiter, claimed_by_other, lock,
};
use crate::settings::Settings;

const REVISION_LABEL: &str = "controller-revision-hash";

/// The cluster as one DBU sees it.
pub struct KubeCluster {
    client: Client,
    ns: String,
    /// This DBU's name and creation time, to tell which of two DBUs owns a StatefulSet.
    me: Claimant,
    stores: Stores,
    /// Where the ring locks (Leases) live: the operator's own namespace, beside its leader Lease.
    lock_ns: String,
    /// Asked before the ring's record is written, as before every exec (None: one replica).
    fence: Option<std::sync::Arc<dyn crate::exec::Fence>>,
}

pub(super) fn owned_by_sts(p: &LeanPod, sts: &str) -> bool {
    p.owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet" && o.name == sts)
}

/// A pod as the plan sees it; `maintenance`: why its node is under maintenance, if it is.
pub fn pod_view(p: &LeanPod, maintenance: Option<String>) -> PodView {
    PodView {
        name: p.name_any(),
        uid: p.uid(),
        ip: p.ip.clone(),
        revision: p.labels().get(REVISION_LABEL).cloned(),
        ready: p.ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        maintenance,
        released: p
            .labels()
            .get(dbu_core::maintenance::RELEASED_LABEL)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok()),
        deletion_grace: p.metadata.deletion_grace_period_seconds.map(grace),
    }
}

/// A grace period in seconds as the API has it (a negative one is none).
fn grace(seconds: i64) -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

impl KubeCluster {
    /// The world as one DBU sees it, from these copies of the StatefulSet and of the pods and
    /// DBUs of the namespace (from the caches or the API server).
    fn view(
        &self,
        s: &Settings,
        sts: Option<Arc<StatefulSet>>,
        in_ns: Vec<Arc<LeanPod>>,
        dbus: Vec<Arc<DovecotBackendUpgrade>>,
    ) -> Result<Observed, ClusterError> {
        let Some(sts) = sts else {
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
            ordinals_start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0),
            current: sts.status.as_ref().and_then(|st| st.observed_generation)
                >= sts.metadata.generation,
            template_revision: template_revision(&sts),
            termination_grace: spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.termination_grace_period_seconds)
                .map(grace),
        };
        let selector = |sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
            Selector::try_from(sel.clone()).map_err(|e| ClusterError::Invalid(e.to_string()))
        };
        let backend_sel = selector(&spec.selector)?;
        let director_sel = selector(&s.director_label_selector)?;
        let mut backend: Vec<&Arc<LeanPod>> = in_ns
            .iter()
            .filter(|p| backend_sel.matches(p.labels()) && owned_by_sts(p, &s.stateful_set))
            .collect();
        backend.sort_by_key(|p| p.name_any());
        let directors: Vec<&Arc<LeanPod>> = in_ns
            .iter()
            .filter(|p| director_sel.matches(p.labels()))
            .collect();
        // exec goes only into directors: a selected pod of this or any other DBU's backend
        // StatefulSet, or of any StatefulSet of the ring, is a backend, whatever its labels say;
        // so is one at an IP the ring's last look found among its hosts (a pool no DBU or ring
        // names), before a single exec goes into it
        let bound: Vec<Arc<crate::api::DovecotRing>> = self
            .stores
            .rings
            .state()
            .into_iter()
            .filter(|r| r.namespace().as_deref() == Some(self.ns.as_str()))
            .filter(|r| s.ring.as_deref() == Some(r.name_any().as_str()))
            .collect();
        let ring_sets: Vec<String> = bound
            .iter()
            .flat_map(|r| {
                r.spec
                    .stateful_sets()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let ring_hosts: Vec<&str> = bound
            .iter()
            .filter_map(|r| r.status.as_ref())
            .flat_map(|st| st.hosts.iter().map(|h| h.ip.as_str()))
            .collect();
        let ring_former: Vec<dbu_core::api::StoodFor> = bound
            .iter()
            .filter_map(|r| r.status.as_ref())
            .flat_map(|st| st.stood_for())
            .collect();
        let backend_sets: Vec<&str> = dbus
            .iter()
            .map(|d| d.spec.backends.stateful_set.as_str())
            .chain(ring_sets.iter().map(String::as_str))
            .chain([s.stateful_set.as_str()])
            .collect();
        let director_overlap: Vec<String> = directors
            .iter()
            .filter(|d| {
                backend_sets.iter().any(|set| owned_by_sts(d, set))
                    || backend.iter().any(|b| b.name_any() == d.name_any())
                    || d.ip.as_deref().is_some_and(|ip| ring_hosts.contains(&ip))
            })
            .map(|d| d.name_any())
            .collect();
        let mut ready: Vec<&&Arc<LeanPod>> = directors.iter().filter(|d| d.serving()).collect();
        ready.sort_by_key(|d| d.name_any());
        // the oldest DBU naming a StatefulSet owns it; later ones are refused
        let others = dbus
            .iter()
            .filter(|d| d.name_any() != self.me.1 && d.spec.backends.stateful_set == s.stateful_set)
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .map(|d| -> Claimant {
                (
                    d.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    d.name_any(),
                )
            })
            .collect::<Vec<_>>();
        let owned_by_other = claimed_by_other(&self.me, others);
        // the ring's other DBUs that wait for a slot: slots go to the longest waiting
        let ring_queue: Vec<Waiter> = dbus
            .iter()
            .filter(|d| d.name_any() != self.me.1)
            .filter(|d| {
                s.ring.is_some()
                    && (d.spec.ring == s.ring || ring_sets.contains(&d.spec.backends.stateful_set))
            })
            .filter_map(|d| {
                let status = d.status.as_ref()?;
                lock::waiter(&format!("{}/{}", self.ns, d.name_any()), status)
            })
            .collect();
        // every backend pod of the ring, for whose IP is whose (IPs are reused)
        let (mut ring_pods, mut ring_unready) = (Vec::new(), Vec::new());
        for p in in_ns
            .iter()
            .filter(|p| backend_sets.iter().any(|set| owned_by_sts(p, set)))
        {
            let ip = p.ip.clone();
            if let Some(ip) = &ip
                && !p.serving()
            {
                ring_unready.push(ip.clone());
            }
            ring_pods.push((p.name_any(), ip));
        }
        Ok(Observed {
            me: format!("{}/{}", self.ns, self.me.1),
            ring_pods,
            ring_former,
            ring_unready,
            ring_lock: None,
            ring_lock_cached: false,
            ring_queue,
            sts: Some(view),
            pods: backend
                .iter()
                .map(|p| pod_view(p, self.stores.maintenance_of(p)))
                .collect(),
            director: ready.first().map(|d| d.name_any()),
            directors: ready.iter().map(|d| (d.name_any(), d.ip.clone())).collect(),
            unsynced: Vec::new(),
            ring_members: Vec::new(),
            other_rings: None,
            director_overlap,
            owned_by_other,
            ring: None,
            ring_synced: None,
            probe_credentials: None,
            fresh: false,
        })
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    /// The controller's own watches trigger reconciles; nothing waits on this here.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }

    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError> {
        self.stores.ready().await?;
        let ns = Some(self.ns.clone());
        let sts = self
            .stores
            .sts
            .get(&ObjectRef::new(&s.stateful_set).within(&self.ns));
        let pods = self
            .stores
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace() == ns)
            .collect();
        let dbus = self
            .stores
            .dbus
            .state()
            .into_iter()
            .filter(|d| d.namespace() == ns)
            .collect();
        self.view(s, sts, pods, dbus)
    }

    async fn observe_fresh(&self, s: &Settings) -> Result<Observed, ClusterError> {
        // one GET and two LISTs, only when a conclusion drawn from the caches is about to stand
        let lp = kube::api::ListParams::default();
        let stss: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.ns);
        let sts = stss.get_opt(&s.stateful_set).await.map_err(api_err)?;
        // decoded lean, as the watch's are
        let pods: Api<LeanPod> = Api::namespaced(self.client.clone(), &self.ns);
        let pods = pods.list(&lp).await.map_err(api_err)?.items;
        let dbus: Api<DovecotBackendUpgrade> = Api::namespaced(self.client.clone(), &self.ns);
        let dbus = dbus.list(&lp).await.map_err(api_err)?.items;
        self.view(
            s,
            sts.map(|x| Arc::new(slim_sts(x))),
            pods.into_iter().map(Arc::new).collect(),
            dbus.into_iter().map(Arc::new).collect(),
        )
    }

    async fn read_ring_lock(&self, s: &Settings) -> Result<RingLock, ClusterError> {
        rings::read_lock(&self.client, &self.stores, &self.ns, &self.lock_ns, s).await
    }

    async fn cached_ring_lock(&self, s: &Settings) -> Option<RingLock> {
        rings::cached_lock(&self.stores, &self.ns, &self.lock_ns, s)
    }

    async fn write_ring_lock(
        &self,
        s: &Settings,
        version: Option<&str>,
        holders: &[RingHolder],
    ) -> Result<(), ClusterError> {
        fenced(self.fence.as_deref()).await?;
        rings::write_lock(&self.client, &self.ns, s, version, holders).await
    }

    async fn fresh_pod(&self, _s: &Settings, pod: &str) -> Result<Option<PodView>, ClusterError> {
        let pods: Api<LeanPod> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(pods.get_opt(pod).await.map_err(api_err)?.map(|p| {
            let m = self.stores.maintenance_of(&p);
            pod_view(&p, m)
        }))
    }

    async fn read_key(
        &self,
        key: &dbu_core::settings::ObjectKey,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        use dbu_core::settings::ObjectKey;
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        // a GET by name: RBAC grants it per name (chart value probeSecrets), never list/watch
        Ok(match key {
            ObjectKey::Secret { name, key } => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
                api.get_opt(name)
                    .await
                    .map_err(api_err)?
                    .and_then(|s| s.data)
                    .and_then(|mut d| d.remove(key))
                    .map(|b| b.0)
            }
            ObjectKey::ConfigMap { name, key } => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
                api.get_opt(name).await.map_err(api_err)?.and_then(|c| {
                    c.data
                        .and_then(|mut d| d.remove(key))
                        .map(String::into_bytes)
                        .or_else(|| c.binary_data.and_then(|mut d| d.remove(key)).map(|b| b.0))
                })
            }
        })
    }

    async fn fresh_update_revision(&self, s: &Settings) -> Result<Option<String>, ClusterError> {
        let stss: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.ns);
        let sts = stss.get_opt(&s.stateful_set).await.map_err(api_err)?;
        Ok(sts.and_then(|x| x.status).and_then(|st| st.update_revision))
    }

    async fn release_pod(
        &self,
        pod: &str,
        uid: &str,
        at: k8s_openapi::jiff::Timestamp,
    ) -> Result<(), ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        // metadata.uid in a merge patch is a precondition: the API server refuses to change it,
        // so a pod recreated under the same name is never released (422, or 404 when gone)
        let patch = serde_json::json!({"metadata": {
            "uid": uid,
            // when: the grace for the drain's eviction runs from it, whoever resumes the step
            "labels": {dbu_core::maintenance::RELEASED_LABEL: at.as_second().to_string()},
        }});
        match pods
            .patch(
                pod,
                &PatchParams {
                    field_manager: Some(super::context::FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => Err(
                ClusterError::Conflict(format!("{pod} is no longer the pod {uid}: {}", s.message)),
            ),
            Err(e) => Err(api_err(e)),
        }
    }

    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(pod, &params).await {
            Ok(_) => Ok(()),
            // gone, or already replaced by a pod with another UID: not ours to delete
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(api_err(e)),
        }
    }
}

/// The cluster and exec edges as one DBU sees them; `lock_ns` holds the ring locks; every
/// exec goes through `guard` (its fence, its in-pod bound).
pub fn edges_for(
    client: &Client,
    stores: &Stores,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
    lock_ns: &str,
    guard: crate::exec::Guard,
) -> (KubeCluster, KubeExec) {
    let cluster = KubeCluster {
        stores: stores.clone(),
        client: client.clone(),
        ns: ns.to_string(),
        lock_ns: lock_ns.to_string(),
        me: (
            dbu.metadata.creation_timestamp.as_ref().map(|t| t.0),
            dbu.name_any(),
        ),
        fence: guard.fence.clone(),
    };
    (
        cluster,
        KubeExec::new(Api::namespaced(client.clone(), ns)).guarded(guard),
    )
}

/// Err when this replica may not write now: the leader Lease is not its own.
pub(super) async fn fenced(fence: Option<&dyn crate::exec::Fence>) -> Result<(), ClusterError> {
    match fence {
        Some(f) => f.check().await.map_err(ClusterError::Fenced),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: serde_json::Value) -> LeanPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "backend-1", "uid": "u-1", "labels": labels},
            "status": {"podIP": "10.88.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_is_released_when_its_label_holds_a_time() {
        let at = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let cases = [
            (serde_json::json!({}), None),
            (
                serde_json::json!({"mailops.io/released": "1800000000"}),
                Some(at),
            ),
            // a value that is not a time (set by hand) is no release: Replace writes its own
            (serde_json::json!({"mailops.io/released": "yes"}), None),
        ];
        for (labels, want) in cases {
            let v = pod_view(&pod(labels.clone()), Some("node n1 is cordoned".into()));
            assert_eq!(v.released, want, "{labels}");
            assert_eq!(v.maintenance.as_deref(), Some("node n1 is cordoned"));
            assert!(v.ready);
        }
    }
}
