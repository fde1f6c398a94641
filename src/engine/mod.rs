//! Acts: one reconcile observes, asks the machine, runs the one action it names, and records.
//!
//! Nothing here decides. The same `reconcile_once` runs under the kube controller and in the
//! local lab, so the real-Dovecot tests exercise the exact code that runs in a cluster.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tracing::Instrument;

use dbu_core::api::{DovecotBackendUpgradeStatus, Step};
use dbu_core::machine::{self, Acted, Decision, Missing, Note, Observed, Prepared};
use dbu_core::settings::Settings;

use crate::exec::{ExecRequest, PodExec};

mod cluster;
mod driver;
mod reads;
mod ring;

#[cfg(test)]
mod tests;

pub use cluster::{Clock, Cluster, ClusterError, NetProbes, Probes};
use driver::{StepContext, run_step};
pub use ring::{RING_COMMAND_TIMEOUT, RingPassed, RingWorld, ring_pass};

/// The probes where an action may not probe (an undo, the credentials check): a script that
/// asked would get a failure, never a silent success.
struct NoProbes;

#[async_trait::async_trait]
impl Probes for NoProbes {
    async fn lmtp(
        &self,
        _: &str,
        _: u16,
        _: Duration,
        _: &str,
        _: &str,
    ) -> Result<(), dbu_core::probe::ProbeFailure> {
        Err(no_probe())
    }
    async fn imap(
        &self,
        _: &dbu_core::imap::ImapTarget,
        _: dbu_core::imap::ProbeInput,
    ) -> Result<(), dbu_core::probe::ProbeFailure> {
        Err(no_probe())
    }
}

fn no_probe() -> dbu_core::probe::ProbeFailure {
    dbu_core::probe::ProbeFailure {
        command: "probe".into(),
        reply: "no probe may run here".into(),
        transient: false,
    }
}

/// What a reconcile did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: DovecotBackendUpgradeStatus,
    /// The last decision carried out.
    pub decision: Decision,
    /// The decisions carried out before it in the same pass (`machine::chain_from`).
    pub earlier: Vec<Decision>,
    pub notes: Vec<Note>,
    /// When to look again; None waits for a change.
    pub requeue: Option<Duration>,
    /// A step that succeeded in this reconcile, and how long it took since it started.
    pub finished: Option<(Step, Duration)>,
}

/// Decides, reading the ring and its sync state from the director only when the decision needs
/// them (`machine::missing`); each is read at most once per reconcile.
async fn decide_reading(
    s: &Settings,
    prepared: &Prepared,
    obs: &mut Observed,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    now: Timestamp,
) -> Decision {
    let (mut ring_read, mut sync_read) = (false, false);
    loop {
        let decision = machine::decide_prepared(s, prepared, obs, now);
        if obs.ring_lock_cached && !machine::cached_lock_stands(&prepared.status, &decision) {
            obs.ring_lock = Some(read_lock(s, cluster).await);
            obs.ring_lock_cached = false;
            continue;
        }
        let missing = machine::missing(&decision, obs);
        if missing == Some(Missing::ProbeCredentials) {
            // the check reads keys only, never the world: no copy of it
            let nothing = Observed::default();
            let at = move || now;
            let cx = StepContext {
                s,
                exec,
                cluster,
                // the credentials check reads keys, it probes nothing
                probes: &NoProbes,
                obs: &nothing,
                clock: &at,
            };
            obs.probe_credentials = Some(driver::probe_credentials(&cx).await);
            continue;
        }
        if missing == Some(Missing::RingLock) {
            // the watch's copy first, for a wait that may stand on it (checked above)
            obs.ring_lock = Some(match cluster.cached_ring_lock(s).await {
                Some(lock) => {
                    obs.ring_lock_cached = true;
                    Ok(lock)
                }
                None => read_lock(s, cluster).await,
            });
            continue;
        }
        let Some(dir) = obs.director.clone() else {
            return decision;
        };
        match missing {
            Some(Missing::Ring) if !ring_read => {
                ring_read = true;
                obs.ring = reads::read_ring(s, exec, &dir).await;
                if machine::lock_with_ring(&prepared.status, obs) {
                    obs.ring_lock = Some(read_lock(s, cluster).await);
                }
            }
            Some(Missing::RingSync) if !sync_read => {
                sync_read = true;
                // every Ready director must say so, not only the one commands go to
                obs.unsynced.clear();
                obs.ring_members.clear();
                for name in director_names(obs, &dir) {
                    let (synced, members) = reads::read_ring_status(s, exec, &name).await;
                    if !synced {
                        obs.unsynced.push(name.clone());
                    }
                    obs.ring_members.push((name, members));
                }
                obs.ring_synced = Some(obs.unsynced.is_empty());
            }
            Some(Missing::OtherRings) => {
                let mut rings = Vec::new();
                for name in director_names(obs, &dir).into_iter().filter(|n| *n != dir) {
                    let ring = reads::read_ring(s, exec, &name).await;
                    rings.push((name, ring));
                }
                obs.other_rings = Some(rings);
            }
            _ => return decision,
        }
    }
}

