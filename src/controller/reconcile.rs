//! Reconcile and cleanup of one DBU behind its finalizer: validate, one engine pass, record.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::Instrument;

use super::cluster::{KubeCluster, edges_for};
use super::context::{Context, Error, FINALIZER};
use super::rings::{self, Binding};
use super::status::{publish, stale, write_status};
use crate::api::{DovecotBackendUpgrade, FORCE_DELETE_ANNOTATION};
use crate::machine::Note;
use crate::reason::{EventReason, WaitReason};
use crate::{conditions, engine, machine, settings};

/// The copy to decide from: the cached one, unless it is older than the status this process
/// last wrote (a watch that resumed from an old version): then a fresh read.
async fn fresh(
    ctx: &Context,
    api: &Api<DovecotBackendUpgrade>,
    dbu: Arc<DovecotBackendUpgrade>,
) -> Result<Arc<DovecotBackendUpgrade>, Error> {
    if !stale(ctx, &dbu) {
        return Ok(dbu);
    }
    tracing::info!(dbu = %dbu.name_any(), "cached copy is older than the status last written; reading it fresh");
    Ok(Arc::new(api.get(&dbu.name_any()).await?))
}

async fn apply(dbu: Arc<DovecotBackendUpgrade>, ctx: &Context) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let dbu = fresh(ctx, &api, dbu).await?;
    let generation = dbu.metadata.generation;
    let mut status = dbu.status.clone().unwrap_or_default();
    let in_flight = status.backends.iter().any(machine::active);
    let s = match settings::for_dbu(&dbu.spec, &ctx.policy, dbu.annotations(), in_flight) {
        Ok(s) => s,
        Err(e) => {
            // permanent: nothing runs until the spec changes
            let notes =
                machine::invalid_spec(&mut status, &e.to_string(), generation, Timestamp::now());
            let (write, _) = conditions::publish_plan(dbu.status.as_ref(), &status);
            write_status(ctx, &api, &dbu, &status, write).await?;
            publish(ctx, &*dbu, &notes).await;
            return Ok(Action::await_change());
        }
    };
    let s = match rings::bind(&ctx.client, &ctx.stores, &dbu, &ns, s).await? {
        Binding::Bound(s) => *s,
        Binding::Refused(why) => {
            // permanent until a ring or the DBU changes (both watched); the requeue is a backstop
            let notes = machine::ring_refused(&mut status, &why, generation, Timestamp::now());
            let (write, _) = conditions::publish_plan(dbu.status.as_ref(), &status);
            write_status(ctx, &api, &dbu, &status, write).await?;
            publish(ctx, &*dbu, &notes).await;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        Binding::Changed(what) => {
            if !what.is_empty() {
                publish(ctx, &*dbu, &[Note::new(EventReason::RingMigrated, what)]).await;
            }
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };
    let (cluster, exec) = edges(ctx, &dbu, &ns);
    let out = engine::reconcile_once(
        &s,
        status,
        generation,
        &exec,
        &cluster,
        &engine::NetProbes,
        &Timestamp::now,
    )
    .await?;
    let (write, stall) = conditions::publish_plan(dbu.status.as_ref(), &out.status);
    write_status(ctx, &api, &dbu, &out.status, write).await?;
    if let Some(ring) = s.ring.as_deref()
        && conditions::waits_for(&out.status, WaitReason::WaitingForRingPass)
    {
        ctx.ring_nudge.wake(&ns, ring);
    }
    ctx.metrics.record(
        &format!("{ns}/{}", dbu.name_any()),
        &out,
        Timestamp::now().as_millisecond() as f64 / 1000.0,
    );
    let mut notes = out.notes;
    notes.extend(stall);
    publish(ctx, &*dbu, &notes).await;
    Ok(match out.requeue {
        Some(d) if d.is_zero() => Action::requeue(Duration::from_millis(200)),
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Deleting: put back what can go back, hand what stays out to the ring's lock. The finalizer
/// stays (an error, retried with backoff) while a backend that should go back could not.
async fn cleanup(dbu: Arc<DovecotBackendUpgrade>, ctx: &Context) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let dbu = fresh(ctx, &api, dbu).await?;
    let status = dbu.status.clone().unwrap_or_default();
    let force = dbu
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let (cluster, exec) = edges(ctx, &dbu, &ns);
    let holds_nothing = status.ring_held.is_empty() && !status.backends.iter().any(machine::active);
    let bound = match settings::validate(&dbu.spec) {
        // nothing out and nothing held: no ring to settle (nor one to create)
        _ if holds_nothing => Ok(None),
        Ok(s) => match rings::bind(&ctx.client, &ctx.stores, &dbu, &ns, s).await? {
            Binding::Bound(s) => Ok(Some(*s)),
            Binding::Refused(why) | Binding::Changed(why) => Err(why),
        },
        Err(e) => Err(e.to_string()),
    };
    let done = match bound {
        Ok(None) => machine::Deletion::default(),
        Ok(Some(s)) => {
            let done =
                engine::cleanup(&s, &status, &exec, &cluster, &Timestamp::now, force).await?;
            // what it waits for may be the ring's pass (a backend back at a new IP)
            if let Some(ring) = s.ring.as_deref().filter(|_| !done.finished()) {
                ctx.ring_nudge.wake(&ns, ring);
            }
            done
        }
        Err(_) if force => machine::Deletion::forced(&status),
        Err(why) if why.is_empty() => machine::Deletion {
            pending: vec!["the DBU's DovecotRing is being set up".into()],
            ..Default::default()
        },
        // without a ring (a namespace being deleted takes rings and StatefulSets first), a
        // StatefulSet the API server no longer has leaves nothing to put back
        Err(_) if statefulset_gone(ctx, &dbu, &ns).await? => {
            let mut done = machine::Deletion::default();
            for rec in status.backends.iter().filter(|r| machine::active(r)) {
                done.gone(rec, &dbu.spec.backends.stateful_set);
            }
            done
        }
        // nothing can be undone without valid settings and a ring: only forcing lets
        // in-flight ones go
        Err(why) => machine::Deletion {
            pending: vec![format!(
                "{why}; until then nothing can be put back (or set the annotation {FORCE_DELETE_ANNOTATION}=true)"
            )],
            ..Default::default()
        },
    };
    publish(ctx, &*dbu, &done.notes).await;
    if !done.finished() {
        let why = done.pending_message();
        let mut st = status.clone();
        let notes =
            machine::deletion_pending(&mut st, &why, dbu.metadata.generation, Timestamp::now());
        let (write, _) = conditions::publish_plan(dbu.status.as_ref(), &st);
        write_status(ctx, &api, &dbu, &st, write).await?;
        publish(ctx, &*dbu, &notes).await;
        return Err(Error::CleanupPending(why));
    }
    ctx.metrics.forget(&format!("{ns}/{}", dbu.name_any()));
    if let Some(uid) = dbu.uid() {
        ctx.memory.forget(&uid);
    }
    Ok(Action::await_change())
}

/// Whether the DBU's StatefulSet is gone, on the API server's word (never a cache's).
async fn statefulset_gone(
    ctx: &Context,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
) -> Result<bool, Error> {
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api
        .get_opt(&dbu.spec.backends.stateful_set)
        .await?
        .is_none())
}

/// Reconciles one DBU behind the finalizer that guarantees ring cleanup on delete.
pub async fn reconcile(
    dbu: Arc<DovecotBackendUpgrade>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!("reconcile", dbu = %dbu.name_any(), namespace = %ns);
    let uid = dbu.uid().unwrap_or_default();
    // the first reconcile (no finalizer yet) acknowledges before anything else
    if dbu.metadata.deletion_timestamp.is_none() && !dbu.finalizers().iter().any(|f| f == FINALIZER)
    {
        let mut status = dbu.status.clone().unwrap_or_default();
        if machine::acknowledge(&mut status, dbu.metadata.generation, Timestamp::now()) {
            write_status(&ctx, &api, &dbu, &status, true)
                .instrument(span.clone())
                .await?;
        }
    }
    let res = finalizer(&api, FINALIZER, dbu, |ev| async {
        match ev {
            Finalizer::Apply(d) => apply(d, &ctx).await,
            Finalizer::Cleanup(d) => cleanup(d, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(e.to_string()));
    if res.is_ok() {
        ctx.memory.update(&uid, |m| m.failures = 0);
    }
    res
}

/// Failures back off per DBU, doubling from 1 s to 15 s (no hot loop while the API server is
/// away, and back within seconds once it returns); the step machine decides about step failures.
pub fn error_policy(dbu: Arc<DovecotBackendUpgrade>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.category());
    let uid = dbu.uid().unwrap_or_default();
    ctx.memory
        .update(&uid, |m| m.failures = m.failures.saturating_add(1));
    let failures = ctx.memory.get(&uid).failures;
    let wait = retry_after_failures(failures);
    tracing::warn!(dbu = %dbu.name_any(), category = err.category(), error = %err, failures, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// 1 s, 2 s, 4 s, 8 s, then every 15 s: at most 4 reconciles a minute per failing DBU.
pub fn retry_after_failures(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(4)).min(Duration::from_secs(15))
}

/// The cluster and exec edges of one DBU, with the context's lock namespace and exec guard.
fn edges(
    ctx: &Context,
    dbu: &DovecotBackendUpgrade,
    ns: &str,
) -> (KubeCluster, crate::exec::KubeExec) {
    edges_for(
        &ctx.client,
        &ctx.stores,
        dbu,
        ns,
        &ctx.lock_namespace,
        ctx.guard.clone(),
    )
}
