//! The PodDisruptionBudgets the operator keeps over each ring's backends (node maintenance): an eviction never takes a backend; the operator relocates it.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::context::{Error, FIELD_MANAGER};
use crate::api::DovecotRing;

/// The label naming the ring a budget is kept for (to find and drop the ones no longer wanted).
pub const RING_LABEL: &str = "mailops.io/ring";

/// The budget's name for a backend StatefulSet (a StatefulSet belongs to at most one ring).
pub fn budget_name(sts: &str) -> String {
    format!("{sts}-ring")
}

/// The budget over one backend StatefulSet of `ring`: no voluntary disruption at all
/// (`maxUnavailable: 0`), because the operator moves backends itself, through the runbook, when
/// their node is under maintenance; `kubectl drain` keeps retrying its eviction meanwhile. A pod
/// Replace has stopped, taken out and reset carries `maintenance::RELEASED_LABEL`, which the
/// selector leaves out: the drain's next eviction deletes it (see `judge::evict_first`). A pod
/// that is not Ready stays covered (`IfHealthyBudget`, never allowed at `maxUnavailable: 0`):
/// a backend is not Ready in the middle of the runbook (from StopLmtp on), and an eviction
/// there would skip its reset (seen on the two-node real-node test with `AlwaysAllow`).
pub fn desired(ring: &DovecotRing, sts: &StatefulSet) -> Option<PodDisruptionBudget> {
    let mut selector = sts.spec.as_ref()?.selector.clone();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: dbu_core::maintenance::RELEASED_LABEL.to_string(),
            operator: "DoesNotExist".into(),
            values: None,
        });
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(RING_LABEL.to_string(), ring.name_any());
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    );
    Some(PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(budget_name(&sts.name_any())),
            namespace: ring.namespace(),
            labels: Some(labels),
            owner_references: ring.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(0)),
            selector: Some(selector),
            unhealthy_pod_eviction_policy: Some("IfHealthyBudget".into()),
            ..Default::default()
        }),
        status: None,
    })
}

/// Keeps exactly the budgets `wanted` of the ring (server-side apply, one field manager), and
/// deletes the other budgets labelled for it (a StatefulSet taken out of the ring, or node
/// maintenance turned off: a budget left behind would hold every node drain for ever).
pub async fn keep(
    api: &Api<PodDisruptionBudget>,
    ring: &str,
    wanted: &[PodDisruptionBudget],
) -> Result<(), Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for b in wanted {
        api.patch(&b.name_any(), &pp, &Patch::Apply(b)).await?;
    }
    let lp = ListParams::default().labels(&format!("{RING_LABEL}={ring}"));
    for b in api.list_metadata(&lp).await? {
        let name = b.name_any();
        if !wanted.iter().any(|w| w.name_any() == name) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_every_backend_of_the_statefulset_but_a_released_one_and_names_its_ring() {
        let ring: DovecotRing = serde_json::from_value(serde_json::json!({
            "apiVersion": "mailops.io/v1alpha1",
            "kind": "DovecotRing",
            "metadata": {"name": "mail", "namespace": "mx", "uid": "u-1"},
            "spec": {
                "directors": {"selector": {"matchLabels": {"app": "director"}}},
                "backends": [{"statefulSet": "backend"}]
            }
        }))
        .unwrap();
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "backend", "namespace": "mx"},
            "spec": {
                "selector": {"matchLabels": {"app": "backend"}},
                "serviceName": "backend",
                "template": {"metadata": {"labels": {"app": "backend"}}}
            }
        }))
        .unwrap();
        let b = serde_json::to_value(desired(&ring, &sts).unwrap()).unwrap();
        assert_eq!(b["metadata"]["name"], "backend-ring");
        assert_eq!(b["metadata"]["namespace"], "mx");
        assert_eq!(b["metadata"]["labels"][RING_LABEL], "mail");
        assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "DovecotRing");
        assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(b["spec"]["maxUnavailable"], 0);
        assert_eq!(b["spec"]["selector"]["matchLabels"]["app"], "backend");
        // a released pod (Replace's, for the node drain to evict) is left out of the selector
        assert_eq!(
            b["spec"]["selector"]["matchExpressions"],
            serde_json::json!([{"key": "mailops.io/released", "operator": "DoesNotExist"}])
        );
        // a backend mid-runbook is not Ready: it stays held
        assert_eq!(b["spec"]["unhealthyPodEvictionPolicy"], "IfHealthyBudget");
        // a StatefulSet without a spec has no selector to hold: no budget
        assert!(desired(&ring, &StatefulSet::default()).is_none());
    }
}
