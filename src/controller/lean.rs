//! Lean decoding of watched pods: a LIST page or watch event builds only what `slim_pod` keeps.
//!
//! Decoding a full `Pod` and slimming it afterwards allocates every field first (containers,
//! volumes, and `managedFields` as `serde_json::Value` trees): at 1,000 pods that transient
//! peak, not the store, was most of the operator's resident memory (glibc keeps a freed heap's
//! pages). Fields not named here are skipped by serde without being allocated.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher;
use serde::Deserialize;

/// A pod decoded with only the fields the operator reads; `.0` equals `slim_pod` of the full pod.
#[derive(Clone, Debug)]
pub struct LeanPod(pub Pod);

impl kube::Resource for LeanPod {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// Metadata without `managedFields` and `annotations` (nothing reads a pod's annotations).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    uid: Option<String>,
}

/// Of the spec, the node it runs on (node maintenance).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    node_name: Option<String>,
}

/// Of the status, its phase, its IP and its Ready condition.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    conditions: Option<Vec<PodCondition>>,
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

#[derive(Deserialize)]
struct Lean {
    metadata: Option<Meta>,
    spec: Option<Spec>,
    status: Option<Status>,
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let l = Lean::deserialize(d)?;
        let m = l.metadata.unwrap_or_default();
        Ok(LeanPod(Pod {
            metadata: ObjectMeta {
                creation_timestamp: m.creation_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                generate_name: m.generate_name,
                generation: m.generation,
                labels: m.labels,
                name: m.name,
                namespace: m.namespace,
                owner_references: m.owner_references,
                resource_version: m.resource_version,
                uid: m.uid,
                ..Default::default()
            },
            spec: l.spec.map(|s| PodSpec {
                node_name: s.node_name,
                ..Default::default()
            }),
            status: l.status.map(|s| PodStatus {
                conditions: s
                    .conditions
                    .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
                phase: s.phase,
                pod_ip: s.pod_ip,
                ..Default::default()
            }),
        }))
    }
}

/// The watch's events with the plain pods inside, for the `Store<Pod>` the reconciles read.
pub fn unwrap_event(ev: watcher::Event<LeanPod>) -> watcher::Event<Pod> {
    use watcher::Event as E;
    match ev {
        E::Apply(p) => E::Apply(p.0),
        E::Delete(p) => E::Delete(p.0),
        E::Init => E::Init,
        E::InitApply(p) => E::InitApply(p.0),
        E::InitDone => E::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::LeanPod;
    use crate::controller::slim_pod;
    use k8s_openapi::api::core::v1::Pod;

    /// A backend pod as the API server sends it (a StatefulSet's, scheduled and Ready), with
    /// managed fields, annotations, a full spec and every status field.
    fn full_pod() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "backend-1", "namespace": "mail", "uid": "u-1", "resourceVersion": "4711",
                "generateName": "backend-", "creationTimestamp": "2026-12-05T10:00:00Z",
                "labels": {"app": "backend", "controller-revision-hash": "backend-7d9f", "apps.kubernetes.io/pod-index": "1"},
                "annotations": {"mailops.io/revision": "2", "kubectl.kubernetes.io/restartedAt": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "backend", "uid": "s-1", "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                                   "time": "2026-12-05T10:00:00Z", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
            },
            "spec": {
                "nodeName": "node-1", "restartPolicy": "Always", "serviceAccountName": "default",
                "containers": [{"name": "dovecot", "image": "dbu-dovecot:2.3.19",
                                "ports": [{"containerPort": 143, "name": "imap", "protocol": "TCP"}],
                                "readinessProbe": {"tcpSocket": {"port": 143}, "periodSeconds": 10},
                                "volumeMounts": [{"name": "vmail", "mountPath": "/var/dovecot/vmail"}]}],
                "volumes": [{"name": "vmail", "emptyDir": {}}]
            },
            "status": {
                "phase": "Running", "podIP": "10.88.0.7", "podIPs": [{"ip": "10.88.0.7"}], "hostIP": "10.88.0.1",
                "startTime": "2026-12-05T10:00:01Z", "qosClass": "BestEffort",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-05T10:00:00Z"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-05T10:00:05Z"},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-05T10:00:05Z"}
                ],
                "containerStatuses": [{"name": "dovecot", "ready": true, "restartCount": 0, "image": "dbu-dovecot:2.3.19",
                                       "imageID": "sha256:abc", "started": true, "state": {"running": {"startedAt": "2026-12-05T10:00:02Z"}}}]
            }
        })
    }

    #[test]
    fn lean_decoding_keeps_exactly_what_slim_pod_keeps() {
        let full: Pod = serde_json::from_value(full_pod()).unwrap();
        let lean: LeanPod = serde_json::from_value(full_pod()).unwrap();
        pretty_assertions::assert_eq!(lean.0, slim_pod(full));
        // and what the decisions read is there
        assert_eq!(
            lean.0.status.as_ref().unwrap().pod_ip.as_deref(),
            Some("10.88.0.7")
        );
        assert_eq!(
            lean.0
                .status
                .as_ref()
                .unwrap()
                .conditions
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            lean.0.metadata.owner_references.as_ref().unwrap()[0].name,
            "backend"
        );
    }

    #[test]
    fn a_pod_without_spec_or_status_decodes_as_slim_pod_does() {
        for v in [
            serde_json::json!({"metadata": {"name": "p", "namespace": "mail"}}),
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {}}),
            serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}}),
        ] {
            let full: Pod = serde_json::from_value(v.clone()).unwrap();
            let lean: LeanPod = serde_json::from_value(v).unwrap();
            assert_eq!(lean.0, slim_pod(full));
        }
    }
}
