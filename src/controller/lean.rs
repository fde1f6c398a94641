//! Lean watched pods: a LIST page or watch event builds only the few fields `LeanPod` keeps.
//!
//! Decoding a full `Pod` and slimming it afterwards allocates every field first (containers,
//! volumes, and `managedFields` as `serde_json::Value` trees): at 1,000 pods that transient
//! peak, not the store, was most of the operator's resident memory (glibc keeps a freed heap's
//! pages). Fields not named here are skipped by serde without being allocated.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

/// A watched pod as the store keeps it: the metadata decisions read, the node it runs on (node
/// maintenance), its IP and whether it is Ready. Not a `Pod`: a `Pod` holds every field of its
/// spec and status inline even when they are `None` (2,176 bytes a pod before its strings, this
/// 416), about 2 MiB of the operator's 21.5 at 1,000 pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanPod {
    /// Name, namespace, UID, resource version, labels, owners (kind and name), deletion time and
    /// grace period.
    pub metadata: ObjectMeta,
    pub node_name: Option<String>,
    pub ip: Option<String>,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
}

impl LeanPod {
    /// Ready and not being deleted: it may serve.
    pub fn serving(&self) -> bool {
        self.ready && self.metadata.deletion_timestamp.is_none()
    }
}

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
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// An owner as decisions read it: a StatefulSet's pods are found by its kind and name.
fn owner(o: Owner) -> OwnerReference {
    OwnerReference {
        kind: o.kind,
        name: o.name,
        ..Default::default()
    }
}

impl From<Pod> for LeanPod {
    /// Through the pod's JSON, so that a full pod (tools and tests that list them, never the
    /// watch) keeps exactly what the watch's lean decoding keeps.
    fn from(p: Pod) -> Self {
        serde_json::to_value(p)
            .and_then(serde_json::from_value)
            .expect("a Pod is JSON, and LeanPod decodes any Pod")
    }
}

/// Metadata: what `LeanPod` keeps (no `managedFields`, annotations or finalizers).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<Owner>>,
    resource_version: Option<String>,
    uid: Option<String>,
}

#[derive(Deserialize)]
struct Owner {
    kind: String,
    name: String,
}

/// Of the spec, the node it runs on (node maintenance).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

/// Of the status, its IP and its conditions' types and states.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    conditions: Option<Vec<Condition>>,
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
        let status = l.status;
        Ok(LeanPod {
            ready: status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            metadata: ObjectMeta {
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                labels: m.labels,
                name: m.name,
                namespace: m.namespace,
                owner_references: m
                    .owner_references
                    .map(|o| o.into_iter().map(owner).collect()),
                resource_version: m.resource_version,
                uid: m.uid,
                ..Default::default()
            },
            node_name: l.spec.and_then(|s| s.node_name),
            ip: status.and_then(|s| s.pod_ip),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LeanPod;
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
    fn lean_decoding_keeps_what_decisions_read_and_nothing_else() {
        let full: Pod = serde_json::from_value(full_pod()).unwrap();
        let lean: LeanPod = serde_json::from_value(full_pod()).unwrap();
        pretty_assertions::assert_eq!(lean, LeanPod::from(full));
        // and what the decisions read is there
        assert_eq!(lean.ip.as_deref(), Some("10.88.0.7"));
        assert!(lean.ready && lean.serving());
        assert_eq!(lean.node_name.as_deref(), Some("node-1"));
        let owners = lean.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("StatefulSet", "backend")
        );
        assert_eq!(lean.metadata.labels.as_ref().unwrap().len(), 3);
        assert_eq!(lean.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(lean.metadata.resource_version.as_deref(), Some("4711"));
        // nothing else of it is kept
        assert!(lean.metadata.annotations.is_none() && lean.metadata.managed_fields.is_none());
    }

    #[test]
    fn a_pod_without_spec_or_status_decodes_as_a_full_one_slims() {
        for (v, ready) in [
            (
                serde_json::json!({"metadata": {"name": "p", "namespace": "mail"}}),
                false,
            ),
            (
                serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {}}),
                false,
            ),
            (
                serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]}}),
                false,
            ),
            (
                serde_json::json!({"metadata": {"name": "p", "deletionTimestamp": "2026-12-05T10:00:00Z", "deletionGracePeriodSeconds": 30}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                true,
            ),
        ] {
            let full: Pod = serde_json::from_value(v.clone()).unwrap();
            let lean: LeanPod = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(lean, LeanPod::from(full), "{v}");
            assert_eq!(lean.ready, ready, "{v}");
            // the grace a deletion gives it (Replace's budget adds it)
            assert_eq!(
                lean.metadata.deletion_grace_period_seconds,
                v["metadata"]["deletionGracePeriodSeconds"].as_i64(),
                "{v}"
            );
            // a pod being deleted serves nobody new, Ready or not
            assert!(!lean.serving(), "{v}");
        }
    }

    #[test]
    fn a_kept_pod_is_a_fraction_of_a_full_one() {
        // the inline size every stored pod pays before its strings
        let (lean, full) = (size_of::<LeanPod>(), size_of::<Pod>());
        assert!(lean * 4 < full, "LeanPod {lean} bytes, Pod {full}");
    }
}
