//! A DBU's DovecotRing: resolved from the ring store, created or joined for manifests from before rings, and its record of who is out read and written by compare-and-swap.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::labels::{Selector, SelectorExt};
use kube::{Client, ResourceExt};

use super::context::api_err;
use super::stores::Stores;
use crate::api::{DovecotBackendUpgrade, DovecotRing, DovecotRingSpec, RingBackend, RingHolder};
use crate::engine::ClusterError;
use crate::machine::ring::{Resolved, RingView, Seeker, resolve};
use crate::machine::{RingLock, lock};
use crate::settings::{self, Settings};

/// Label of the rings the operator created for DBUs from before rings.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "dovecot-upgrade-operator");

/// What resolving a DBU's ring came to.
#[derive(Debug)]
pub enum Binding {
    /// The settings within the ring.
    Bound(Box<Settings>),
    /// Refused until a ring or the DBU changes.
    Refused(String),
    /// A ring was created, or the StatefulSet added to one: decide again once the watch has it.
    Changed(String),
}

/// Pods of the namespace that a selector picks, by name.
fn picked(pods: &[std::sync::Arc<super::lean::LeanPod>], sel: &LabelSelector) -> Vec<String> {
    let Ok(sel) = Selector::try_from(sel.clone()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| sel.matches(p.labels()))
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

/// The pods of a namespace, from the store.
fn pods_in(stores: &Stores, ns: &str) -> Vec<std::sync::Arc<super::lean::LeanPod>> {
    stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .collect()
}

/// The rings of a namespace as resolution sees them.
pub fn views(stores: &Stores, ns: &str) -> (Vec<RingView>, Vec<std::sync::Arc<DovecotRing>>) {
    let pods = pods_in(stores, ns);
    let rings: Vec<_> = stores
        .rings
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns))
        .collect();
    let views = rings
        .iter()
        .map(|r| RingView {
            name: r.name_any(),
            backends: r.spec.stateful_sets().map(str::to_string).collect(),
            directors: picked(&pods, &r.spec.directors.selector),
            selector: settings::selector_string(&r.spec.directors.selector).unwrap_or_default(),
            auto: r.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1),
        })
        .collect();
    (views, rings)
}

/// Where the DBU's resolution leads, from the stores, with the namespace's rings.
/// With `after_absorbing`, as it will be once every ring the operator created is folded into
/// the one a human declared (for read-only tools, which fold nothing).
fn resolved(
    stores: &Stores,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
    s: &Settings,
    after_absorbing: bool,
) -> (Resolved, Vec<std::sync::Arc<DovecotRing>>) {
    let (mut views, rings) = views(stores, ns);
    let auto_name = lock::lease_name(&lock::ring_key(ns, s));
    let own_pods = s
        .own_director_selector
        .as_ref()
        .map(|sel| picked(&pods_in(stores, ns), sel));
    let seeker = Seeker {
        named: dbu.spec.ring.as_deref(),
        stateful_set: &s.stateful_set,
        legacy: own_pods.as_deref().map(|p| (auto_name.as_str(), p)),
    };
    loop {
        match resolve(&seeker, &views) {
            Resolved::Absorb { from, .. } if after_absorbing => views.retain(|v| v.name != from),
            r => return (r, rings),
        }
    }
}

/// The settings within ring `name`, or why its spec cannot be used.
fn within(s: Settings, name: &str, rings: &[std::sync::Arc<DovecotRing>]) -> Binding {
    let Some(ring) = rings.iter().find(|r| r.name_any() == name) else {
        return Binding::Refused(format!("DovecotRing {name} is gone"));
    };
    match settings::with_ring(s, name, &ring.spec) {
        Ok(s) => Binding::Bound(Box::new(s)),
        Err(e) => Binding::Refused(format!("DovecotRing {name}: {e}")),
    }
}

