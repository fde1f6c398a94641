//! The `DovecotRing` resource: one director ring, its backends and policy, and its record of who is out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::DirectorSpec;
use super::status::BackendStatus;

/// One Dovecot director ring: its directors, the backend StatefulSets whose pods are its hosts,
/// and how many of them may be out at once. Its status is the one record of which backends are
/// out of the ring and why; it outlives every DovecotBackendUpgrade.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "mailops.io",
    version = "v1alpha1",
    kind = "DovecotRing",
    plural = "dovecotrings",
    shortname = "dring",
    namespaced,
    status = "DovecotRingStatus",
    printcolumn = r#"{"name":"Hosts","type":"integer","jsonPath":".status.hostCount"}"#,
    printcolumn = r#"{"name":"Out","type":"integer","jsonPath":".status.outCount"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","jsonPath":".status.users"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.synced"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DovecotRingSpec {
    /// The ring's director pods and how to run doveadm in them.
    pub directors: DirectorSpec,
    /// The backend StatefulSets whose pods are the ring's hosts (same namespace). A
    /// StatefulSet belongs to at most one ring.
    #[schemars(length(min = 1, max = 100))]
    pub backends: Vec<RingBackend>,
    /// How many backends may be out of the ring at once, over every DovecotBackendUpgrade of
    /// the ring. A DovecotBackendUpgrade may ask for fewer, never more. The runbook says 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
    /// A backend is taken out only if at least this many other backends stay up with vhosts >
    /// 0. A DovecotBackendUpgrade may ask for more, never fewer.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_available_backends: i32,
}

fn one() -> i32 {
    1
}

impl DovecotRingSpec {
    /// The names of the ring's backend StatefulSets.
    pub fn stateful_sets(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|b| b.stateful_set.as_str())
    }

    /// Whether `sts` is one of the ring's backend StatefulSets.
    pub fn lists(&self, sts: &str) -> bool {
        self.stateful_sets().any(|b| b == sts)
    }
}

/// A backend StatefulSet of the ring.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingBackend {
    /// Name of the StatefulSet (same namespace).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub stateful_set: String,
}

/// Observed state of a ring, and its record of the backends out of it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DovecotRingStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, in kstatus style.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// How many backends are out of the ring (`kubectl get dring`'s Out).
    #[serde(default)]
    pub out_count: i32,
    /// Hosts in the ring, as the first Ready director lists them (`kubectl get dring`'s Hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_count: Option<i32>,
    /// Users mapped over all hosts, as the first Ready director counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub users: Option<u64>,
    /// `True` when every Ready director says `ring synced`, is connected to every other, and
    /// lists the same hosts at the same vhosts and up/down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<String>,
    /// The `mailops.io/release` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_token: Option<String>,
    /// Every host of the ring: its pod, its state on the directors, and who holds it out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    pub hosts: Vec<RingHostStatus>,
    /// Every Ready director, as read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub directors: Vec<RingDirectorStatus>,
    /// Every backend out of the ring: who holds it out and why. A backend is drained only
    /// once it is recorded here (by compare-and-swap on this status), and it leaves the list
    /// only when it is back in the ring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub out: Vec<RingHolder>,
    /// Where `out` took in records from: Leases of the operator's earlier releases (the ring's
    /// lock before this resource), and rings the operator created that were folded into this
    /// one (`name/uid@resourceVersion`). Each is taken in once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub imported_from: Vec<String>,
}

/// One backend out of the ring: the DovecotBackendUpgrade holding it, or its record when that
/// one was deleted with the backend still out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHolder {
    /// `namespace/name` of the DovecotBackendUpgrade that took it out.
    pub dbu: String,
    /// The backend pod.
    pub pod: String,
    /// Its IP in the director ring.
    pub ip: String,
    /// The holder's `spec.maxUnavailable`: where DovecotBackendUpgrades of one ring differ,
    /// the smallest holds.
    #[schemars(range(min = 1))]
    pub max_unavailable: u32,
    /// Set when the DovecotBackendUpgrade was deleted with this backend still out: the record
    /// stays (the backend is still out) until one of the same StatefulSet takes it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_out: Option<Box<LeftOut>>,
    /// Why it is out besides a rollout: "relocating for node maintenance (node n1 is
    /// cordoned)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A backend a deleted DovecotBackendUpgrade left out of the ring: its record, for the one
/// that takes it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftOut {
    /// The backend's StatefulSet: the next DovecotBackendUpgrade of it takes the backend over.
    pub stateful_set: String,
    pub record: BackendStatus,
}

