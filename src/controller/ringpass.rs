//! The ring's own pass: read every Ready director, write the ring's face and conditions, and keep backends no DBU looks after out of service.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::labels::{Selector, SelectorExt};
use kube::runtime::controller::Action;

use super::budget;
use super::cluster::owned_by_sts;
use super::context::{Context, Error};
use super::rings::{absorb, views};
use super::status::publish;
use crate::api::{DovecotRing, DovecotRingStatus, RELEASE_ANNOTATION};
use crate::engine::{RingWorld, ring_pass};
use crate::exec::KubeExec;
use crate::machine::face::{self, BackendPod};
use crate::machine::{Note, ring};
use crate::reason::EventReason;

/// While something is out of the ring, or the ring is not whole, it is looked at this often
/// (a director restart forgets the out state of a left-out backend); at rest, rarely.
const BUSY_EVERY: Duration = Duration::from_secs(30);
const REST_EVERY: Duration = Duration::from_secs(600);

/// One pass over a ring.
pub async fn reconcile_ring(r: Arc<DovecotRing>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = r.namespace().ok_or(Error::NoNamespace)?;
    ctx.stores.ready().await?;
    let name = r.name_any();
    let pods: Vec<_> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let sel = Selector::try_from(r.spec.directors.selector.clone()).ok();
    let mut directors: Vec<_> = pods
        .iter()
        .filter(|p| sel.as_ref().is_some_and(|s| s.matches(p.labels())) && p.serving())
        .collect();
    directors.sort_by_key(|p| p.name_any());
    let backends: Vec<BackendPod> = pods
        .iter()
        .filter(|p| r.spec.stateful_sets().any(|set| owned_by_sts(p, set)))
        .map(|p| BackendPod {
            name: p.name_any(),
            ip: p.ip.clone(),
            ready: p.serving(),
        })
        .collect();
    let (mut views, _) = views(&ctx.stores, &ns);
    let mut notes = Vec::new();
    // a ring the operator created for the same directors folds into this declared one now,
    // not only when a DBU next looks
    let api: Api<DovecotRing> = Api::namespaced(ctx.client.clone(), &ns);
    for from in ring::folded_into(&name, &views)
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        absorb(&api, &from, &name).await?;
        notes.push(Note::new(
            EventReason::RingMigrated,
            format!("moved the record of DovecotRing {from} (created by the operator for DBUs from before rings) into this ring, declared for the same directors, and deleted {from}"),
        ));
        views.retain(|v| v.name != from);
    }
    if !notes.is_empty() {
        // the record moved: the next pass starts from it
        publish(&ctx, &*r, &notes).await;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let prev = r.status.clone().unwrap_or_default();
    let token = r.annotations().get(RELEASE_ANNOTATION).cloned();
    if let Some((kept, released)) = face::release(token.as_deref(), &prev) {
        write_out(
            &api,
            &r,
            serde_json::json!({"out": kept, "outCount": kept.len(), "releaseToken": token.as_deref().map(str::trim)}),
        )
        .await?;
        let notes: Vec<Note> = match released.as_slice() {
            [] => vec![Note::new(
                EventReason::RingReleased,
                format!("{RELEASE_ANNOTATION}: no left-out backend of that name; nothing released"),
            )],
            pods => pods
                .iter()
                .map(|p| {
                    Note::new(
                        EventReason::RingReleased,
                        format!("{p}: released by a human ({RELEASE_ANNOTATION}); the ring no longer keeps it out, and its ring entry stays as it is"),
                    )
                })
                .collect(),
        };
        publish(&ctx, &*r, &notes).await;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let conflict = ring::conflict(&name, &views);
    let world = RingWorld {
        directors: directors
            .iter()
            .map(|d| (d.name_any(), d.ip.clone()))
            .collect(),
        backends,
        conflict: conflict.clone(),
    };
    let exec = KubeExec::new(Api::namespaced(ctx.client.clone(), &ns)).guarded(ctx.guard.clone());
    let passed = ring_pass(&r, &world, &exec, Timestamp::now()).await;
    if let Some(kept) = passed.keep {
        // the re-asserts run in the next pass, once the record knows the counts
        write_out(&api, &r, serde_json::json!({"out": kept})).await?;
        publish(&ctx, &*r, &passed.notes).await;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let (st, mut notes) = (passed.status, passed.notes);
    let existing: Vec<(String, String)> = ctx
        .stores
        .rings
        .state()
        .iter()
        .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
        .collect();
    ctx.metrics.ring(&ns, &name, reading(&st), &existing);
    if notes.is_empty() {
        let was_split = prev
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True");
        if let Some(c) = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True" && !was_split)
        {
            notes.push(Note::new(EventReason::Stalled, c.message.clone()));
        }
    }
    let changed = (
        &st.observed_generation,
        &st.conditions,
        &st.host_count,
        &st.users,
        &st.synced,
        &st.hosts,
        &st.directors,
    ) != (
        &prev.observed_generation,
        &prev.conditions,
        &prev.host_count,
        &prev.users,
        &prev.synced,
        &prev.hosts,
        &prev.directors,
    );
    if changed {
        // the face only: `out` is the DBUs' record, changed by compare-and-swap
        let patch = serde_json::json!({"status": {
            "observedGeneration": st.observed_generation,
            "conditions": st.conditions,
            "hostCount": st.host_count,
            "users": st.users,
            "synced": st.synced,
            "hosts": st.hosts,
            "directors": st.directors,
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    publish(&ctx, &*r, &notes).await;
    keep_budgets(&ctx, &r, &ns).await?;
    let whole = st.synced.as_deref() == Some("True") && conflict.is_none();
    Ok(Action::requeue(if whole && prev.out.is_empty() {
        REST_EVERY
    } else {
        BUSY_EVERY
    }))
}

/// What the metrics show of a ring's status after a pass.
fn reading(st: &DovecotRingStatus) -> crate::metrics::RingReading {
    crate::metrics::RingReading {
        hosts: st.host_count,
        users: st.users,
        out: st.out.len() as i64,
        synced: st.synced.as_deref().and_then(|s| match s {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        }),
        left_out_since: st
            .out
            .iter()
            .filter_map(|h| h.left_out.as_ref()?.record.started.as_ref())
            .map(|t| t.0.as_second())
            .min(),
    }
}

/// With node maintenance on, a PodDisruptionBudget over each backend StatefulSet of the ring;
/// with it off, none (one left from before would hold every node drain).
async fn keep_budgets(ctx: &Context, r: &DovecotRing, ns: &str) -> Result<(), Error> {
    let wanted: Vec<_> = if ctx.stores.nodes.is_some() {
        ctx.stores
            .sts
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns) && r.spec.lists(&s.name_any()))
            .filter_map(|s| budget::desired(r, s))
            .collect()
    } else {
        Vec::new()
    };
    budget::keep(
        &Api::namespaced(ctx.client.clone(), ns),
        &r.name_any(),
        &wanted,
    )
    .await
}

/// Writes the ring's record of who is out (`status` fields) under the version this pass read:
/// a slot taken meanwhile is a conflict, never lost.
async fn write_out(
    api: &Api<DovecotRing>,
    r: &DovecotRing,
    status: serde_json::Value,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": r.resource_version()},
        "status": status,
    });
    api.patch_status(
        &r.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// A failed pass is retried with backoff, like a DBU's.
pub fn ring_error_policy(r: Arc<DovecotRing>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.category());
    tracing::warn!(ring = %r.name_any(), category = err.category(), error = %err, "ring pass failed");
    Action::requeue(Duration::from_secs(15))
}