/// The settings a read-only tool (`plan`) works with: the ring's, or the DBU's own directors
/// where the operator would create or join a ring; never a write.
pub fn bind_read_only(
    stores: &Stores,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
    s: Settings,
) -> Result<Settings, String> {
    match resolved(stores, dbu, ns, &s, true) {
        (Resolved::Ring(name), rings) => match within(s, &name, &rings) {
            Binding::Bound(s) => Ok(*s),
            Binding::Refused(why) | Binding::Changed(why) => Err(why),
        },
        (Resolved::Create(_) | Resolved::Join(_), _) => Ok(s),
        (Resolved::Refused(why), _) => Err(why),
        (Resolved::Absorb { .. }, _) => unreachable!("resolved after absorbing"),
    }
}

/// The DBU's ring, from the stores; creates or joins one for a DBU from before rings.
pub async fn bind(
    client: &Client,
    stores: &Stores,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
    s: Settings,
) -> Result<Binding, ClusterError> {
    stores.ready().await?;
    let (resolution, rings) = resolved(stores, dbu, ns, &s, false);
    let api: Api<DovecotRing> = Api::namespaced(client.clone(), ns);
    // a DBU being deleted only binds to a ring that exists: creating one could never succeed
    // in a namespace being deleted, and would outlive the DBU for nothing
    if dbu.metadata.deletion_timestamp.is_some()
        && matches!(resolution, Resolved::Create(_) | Resolved::Join(_))
    {
        return Ok(Binding::Refused(format!(
            "no DovecotRing lists StatefulSet {}",
            s.stateful_set
        )));
    }
    match resolution {
        Resolved::Ring(name) => Ok(within(s, &name, &rings)),
        Resolved::Refused(why) => Ok(Binding::Refused(why)),
        Resolved::Absorb { from, into } => {
            absorb(&api, &from, &into).await?;
            Ok(Binding::Changed(format!(
                "moved the record of DovecotRing {from} (created by the operator for DBUs from before rings) into DovecotRing {into}, declared for the same directors, and deleted {from}"
            )))
        }
        Resolved::Create(name) => {
            let director = dbu
                .spec
                .director
                .clone()
                .expect("only a DBU with spec.director creates a ring");
            let ring = DovecotRing {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.to_string()),
                    labels: Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into()),
                    annotations: Some(
                        [(
                            "mailops.io/created-for".to_string(),
                            format!("DovecotBackendUpgrade {}", dbu.name_any()),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                spec: DovecotRingSpec {
                    directors: director,
                    backends: vec![RingBackend {
                        stateful_set: s.stateful_set.clone(),
                    }],
                    max_unavailable: s.max_unavailable as i32,
                    min_available_backends: s.min_available as i32,
                },
                status: None,
            };
            match api.create(&PostParams::default(), &ring).await {
                Ok(_) => Ok(Binding::Changed(format!(
                    "created DovecotRing {name} from spec.director, with StatefulSet {}: no ring listed it (declare the ring in Git: kubectl get dring {name} -o yaml)",
                    s.stateful_set
                ))),
                // another DBU of the ring created it first: join it next time
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Binding::Changed(String::new())),
                Err(e) => Err(api_err(e)),
            }
        }
        Resolved::Join(name) => {
            // one join at a time, each from a fresh read: DBUs joining one ring at once would
            // otherwise each patch the cached version, one win and the rest conflict, and again
            // on every ring change that wakes them all (100 DBUs: 4,166 conflicts in 20 s)
            let _one = stores.joins.lock().await;
            let ring = api.get(&name).await.map_err(api_err)?;
            if ring.spec.stateful_sets().any(|x| x == s.stateful_set) {
                // joined already, by an earlier pass the cache has not seen yet
                return Ok(Binding::Changed(String::new()));
            }
            // the whole list under the version read: a concurrent edit is a conflict, not lost
            let mut backends = ring.spec.backends.clone();
            backends.push(RingBackend {
                stateful_set: s.stateful_set.clone(),
            });
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": ring.resource_version()},
                "spec": {"backends": backends},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| conflict(e, &name))?;
            Ok(Binding::Changed(format!(
                "added StatefulSet {} to DovecotRing {name}, which the operator created for the same directors",
                s.stateful_set
            )))
        }
    }
}