/// One host of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHostStatus {
    /// Its IP in the director ring.
    pub ip: String,
    /// The backend pod at that IP now, when one of the ring's StatefulSets has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The backend pod this host stood for when no pod has its IP now, or another pod took the
    /// IP while this one is not in the ring: a pod back at a new IP rejoins in its place
    /// (verified, then added at this host's count; this entry removed unless another pod has
    /// it). Kept from one pass to the next, so the ring must have been read once before the
    /// pod moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_pod: Option<String>,
    /// The vhost count this host had when it last stood for `formerPod` (kept with it: another
    /// pod at the IP, or a rollout of that pod, may change the entry before the former pod
    /// rejoins elsewhere at this count); without `formerPod`, the count it had before the
    /// operator took it out for the pod at it now, while that pod is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_vhosts: Option<u32>,
    /// Whether this host was up when it last stood for `formerPod` (or before it was taken out,
    /// as for `formerVhosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_up: Option<bool>,
    /// The backend pod whose state this host's count and up/down are: the pod first seen at
    /// it, or the last one a DBU put back here (held out at this IP, then given vhosts); kept
    /// when that pod moves on. A pod that only took the IP (recreated there) does not make them
    /// its own: it rejoins by the host it left, and another backend that stood for this host
    /// reads no human's change here from what a rejoin put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_for: Option<String>,
    /// Its vhost count on the first Ready director.
    pub vhosts: u32,
    /// Whether it is up on the first Ready director.
    pub up: bool,
    /// Users mapped to it on the first Ready director.
    #[schemars(extend("format" = "int64"))]
    pub users: u64,
    /// Who holds it out of the ring and why, when someone does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// Another pod the ring's pass saw at this IP since `formerPod` left it (kept with
    /// `formerPod`): what the entry shows since may be that pod's (a rejoin of it put the entry
    /// down for itself), so no change there is read as a human's for `formerPod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
    /// The vhost count this host had for `countsFor` while that pod is not the one the host
    /// stands for, has left the IP and is not back in the ring: a DBU put it back here, over
    /// the entry of a pod that had left it, and then it moved on too. The host stands for both
    /// (each rejoins by its own count); kept while the entry is taken out for the other one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_vhosts: Option<u32>,
    /// Whether this host was up for `countsFor` (as for `countsVhosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_up: Option<bool>,
}

impl RingHostStatus {
    /// The pod this host stands for: the one that left its IP (`former_pod`), else the one at
    /// it now.
    pub fn stood_for(&self) -> Option<&str> {
        self.former_pod.as_deref().or(self.pod.as_deref())
    }
}

impl DovecotRingStatus {
    /// Every host with the pod it stands for and that pod's state there (what a pod back at a
    /// new IP rejoins by); a host that also stands for the pod it counts for
    /// (`RingHostStatus::counts_vhosts`) is listed for that pod too.
    pub fn stood_for(&self) -> Vec<StoodFor> {
        self.hosts
            .iter()
            .flat_map(|h| {
                // the former pod's state, or, for the pod at it now, its state before the
                // operator took it out
                let stood = h.stood_for().map(|pod| StoodFor {
                    ip: h.ip.clone(),
                    pod: pod.to_string(),
                    vhosts: h.former_vhosts.unwrap_or(h.vhosts),
                    up: h.former_up.unwrap_or(h.up),
                    counts_for: h.counts_for.clone(),
                    taken_by: h.taken_by.clone(),
                    counted: false,
                });
                let counted = h
                    .counts_for
                    .as_ref()
                    .zip(h.counts_vhosts.zip(h.counts_up))
                    .map(|(pod, (vhosts, up))| StoodFor {
                        ip: h.ip.clone(),
                        pod: pod.clone(),
                        vhosts,
                        up,
                        counts_for: Some(pod.clone()),
                        taken_by: None,
                        counted: true,
                    });
                stood.into_iter().chain(counted)
            })
            .collect()
    }
}

/// A host of the ring with the pod it stands for, and the count and up/down it had for that
/// pod (the former pod's, kept, once another pod took the IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoodFor {
    pub ip: String,
    pub pod: String,
    pub vhosts: u32,
    pub up: bool,
    /// `RingHostStatus::counts_for`.
    pub counts_for: Option<String>,
    /// `RingHostStatus::taken_by`.
    pub taken_by: Option<String>,
    /// Listed for the pod the host counts for (`RingHostStatus::counts_vhosts`), beside the
    /// pod it stands for: the entry is that other pod's, not this one's.
    pub counted: bool,
}

impl StoodFor {
    /// Whether the host's count is `pod`'s own state (not a count another pod left there, or
    /// one a rejoin of another pod put back). A host from before `countsFor` was recorded
    /// counts for the pod it stands for.
    pub fn counts_for(&self, pod: &str) -> bool {
        self.counts_for.as_deref().unwrap_or(&self.pod) == pod
    }
}

/// One director of the ring, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingDirectorStatus {
    /// The director pod.
    pub pod: String,
    /// Its pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Whether its `director ring status` says `ring synced` (false also when unreadable).
    pub synced: bool,
    /// How many hosts its `director status` lists (unset: unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<i32>,
}
