//! Reconcile and cleanup of one DBU behind its finalizer: validate, one engine pass, record.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::Instrument;

use super::cluster::edges_for;
use super::context::{Context, Error, FINALIZER};
use super::status::{publish, write_status};
use crate::api::DovecotBackendUpgrade;
use crate::{conditions, engine, machine, settings};

async fn apply(dbu: Arc<DovecotBackendUpgrade>, ctx: &Context) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = dbu.metadata.generation;
    let mut status = dbu.status.clone().unwrap_or_default();
    let s = match settings::validate(&dbu.spec).and_then(|s| settings::admit(s, &ctx.policy)) {
        Ok(s) => settings::with_annotations(s, dbu.annotations()),
        Err(e) => {
            // permanent: nothing runs until the spec changes
            let notes =
                machine::invalid_spec(&mut status, &e.to_string(), generation, Timestamp::now());
            let (write, _) = conditions::publish_plan(dbu.status.as_ref(), &status);
            write_status(&api, &dbu, &status, write).await?;
            publish(ctx, &dbu, &notes).await;
            return Ok(Action::await_change());
        }
    };
    let (cluster, exec) = edges_for(&ctx.client, &ctx.stores, &dbu, &ns, &ctx.lock_namespace);
    let out =
        engine::reconcile_once(&s, status, generation, &exec, &cluster, &Timestamp::now).await?;
    let (write, stall) = conditions::publish_plan(dbu.status.as_ref(), &out.status);
    write_status(&api, &dbu, &out.status, write).await?;
    ctx.metrics.record(
        &format!("{ns}/{}", dbu.name_any()),
        &out,
        Timestamp::now().as_millisecond() as f64 / 1000.0,
    );
    let mut notes = out.notes;
    notes.extend(stall);
    publish(ctx, &dbu, &notes).await;
    Ok(match out.requeue {
        Some(d) if d.is_zero() => Action::requeue(Duration::from_millis(200)),
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

async fn cleanup(dbu: Arc<DovecotBackendUpgrade>, ctx: &Context) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let status = dbu.status.clone().unwrap_or_default();
    if let Ok(s) = settings::validate(&dbu.spec) {
        let (cluster, exec) = edges_for(&ctx.client, &ctx.stores, &dbu, &ns, &ctx.lock_namespace);
        let notes = engine::cleanup(&s, &status, &exec, &cluster, &Timestamp::now).await?;
        publish(ctx, &dbu, &notes).await;
    }
    ctx.metrics.forget(&format!("{ns}/{}", dbu.name_any()));
    Ok(Action::await_change())
}

/// Reconciles one DBU behind the finalizer that guarantees ring cleanup on delete.
pub async fn reconcile(
    dbu: Arc<DovecotBackendUpgrade>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = dbu.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!("reconcile", dbu = %dbu.name_any(), namespace = %ns);
    finalizer(&api, FINALIZER, dbu, |ev| async {
        match ev {
            Finalizer::Apply(d) => apply(d, &ctx).await,
            Finalizer::Cleanup(d) => cleanup(d, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Transient errors back off; the step machine itself decides about step failures.
pub fn error_policy(dbu: Arc<DovecotBackendUpgrade>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.category());
    tracing::warn!(dbu = %dbu.name_any(), category = err.category(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}