/// The ring's record of who is out, read from the API server (never a cache: slots are
/// granted from it). Holders of earlier releases' Leases are taken in first, once.
pub async fn read_lock(
    client: &Client,
    stores: &Stores,
    ns: &str,
    lock_ns: &str,
    s: &Settings,
) -> Result<RingLock, ClusterError> {
    let name = ring_name(s)?;
    let api: Api<DovecotRing> = Api::namespaced(client.clone(), ns);
    let ring = api.get(name).await.map_err(api_err)?;
    let status = ring.status.clone().unwrap_or_default();
    let mut version = ring.resource_version();
    let mut holders = status.out.clone();
    let leases = legacy_leases(ns, s, &status.imported_from);
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), lock_ns);
    let mut found = Vec::new();
    let absent = |lease: &str| format!("{lock_ns}/{lease}");
    for lease in leases {
        let known_absent = stores
            .absent_leases
            .lock()
            .is_ok_and(|a| a.contains(&absent(&lease)));
        if known_absent {
            continue;
        }
        let Some(l) = lease_api.get_opt(&lease).await.map_err(api_err)? else {
            if let Ok(mut a) = stores.absent_leases.lock() {
                a.insert(absent(&lease));
            }
            continue;
        };
        let theirs: Vec<RingHolder> = match l.annotations().get(lock::HOLDERS_ANNOTATION) {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| ClusterError::Invalid(format!("Lease {lease}: holders: {e}")))?,
            None => Vec::new(),
        };
        for h in theirs {
            if !holders.iter().any(|o| o.dbu == h.dbu && o.pod == h.pod) {
                holders.push(h);
            }
        }
        found.push(lease);
    }
    if !found.is_empty() {
        // the import and its mark in one write: a lease is taken in exactly once
        let mut imported = status.imported_from.clone();
        imported.extend(found.iter().cloned());
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": version},
            "status": {"out": holders, "outCount": holders.len(), "importedFrom": imported},
        });
        let done = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| conflict(e, name))?;
        version = done.resource_version();
        for lease in &found {
            let moved = serde_json::json!({"metadata": {"annotations": {
                lock::HOLDERS_ANNOTATION: "[]",
                "mailops.io/moved-to": format!("DovecotRing {ns}/{name}"),
            }}});
            if let Err(e) = lease_api
                .patch(lease, &PatchParams::default(), &Patch::Merge(&moved))
                .await
            {
                tracing::warn!(lease = %lease, error = %e, "could not empty the earlier release's ring Lease; its holders are already in the ring");
            }
            tracing::info!(lease = %lease, ring = %name, "took the holders of an earlier release's ring Lease into the DovecotRing");
        }
    }
    Ok(RingLock {
        version,
        holders: live_holders(stores, holders),
    })
}

/// The ring's record as the ring's watch has it; None while an earlier release's Lease may
/// still hold backends (only `read_lock` looks for and imports those) or the ring is not there.
pub fn cached_lock(stores: &Stores, ns: &str, lock_ns: &str, s: &Settings) -> Option<RingLock> {
    let ring = stores
        .rings
        .get(&kube::runtime::reflector::ObjectRef::new(ring_name(s).ok()?).within(ns))?;
    let status = ring.status.clone().unwrap_or_default();
    let absent = stores.absent_leases.lock().ok()?;
    if legacy_leases(ns, s, &status.imported_from)
        .iter()
        .any(|l| !absent.contains(&format!("{lock_ns}/{l}")))
    {
        return None;
    }
    Some(RingLock {
        version: ring.resource_version(),
        holders: live_holders(stores, status.out),
    })
}

/// A DBU that no longer exists (deleted without its finalizer) holds nothing, except the
/// backends its cleanup recorded as left out: they are still out of the ring.
fn live_holders(stores: &Stores, holders: Vec<RingHolder>) -> Vec<RingHolder> {
    let live: Vec<String> = stores
        .dbus
        .state()
        .iter()
        .map(|d| format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any()))
        .collect();
    holders
        .into_iter()
        .filter(|h| h.left_out.is_some() || live.contains(&h.dbu))
        .collect()
}