/// The ring's record read from the source.
async fn read_lock(s: &Settings, cluster: &dyn Cluster) -> Result<machine::RingLock, String> {
    cluster.read_ring_lock(s).await.map_err(|e| e.to_string())
}

/// Every Ready director by name (the chosen one when the world lists none).
fn director_names(obs: &Observed, dir: &str) -> Vec<String> {
    if obs.directors.is_empty() {
        vec![dir.to_string()]
    } else {
        obs.directors.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Runs the one action a decision names.
async fn act(
    cx: &StepContext<'_>,
    status: &DovecotBackendUpgradeStatus,
    decision: &Decision,
) -> Acted {
    let record = |pod: &str| status.backends.iter().find(|r| r.pod == pod);
    match decision {
        Decision::Reassert {
            commands, director, ..
        } => Acted::Reasserted(reassert(cx, director.as_deref(), commands).await),
        Decision::Claim { pods } => Acted::Claimed(claim(cx, status, pods).await),
        // taking left-out backends over writes status only: their holders stay in the ring's
        // record, left out, until this DBU's claim registers them (the first pass after the
        // status has them); a crash or a conflict in between loses nothing
        Decision::Adopt { .. } => Acted::Adopted(Ok(())),
        Decision::Undo { pod, action } => match record(pod) {
            Some(rec) => Acted::Undone(driver::undo(cx, rec, action.clone()).await),
            None => Acted::Nothing,
        },
        Decision::Run {
            pod,
            step,
            ceiling_users,
        } => match record(pod) {
            Some(rec) => {
                let span = tracing::info_span!("step", backend = %pod, step = %step);
                Acted::Ran(run_step(cx, rec, *ceiling_users).instrument(span).await)
            }
            None => Acted::Nothing,
        },
        Decision::Begin(rec) => Acted::Checked(check_begin(cx, rec).await),
        Decision::Stall { .. }
        | Decision::Wait { .. }
        | Decision::Complete
        | Decision::Aborted { .. }
        | Decision::DryRun(_) => Acted::Nothing,
    }
}

/// Begin writes only status, but what it starts drains a backend: the candidate is checked
/// against the API server, not the caches (they lag after an outage).
async fn check_begin(
    cx: &StepContext<'_>,
    rec: &dbu_core::api::BackendStatus,
) -> Result<(), String> {
    let cached = cx
        .obs
        .sts
        .as_ref()
        .and_then(|x| x.update_revision.as_deref())
        .unwrap_or("");
    let fresh = cx
        .cluster
        .fresh_update_revision(cx.s)
        .await
        .map_err(|e| format!("read the StatefulSet: {e}"))?;
    let pod = cx
        .cluster
        .fresh_pod(cx.s, &rec.pod)
        .await
        .map_err(|e| format!("read the pod: {e}"))?;
    machine::judge::begin_still(rec, cached, fresh.as_deref(), pod.as_ref())
}

/// Makes the ring's lock hold exactly `pods` for this DBU, by compare-and-swap on the version read
/// in this reconcile; the other DBUs' holders are kept as read.
async fn claim(
    cx: &StepContext<'_>,
    status: &DovecotBackendUpgradeStatus,
    pods: &[String],
) -> Result<(), String> {
    let Some(Ok(lock)) = &cx.obs.ring_lock else {
        return Err("the ring's lock was not read".into());
    };
    let me = &cx.obs.me;
    let rec = |p: &String| status.backends.iter().find(|r| &r.pod == p);
    let mine: Vec<machine::RingHolder> = pods
        .iter()
        .map(|p| machine::RingHolder {
            dbu: me.clone(),
            pod: p.clone(),
            ip: rec(p)
                .map(|r| r.new_ip.clone().unwrap_or_else(|| r.ip.clone()))
                .unwrap_or_default(),
            max_unavailable: u32::try_from(cx.s.max_unavailable).unwrap_or(u32::MAX),
            left_out: None,
            reason: rec(p).and_then(|r| r.out_reason()),
        })
        .collect();
    // a deleted DBU's left-out backends are never "mine", even under the same name
    let is_mine = |h: &machine::RingHolder| &h.dbu == me && h.left_out.is_none();
    let had: Vec<&machine::RingHolder> = lock.holders.iter().filter(|h| is_mine(h)).collect();
    // a left-out holder of this StatefulSet that this DBU took over becomes its own now
    let taken_over = |h: &machine::RingHolder| {
        h.left_out
            .as_ref()
            .is_some_and(|l| l.stateful_set == cx.s.stateful_set && pods.contains(&h.pod))
    };
    // ... and one whose pod is gone for good (scaled away) is let go: nothing will finish it;
    // so is one whose adopted record has ended (its pod serves)
    let gone = machine::lock::released_left_out(cx.s, status, cx.obs, lock);
    for h in &gone {
        if cx.obs.gone_for_good(&cx.s.stateful_set, &h.pod) {
            tracing::warn!(
                pod = %h.pod,
                ip = %h.ip,
                "a backend left out of the ring by a deleted DBU is gone for good (scaled away): the ring's record lets it go; its entry stays as it is (doveadm director remove {})",
                h.ip
            );
        } else {
            tracing::info!(
                pod = %h.pod,
                ip = %h.ip,
                "a backend left out of the ring by a deleted DBU and adopted here serves again without this DBU: the ring's record lets it go"
            );
        }
    }
    let dropped = |h: &machine::RingHolder| taken_over(h) || gone.contains(&h);
    let replaces = lock.holders.iter().any(dropped);
    if !replaces && had.len() == mine.len() && mine.iter().all(|m| had.contains(&m)) {
        return Ok(());
    }
    let mut holders: Vec<machine::RingHolder> = lock
        .holders
        .iter()
        .filter(|h| !is_mine(h) && !dropped(h))
        .cloned()
        .collect();
    holders.extend(mine);
    cx.cluster
        .write_ring_lock(cx.s, lock.version.as_deref(), &holders)
        .await
        .map_err(|e| e.to_string())
}

/// Re-applies ring state on the director, stopping at the first command that fails.
async fn reassert(
    cx: &StepContext<'_>,
    on: Option<&str>,
    commands: &[Vec<String>],
) -> Result<(), String> {
    let director = on.or(cx.obs.director.as_deref()).unwrap_or_default();
    for argv in commands {
        let req = ExecRequest {
            pod: director,
            container: cx.s.director_container.as_deref(),
            argv,
            timeout: cx.s.command_timeout,
        };
        match cx.exec.exec(req).await {
            Ok(o) if o.exit_code == 0 => {}
            Ok(o) => {
                return Err(format!(
                    "{} exited {}: {}",
                    argv.join(" "),
                    o.exit_code,
                    dbu_core::text::bounded(o.stderr.trim(), 300)
                ));
            }
            Err(e) => return Err(format!("{}: {e}", argv.join(" "))),
        }
    }
    Ok(())
}

/// One reconcile: observe, decide, act once, record. `clock` is read only here, at the edge.
///
/// The world comes from the watch caches; a decision that a cache which has not caught up could
/// cause (a new target revision, a stall from what the caches show, a first completion) is taken
/// again from the API server before it stands (`machine::unconfirmed`), from the status as read.
pub async fn reconcile_once(
    s: &Settings,
    read: DovecotBackendUpgradeStatus,
    generation: Option<i64>,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    probes: &dyn Probes,
    clock: Clock<'_>,
) -> Result<Outcome, ClusterError> {
    let mut obs = cluster.observe(s).await?;
    if machine::target_unconfirmed(&read, &obs) {
        obs = fresh_world(s, cluster, obs).await?;
    }
    let (prepared, decision) = loop {
        let now = clock();
        let prepared = machine::prepare(s, &read, &obs, now);
        let decision = decide_reading(s, &prepared, &mut obs, exec, cluster, now).await;
        if machine::unconfirmed(&decision, &obs, &read) {
            tracing::info!(
                ?decision,
                "decided from the watch caches; taken again from the API server before it stands"
            );
            obs = fresh_world(s, cluster, obs).await?;
            continue;
        }
        break (prepared, decision);
    };
    let mut prepared = prepared;
    let mut decision = machine::fold_ring_read(&mut prepared, &obs, decision);
    let mut earlier = Vec::new();
    let mut notes = Vec::new();
    let mut finished = None;
    // a Begin, a claim, a release or a backend's end takes what follows it into the same pass,
    // and so into one status write (`machine::chain_from`)
    for round in 1..=machine::CHAIN_ROUNDS {
        let cx = StepContext {
            s,
            exec,
            cluster,
            probes,
            obs: &obs,
            clock,
        };
        let acted = act(&cx, &prepared.status, &decision).await;
        let chains = round < machine::CHAIN_ROUNDS && machine::chain_from(&decision, &acted);
        let acted_at = clock();
        let recorded =
            machine::record_stage(s, prepared, &decision, acted, &obs, generation, acted_at);
        notes.extend(recorded.notes);
        finished = finished.or(recorded.finished);
        let (status, requeue) = (recorded.status, recorded.requeue);
        if !chains {
            return Ok(Outcome {
                status,
                decision,
                earlier,
                notes,
                requeue,
                finished,
            });
        }
        if matches!(decision, Decision::Claim { .. }) {
            // written: the next decision reads the ring's record again
            obs.ring_lock = None;
            obs.ring_lock_cached = false;
        }
        let now = clock();
        let mut next_prepared = machine::prepare(s, &status, &obs, now);
        let mut next = decide_reading(s, &next_prepared, &mut obs, exec, cluster, now).await;
        if machine::chain_into(&decision, &next) && machine::unconfirmed(&next, &obs, &status) {
            // taken again from the API server here, as the first decision is, not in a pass
            // of its own: a release and the completion it allows are one status write
            obs = fresh_world(s, cluster, obs).await?;
            let now = clock();
            next_prepared = machine::prepare(s, &status, &obs, now);
            next = decide_reading(s, &next_prepared, &mut obs, exec, cluster, now).await;
        }
        if !machine::chain_into(&decision, &next) || machine::unconfirmed(&next, &obs, &status) {
            // the next reconcile takes it, at once
            return Ok(Outcome {
                status,
                decision,
                earlier,
                notes,
                requeue: Some(Duration::ZERO),
                finished,
            });
        }
        earlier.push(decision);
        decision = machine::fold_ring_read(&mut next_prepared, &obs, next);
        prepared = next_prepared;
    }
    unreachable!("the last round never chains")
}

impl Outcome {
    /// Every decision this reconcile carried out, in order (`earlier`, then `decision`).
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.earlier.iter().chain([&self.decision])
    }
}

/// The StatefulSet, pods and DBUs read from the API server; what this reconcile read from the
/// directors (exec, never cached) is kept while the fresh world names the same directors.
async fn fresh_world(
    s: &Settings,
    cluster: &dyn Cluster,
    cached: Observed,
) -> Result<Observed, ClusterError> {
    let mut fresh = cluster.observe_fresh(s).await?;
    fresh.fresh = true;
    if fresh.director == cached.director && fresh.directors == cached.directors {
        fresh.ring = cached.ring;
        fresh.ring_synced = cached.ring_synced;
        fresh.unsynced = cached.unsynced;
        fresh.other_rings = cached.other_rings;
    }
    // a copy from the watch goes with the rest of the caches
    if !cached.ring_lock_cached {
        fresh.ring_lock = cached.ring_lock;
    }
    fresh.probe_credentials = cached.probe_credentials;
    Ok(fresh)
}

/// What deleting the DBU does: restore backends that still run, leave stopped ones out, loudly,
/// and hand those left out to the ring's lock so that the next DBU of the StatefulSet finds
/// them. `Deletion::pending` says why the finalizer must stay (retry later). `force` undoes
/// nothing.
pub async fn cleanup(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    clock: Clock<'_>,
    force: bool,
) -> Result<machine::Deletion, ClusterError> {
    let mut obs = cluster.observe(s).await?;
    if obs.sts.is_none() {
        // "gone" stands only on the API server's word, never a cache that has not caught up
        obs = cluster.observe_fresh(s).await?;
    }
    let in_flight = status.backends.iter().filter(|r| machine::active(r));
    let mut done = machine::Deletion::default();
    // the ring's record as read for the undo, if it was (`never_held`), written back below
    // under its version
    let mut lock_read = None;
    if force {
        // nothing is undone
        done = machine::Deletion::forced(status);
    } else if obs.sts.is_none() {
        // the StatefulSet and its pods are gone: nothing to put back, nobody to hand over to
        for rec in in_flight {
            done.gone(rec, &s.stateful_set);
        }
    } else if obs.director.is_none() {
        for rec in in_flight {
            done.no_director(rec);
        }
    } else {
        // what the ring shows now: a human's change since Begin is kept (a down stays down),
        // also in the records of backends left out for the next DBU (found by the model)
        if let Some(dir) = obs.director.clone() {
            obs.ring = reads::read_ring(s, exec, &dir).await;
        }
        if obs.ring.is_none() {
            // a human's state decides what goes back and what a left-out record keeps: never
            // guessed (found by the model: a human's down was lost when this read failed)
            for rec in in_flight {
                done.pending.push(format!(
                    "{}: the director ring could not be read; it is looked at again",
                    rec.pod
                ));
            }
            return Ok(done);
        }
        let mut seen = status.clone();
        machine::human_downs(&mut seen, &obs);
        done.notes.extend(machine::human_counts(&mut seen, &obs));
        let cx = StepContext {
            s,
            exec,
            cluster,
            // an undo runs ring commands only, never a probe
            probes: &NoProbes,
            obs: &obs,
            clock,
        };
        // the ring's record, read for a backend this DBU's status does not say it holds
        let unheld = status
            .backends
            .iter()
            .any(|r| machine::active(r) && !status.ring_held.contains(&r.pod));
        if unheld {
            lock_read = cluster.read_ring_lock(s).await.ok();
        }
        for (before, rec) in in_flight.zip(seen.backends.iter().filter(|r| machine::active(r))) {
            if obs.gone_for_good(&s.stateful_set, &rec.pod) {
                done.scaled_away(rec, &s.stateful_set);
                continue;
            }
            if machine::never_held(status, rec, lock_read.as_ref()) {
                done.undone(rec, machine::Undone::Nothing);
                continue;
            }
            let undone = driver::undo(&cx, rec, machine::cleanup_for(rec)).await;
            done.undone_in(rec, machine::kept_by_hand(before, rec, undone), &obs);
        }
        // a backend back at a new IP is known as that entry's pod only to its record until the
        // ring's pass has recorded it: the slot goes once it has (found by the model: a DBU
        // deleted right after such a backend's Done, its pod moved again, and nothing rejoined it)
        done.pending
            .extend(machine::lock::awaiting(status, &obs).map(machine::lock::awaiting_message));
    }
    if !done.finished() {
        return Ok(done);
    }
    // the left-out backends stay counted as out of the ring, with their records; the rest of
    // this DBU's registrations go (a registration status does not know of is a dead DBU's,
    // which holds nothing)
    if status.ring_held.is_empty() && done.left.is_empty() {
        return Ok(done);
    }
    let read = match lock_read {
        Some(l) => Ok(l),
        None => cluster.read_ring_lock(s).await,
    };
    let lock = match read {
        Ok(l) => l,
        Err(e) => {
            done.pending
                .push(format!("could not read the ring's lock: {e}"));
            return Ok(done);
        }
    };
    let mine = lock
        .holders
        .iter()
        .any(|h| h.dbu == obs.me && h.left_out.is_none());
    if mine || !done.left.is_empty() {
        let max = u32::try_from(s.max_unavailable).unwrap_or(u32::MAX);
        let holders = machine::lock::leave_out(&lock, &obs.me, &s.stateful_set, &done.left, max);
        if let Err(e) = cluster
            .write_ring_lock(s, lock.version.as_deref(), &holders)
            .await
        {
            done.pending.push(format!(
                "could not record the backends left out in the ring's lock: {e}"
            ));
        }
    }
    Ok(done)
}

/// The dry-run decision for a DBU: observes and reads the ring (read-only doveadm commands),
/// then returns `Decision::DryRun` with the plan, or the decision that keeps it from planning,
/// and the world it was planned from (the steps of every backend are planned from it).
pub async fn dry_run_once(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    now: Timestamp,
) -> Result<(Decision, Observed), ClusterError> {
    let mut obs = cluster.observe(s).await?;
    let mut s = s.clone();
    s.dry_run = true;
    // as the status stands: a dry run folds nothing into it
    let as_read = Prepared {
        status: status.clone(),
        notes: Vec::new(),
    };
    let decision = decide_reading(&s, &as_read, &mut obs, exec, cluster, now).await;
    Ok((decision, obs))
}

/// True when the status says a human is needed.
pub fn stalled(status: &DovecotBackendUpgradeStatus) -> bool {
    dbu_core::conditions::stalled(status)
}

/// Reconciles until the rollout completes or stalls (or `limit` passes on `clock`), as the
/// controller would but in one process; `on_outcome` sees every pass. Used by the local demo
/// and the tests.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    s: &Settings,
    mut status: DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    probes: &dyn Probes,
    clock: Clock<'_>,
    limit: Duration,
    mut on_outcome: impl FnMut(&Outcome),
) -> Result<Outcome, ClusterError> {
    let end = dbu_core::time::after(clock(), limit);
    loop {
        let before = status.clone();
        let mut out = reconcile_once(s, status, Some(1), exec, cluster, probes, clock).await?;
        // the Warning the controller publishes when the DBU turns Stalled (or stalls for another
        // reason), so that a lab run shows every stall as a cluster would
        out.notes
            .extend(dbu_core::machine::conditions::publish_plan(Some(&before), &out.status).1);
        on_outcome(&out);
        if out.decision == Decision::Complete || stalled(&out.status) || clock() >= end {
            return Ok(out);
        }
        // like the controller: the requeue, or earlier when a watched object changes
        tokio::select! {
            _ = tokio::time::sleep(out.requeue.unwrap_or(Duration::from_secs(1))) => {}
            _ = cluster.changed() => {}
        }
        status = out.status;
    }
}
