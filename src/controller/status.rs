//! Records: the status by server-side apply with one field manager, and Events with log lines.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::context::{Context, Error, FIELD_MANAGER};
use crate::api::{DovecotBackendUpgrade, DovecotBackendUpgradeStatus};
use crate::machine::Note;

/// The status patch body for server-side apply.
pub fn status_patch(status: &DovecotBackendUpgradeStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "mailops.io/v1alpha1",
        "kind": "DovecotBackendUpgrade",
        "status": status,
    })
}

/// Events (and log lines) for the notes, on a DBU or a ring.
pub(super) async fn publish<K>(ctx: &Context, dbu: &K, notes: &[Note])
where
    K: Resource<DynamicType = ()>,
{
    let reference = dbu.object_ref(&());
    for n in notes {
        // every line names the DBU, the backend and the step, for log queries per backend
        let backend = n.pod.as_deref().unwrap_or("");
        let step = n.step.map_or("", |s| s.as_str());
        if n.warning {
            tracing::warn!(dbu = %dbu.name_any(), backend, step, reason = n.reason.as_str(), "{}", n.message);
        } else {
            tracing::info!(dbu = %dbu.name_any(), backend, step, reason = n.reason.as_str(), "{}", n.message);
        }
        let ev = Event {
            type_: if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: n.reason.to_string(),
            note: Some(crate::text::bounded(&n.message, crate::text::MESSAGE_LIMIT)),
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

/// Writes status when `write`, numbered one past the copy it was decided from and with that
/// copy's resourceVersion as a precondition: a writer that decided from a stale copy gets a
/// conflict instead of overwriting newer status. Remembers the number written.
pub(super) async fn write_status(
    ctx: &Context,
    api: &Api<DovecotBackendUpgrade>,
    dbu: &DovecotBackendUpgrade,
    status: &DovecotBackendUpgradeStatus,
    write: bool,
) -> Result<(), Error> {
    // no-op patches cost API calls and wake every watcher
    if !write {
        return Ok(());
    }
    // a deposed leader's late write would hand the next leader a copy one write older than
    // the one it decides from: only the Lease's holder writes status
    super::cluster::fenced(ctx.guard.fence.as_deref()).await?;
    let mut status = status.clone();
    status.write_seq = dbu.status.as_ref().map_or(0, |s| s.write_seq) + 1;
    let mut body = status_patch(&status);
    if let Some(rv) = dbu.resource_version() {
        body["metadata"] = serde_json::json!({ "name": dbu.name_any(), "resourceVersion": rv });
    }
    api.patch_status(
        &dbu.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    if let Some(uid) = dbu.uid() {
        ctx.memory.update(&uid, |m| m.written = status.write_seq);
    }
    Ok(())
}

/// Whether a copy of the DBU is older than the status this process last wrote for it.
pub(super) fn stale(ctx: &Context, dbu: &DovecotBackendUpgrade) -> bool {
    let Some(uid) = dbu.uid() else {
        return false;
    };
    dbu.status.as_ref().map_or(0, |s| s.write_seq) < ctx.memory.get(&uid).written
}