/// Writes the ring's record of who is out, only if it is still the version read.
pub async fn write_lock(
    client: &Client,
    ns: &str,
    s: &Settings,
    version: Option<&str>,
    holders: &[RingHolder],
) -> Result<(), ClusterError> {
    let name = ring_name(s)?;
    let api: Api<DovecotRing> = Api::namespaced(client.clone(), ns);
    let Some(version) = version else {
        return Err(ClusterError::Invalid(format!(
            "DovecotRing {name}: written without the version read"
        )));
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": version},
        "status": {"out": holders, "outCount": holders.len()},
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| conflict(e, name))
}

/// Folds ring `from` (the operator's) into `into` (a human's): its holders join `into`'s under
/// compare-and-swap, marked with `from`'s UID and version in the same write, then `from` is
/// deleted only if it is still that version. A crash in between repeats nothing harmful: the
/// mark skips a second import of the same version, and a changed `from` is imported again
/// (holders are merged, never duplicated).
pub(super) async fn absorb(
    api: &Api<DovecotRing>,
    from: &str,
    into: &str,
) -> Result<(), ClusterError> {
    let src = match api.get_opt(from).await.map_err(api_err)? {
        Some(r) => r,
        None => return Ok(()),
    };
    let dst = api.get(into).await.map_err(api_err)?;
    let mark = format!(
        "{from}/{}@{}",
        src.uid().unwrap_or_default(),
        src.resource_version().unwrap_or_default()
    );
    let dst_status = dst.status.clone().unwrap_or_default();
    if !dst_status.imported_from.contains(&mark) {
        let mut out = dst_status.out.clone();
        for h in src.status.iter().flat_map(|st| st.out.iter()) {
            if !out.iter().any(|o| o.dbu == h.dbu && o.pod == h.pod) {
                out.push(h.clone());
            }
        }
        let mut marks = dst_status.imported_from.clone();
        marks.push(mark);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": dst.resource_version()},
            "status": {"out": out, "outCount": out.len(), "importedFrom": marks},
        });
        api.patch_status(into, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| conflict(e, into))?;
    }
    let pre = kube::api::Preconditions {
        uid: src.uid(),
        resource_version: src.resource_version(),
    };
    let dp = kube::api::DeleteParams {
        preconditions: Some(pre),
        ..Default::default()
    };
    match api.delete(from, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(conflict(e, from)),
    }
}

fn conflict(e: kube::Error, name: &str) -> ClusterError {
    match e {
        kube::Error::Api(a) if a.code == 409 => {
            ClusterError::Conflict(format!("DovecotRing {name} changed since it was read"))
        }
        e => api_err(e),
    }
}

fn ring_name(s: &Settings) -> Result<&str, ClusterError> {
    s.ring
        .as_deref()
        .ok_or_else(|| ClusterError::Invalid("the DBU's DovecotRing is not resolved".into()))
}

/// The Leases earlier releases kept this ring's lock in (named after a director selector's
/// text: the DBU's own and the ring's), not taken in yet.
fn legacy_leases(ns: &str, s: &Settings, imported: &[String]) -> Vec<String> {
    let mut names: Vec<String> = s
        .own_director_selector
        .iter()
        .chain([&s.director_label_selector])
        .map(|sel| lock::lease_name(&lock::ring_key_of(ns, sel)))
        .filter(|n| !imported.contains(n))
        .collect();
    names.dedup();
    names
}

/// DBUs a ring concerns: those naming it and those whose StatefulSet it lists.
pub fn dbus_of_ring(
    ring: &DovecotRing,
    dbus: &[std::sync::Arc<DovecotBackendUpgrade>],
) -> Vec<std::sync::Arc<DovecotBackendUpgrade>> {
    dbus.iter()
        .filter(|d| d.namespace() == ring.namespace())
        .filter(|d| {
            d.spec.ring.as_deref() == Some(ring.name_any().as_str())
                || ring.spec.lists(&d.spec.backends.stateful_set)
                || d.spec.ring.is_none()
        })
        .cloned()
        .collect()
}
