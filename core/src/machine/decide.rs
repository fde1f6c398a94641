//! The next action of a rollout from (settings, status, observed world, now): world checks,
//! ring drift, abort, failures, pause, in-flight steps, then a new backend through its gates.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::cleanup::cleanup_for;
use super::decision::{Decision, active};
use super::dry_run::dry_run;
use super::gates;
use super::lock;
use super::note::failed_stall;
use super::observed::{Observed, PodView, StsView};
use super::start::{begin_next, outdated};
use super::steps;
use crate::api::{
    BackendStatus, DovecotBackendUpgradeStatus, RETRY_ANNOTATION, REVISION_ANNOTATION, Step,
};
use crate::dovecot::{self, RingHost};
use crate::reason::{StallReason, WaitReason};
use crate::settings::Settings;
use crate::time::until;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Ring state the director must show for the host `host` of a record (at its old or its new
/// IP), or nothing when nothing is asserted. Only state that is *more available* than desired
/// is drift: it would send users to a backend that is stopped, unverified or failed.
fn drift_commands(s: &Settings, rec: &BackendStatus, host: &RingHost) -> Vec<Vec<String>> {
    argv_towards(&s.director, steps::held_state(rec), host)
}

/// The commands that take `host` to ring state `want` where it is more available (none when
/// it is there): `update 0`, `down`, and `flush` after a `down`.
pub fn argv_towards(
    director: &dovecot::Doveadm,
    want: steps::RingState,
    host: &RingHost,
) -> Vec<Vec<String>> {
    let Ok(ip) = dovecot::validate_ip(&host.ip) else {
        return Vec::new();
    };
    let (must_be_drained, must_be_down) = (want.drained, want.down);
    let mut cmds = Vec::new();
    if must_be_drained && host.vhosts != 0 {
        cmds.push(director.director_update(ip, 0));
    }
    if must_be_down && host.up {
        cmds.push(director.director_down(ip));
    }
    if must_be_down && !cmds.is_empty() {
        // users may have been mapped to the stopped backend while the director forgot it
        cmds.push(director.director_flush(ip));
    }
    cmds
}

/// The drift of every active record, first one first, at every IP the record knows: after
/// Replace gave the pod a new IP, a director that re-resolves `director_mail_servers` may show
/// the new IP up at its default vhosts while the backend is unverified or failed.
pub fn ring_drift(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    ring: &[RingHost],
    obs: &Observed,
) -> Option<(String, Vec<Vec<String>>)> {
    status
        .backends
        .iter()
        .filter(|r| active(r))
        // under abort (or skip) a backend that goes back is the undo's: re-asserting its drained state
        // would fight the undo (found by the model: an undo whose status write was lost was
        // drained again, with the only other host down by hand: no host served); one whose
        // Dovecot may be stopped only once the ring shows it put back (the undo that follows
        // looks whether Dovecot runs, and leaves it out, failed, if not)
        .filter(|r| {
            let restored = || {
                ring.iter()
                    .any(|h| h.ip == r.ip && h.vhosts == r.original_vhosts && h.vhosts > 0)
            };
            // a skip of a backend in flight up to StopLmtp is the same undo
            let undone = s.abort || (r.step <= Step::StopLmtp && s.skip.contains(&r.pod));
            !(undone
                && !r.failed
                && match cleanup_for(r) {
                    super::decision::Cleanup::Restore => true,
                    super::decision::Cleanup::RestoreIfRunning => restored(),
                    _ => false,
                })
        })
        .find_map(|rec| {
            let cmds: Vec<Vec<String>> = std::iter::once(rec.ip.as_str())
                .chain(rec.new_ip.as_deref())
                // an IP another backend has now is that backend's entry, never this record's
                .filter(|ip| obs.entry_of_other(ip, &rec.pod).is_none())
                // nor is the new IP its pod has left since: the record follows the pod there
                // (found by the model: a rejoin whose pod moved on took out the entry it left,
                // another backend's old one, and that backend came back to it left out)
                .filter(|ip| !steps::left_new_ip(rec, ip, pod_ip(rec, obs)))
                .filter_map(|ip| ring.iter().find(|h| h.ip == ip))
                .flat_map(|host| drift_commands(s, rec, host))
                .collect();
            (!cmds.is_empty()).then(|| (rec.pod.clone(), cmds))
        })
}

/// The IP the record's pod has now, if it has a pod with one.
fn pod_ip<'a>(rec: &BackendStatus, obs: &'a Observed) -> Option<&'a str> {
    obs.pods
        .iter()
        .find(|p| p.name == rec.pod)
        .and_then(|p| p.ip.as_deref())
}

/// A record whose Dovecot was stopped here, in the pod that still runs, while the ring sends
/// users to it (a human's count): every login sent there fails until it is zeroed and the
/// users mapped there meanwhile are flushed to other hosts, so that comes before anything else
/// the pass might do (found by the model: a rejoin's begin and claim came first, and a user's
/// login failed).
fn stopped_but_open(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    ring: &[RingHost],
    obs: &Observed,
) -> Option<(String, Vec<Vec<String>>)> {
    status
        .backends
        .iter()
        .filter(|r| active(r) && obs.runs_stopped_pod(r))
        // the users sent to an entry another backend stands for now go to that backend, not
        // to this stopped pod (found by the model: this pod was recreated at a new IP mid-drain,
        // another took its old entry and was put back there, and this zeroed it)
        .filter(|r| obs.entry_of_other(&r.ip, &r.pod).is_none())
        .find_map(|rec| {
            let host = ring
                .iter()
                .find(|h| h.ip == rec.ip && h.up && h.vhosts > 0)?;
            let ip = dovecot::validate_ip(&host.ip).ok()?;
            let mut cmds = argv_towards(&s.director, steps::RingState::DRAINED, host);
            cmds.push(s.director.director_flush(ip));
            Some((rec.pod.clone(), cmds))
        })
}

/// A backend in flight whose Dovecot still serves, drained by the operator, that a human gave
/// vhosts again while taking every other host out: it is the only host that takes users, and
/// draining it again would leave the ring serving nobody (found by the model). Nothing moves on
/// until another host serves; then the drift is re-asserted and the drain goes on.
fn last_serving(
    status: &DovecotBackendUpgradeStatus,
    ring: &[RingHost],
    obs: &Observed,
) -> Option<Decision> {
    // a host whose pod is not Ready serves nobody
    let serving = |h: &&RingHost| obs.takes_users(h);
    status
        .backends
        .iter()
        // failed ones too: left out, a pod whose Dovecot runs still takes the users a human
        // sends it (found by the model: a recreated pod left out unverified, given vhosts by a
        // human while every other host was out, was zeroed and no host served)
        .filter(|r| active(r))
        // drained, with Dovecot not yet stopped here (StopDovecot: about to be; never while
        // this hold stands); also one sent to Replace, or a rejoin, whose pod came back to an
        // IP where users are sent (found by the model: Replace's drift took the only serving
        // host out)
        // (found by the model: a pod recreated after StopDovecot, given vhosts by a human while
        // every other host was not Ready, was zeroed as the last host serving)
        .filter(|r| {
            let want = steps::held_state(r);
            r.step >= Step::WaitSessions && !obs.runs_stopped_pod(r) && (want.drained || want.down)
        })
        .find_map(|rec| {
            let mine = |ip: &str| ip == rec.ip || rec.new_ip.as_deref() == Some(ip);
            // only where its pod is now: an IP another pod has is that pod's host
            // its own entries first: whether a host serves reads the ring's record of it
            let host = ring
                .iter()
                .filter(|h| mine(&h.ip) && obs.is_at(&rec.pod, &h.ip))
                .find(serving)?;
            // an entry of its record's that another pod holds now is that pod's host (found by
            // the model with seed 1: the pod's old IP, taken by a recreated pod of another
            // StatefulSet that served there, was not counted, and the wait never ended)
            let others = ring
                .iter()
                .filter(serving)
                .any(|h| !mine(&h.ip) || obs.ip_held_by_other(&h.ip, &rec.pod).is_some());
            (!others).then(|| {
                Decision::wait(
                    WaitReason::InsufficientRingCapacity,
                    format!(
                        "{}: given {} vhosts again by hand while every other host is down, at 0 vhosts or without a Ready pod; it is the only host that takes users, so it is drained again only once another host serves",
                        rec.pod, host.vhosts
                    ),
                    Duration::from_secs(30),
                )
            })
        })
}

/// World checks that stall before any exec: run before the ring is even read.
pub fn check_world<'a>(s: &Settings, obs: &'a Observed) -> Result<&'a StsView, Decision> {
    let Some(sts) = &obs.sts else {
        return Err(Decision::Stall {
            reason: StallReason::StatefulSetNotFound,
            message: format!("StatefulSet {:?} does not exist", s.stateful_set),
        });
    };
    if sts.update_strategy != "OnDelete" {
        return Err(Decision::Stall {
            reason: StallReason::UpdateStrategyNotOnDelete,
            message: format!(
                "StatefulSet {:?} uses updateStrategy {}; set it to OnDelete so that only this operator replaces backend pods",
                s.stateful_set, sts.update_strategy
            ),
        });
    }
    if let Some(other) = &obs.owned_by_other {
        return Err(Decision::Stall {
            reason: StallReason::StatefulSetClaimed,
            message: format!(
                "DovecotBackendUpgrade {other:?} already manages StatefulSet {:?}",
                s.stateful_set
            ),
        });
    }
    if !obs.director_overlap.is_empty() {
        return Err(Decision::Stall {
            reason: StallReason::DirectorSelectorMatchesBackends,
            message: format!(
                "the director selector (the DovecotRing's spec.directors) matches backend pods {:?}",
                obs.director_overlap
            ),
        });
    }
    Ok(sts)
}

/// Why the StatefulSet's revision is not yet the one this rollout is for: its controller has
/// not observed its latest template (so `updateRevision` is an older template's), or
/// `spec.revision` names a value its template does not carry yet. None: the target is final.
/// While so, no backend starts and the rollout is not complete; backends in flight finish.
pub fn revision_pending(s: &Settings, sts: &StsView) -> Option<String> {
    if !sts.current {
        return Some(format!(
            "StatefulSet {:?} has a template its controller has not observed yet",
            s.stateful_set
        ));
    }
    let want = s.revision.as_deref()?;
    if sts.template_revision.as_deref() == Some(want) {
        return None;
    }
    Some(format!(
        "spec.revision is {want:?}; waiting for StatefulSet {:?} to carry it in its pod template's {REVISION_ANNOTATION} annotation ({})",
        s.stateful_set,
        match &sts.template_revision {
            Some(r) => format!("it carries {r:?}"),
            None => "it has none".into(),
        }
    ))
}

/// The next action. Order: validity, ring drift, failures, pause, in-flight work, new work.
pub fn decide(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    now: Timestamp,
) -> Decision {
    let sts = match check_world(s, obs) {
        Ok(sts) => sts,
        Err(stall) => return stall,
    };
    let Some(target) = sts.update_revision.as_deref() else {
        return Decision::Wait {
            reason: WaitReason::WaitingForRevision,
            message: "StatefulSet has no status.updateRevision yet".into(),
            requeue: Duration::from_secs(5),
        };
    };
    // registering what is out of the ring and releasing what is back is always safe: before
    // completion, pause and stalls
    if let Some(d) = lock_sync(s, status, obs) {
        return d;
    }
    if let Some(ring) = obs.ring.as_deref()
        && let Some((pod, commands)) = stopped_but_open(s, status, ring, obs)
    {
        return Decision::Reassert {
            pod,
            commands,
            director: None,
        };
    }
    // backends a deleted DBU of this StatefulSet left out: taken over before anything else
    if let Some(Ok(lk)) = &obs.ring_lock
        && !s.dry_run
    {
        let records = lock::adoptable(s, status, lk, obs);
        if !records.is_empty() {
            return Decision::Adopt { records };
        }
    }
    // also when aborted: a rejoin puts back a backend the world took out, as an abort does
    // with those the rollout took out (found by the model: an aborted DBU left its moved pod
    // out of the ring for ever, and every other rollout of the ring waiting for it)
    let mut rejoin_wait = None;
    if !s.dry_run && s.refused.is_none() {
        match rejoin(s, status, obs, target, now) {
            Ok(Some(d)) => return d,
            Ok(None) => {}
            Err(wait) => rejoin_wait = Some(wait),
        }
    }
    let any_active = status.backends.iter().any(active);
    if let Some(problem) = s.refused.as_deref().filter(|_| !any_active) {
        return Decision::stall(StallReason::InvalidSpec, problem);
    }
    let pending = revision_pending(s, sts);
    // a human's pause, abort or dry run still shows as such
    if !(any_active || s.paused || s.abort || s.dry_run)
        && let Some(message) = &pending
    {
        return Decision::wait(
            WaitReason::WaitingForRevision,
            message.clone(),
            Duration::from_secs(5),
        );
    }
    let todo = outdated(s, &obs.pods, target, obs.ring.as_deref());
    // never complete for a revision still pending, paused or not
    if !any_active && pending.is_none() && todo.is_empty() && obs.pods.len() as i32 >= sts.replicas
    {
        // a moved pod that waits for room to rejoin is not back yet
        if let Some(wait) = rejoin_wait {
            return wait;
        }
        // nor is one whose new entry the ring's pass has not yet recorded as its own
        if let Some(rec) = lock::awaiting(status, obs).next() {
            return awaiting_ring_pass(rec, obs);
        }
        if obs.pods.iter().all(|p| p.ready) {
            return Decision::Complete;
        }
        return Decision::Wait {
            reason: WaitReason::WaitingForPods,
            message: "all backends are at the target revision; waiting for them to be Ready".into(),
            requeue: Duration::from_secs(5),
        };
    }
    let Some(director) = &obs.director else {
        return Decision::Wait {
            reason: WaitReason::NoReadyDirector,
            message: "no Ready director pod matches the director selector (the DovecotRing's spec.directors)".into(),
            requeue: Duration::from_secs(10),
        };
    };
    let Some(ring) = &obs.ring else {
        return Decision::Wait {
            reason: WaitReason::RingUnreadable,
            message: format!("could not read director status from {director}"),
            requeue: Duration::from_secs(10),
        };
    };
    // exec goes only into directors: one whose IP is a host of the ring is a backend
    if let Some((name, ip)) = obs.directors.iter().find_map(|(n, ip)| {
        let ip = ip.as_deref()?;
        ring.iter().any(|h| h.ip == ip).then_some((n, ip))
    }) {
        return Decision::stall(
            StallReason::DirectorSelectorMatchesBackends,
            format!(
                "the director selector (the DovecotRing's spec.directors) matches pod {name} ({ip}), which is a host of the director ring, not a director"
            ),
        );
    }
    if let Some(hold) = last_serving(status, ring, obs) {
        return hold;
    }
    if let Some((pod, commands)) = ring_drift(s, status, ring, obs) {
        return Decision::Reassert {
            pod,
            commands,
            director: None,
        };
    }
    // once Replace found a pod at a new IP (Verify), the ring's record is read to see that it
    // holds the pod at that IP (`lock_sync` moves the holder there)
    if obs.ring_lock.is_none()
        && !s.dry_run
        && status.backends.iter().any(|r| {
            active(r)
                && r.step == Step::Verify
                && lock::holds(status, &r.pod)
                && r.new_ip.as_deref().is_some_and(|ip| ip != r.ip)
        })
        && let Err(wait) = lock::read(obs)
    {
        return wait;
    }
    if s.dry_run {
        return Decision::DryRun(Box::new(dry_run(s, status, obs, ring, target, now)));
    }
    if s.abort {
        return abort(status);
    }
    // a refused spec and a pause hold the same way: no new backend and no new disruption; but a
    // backend whose Dovecot is stopped (or stopping) is taken down and flushed, or the users
    // still mapped to it fail to log in for as long as the hold lasts
    if s.refused.is_some() || s.paused {
        for rec in status.backends.iter().filter(|r| protects_users(r, obs)) {
            if let Ok(d) = in_flight(s, status, rec, obs, ring, now) {
                return d;
            }
        }
    }
    if let Some(problem) = &s.refused {
        return Decision::stall(StallReason::InvalidSpec, problem);
    }
    if let Some(f) = status.backends.iter().find(|r| r.failed) {
        return while_failed(s, status, f, obs, ring, now);
    }
    if s.paused {
        return Decision::Wait {
            reason: WaitReason::Paused,
            message: "spec.paused is true; no step starts until it is false".into(),
            requeue: Duration::from_secs(60),
        };
    }
    // spec.skip naming a backend in flight: back into the ring while its Dovecot still runs
    // (a later one finishes: it can only come back verified)
    if let Some(rec) = status
        .backends
        .iter()
        .find(|r| active(r) && !r.failed && r.step <= Step::StopLmtp && s.skip.contains(&r.pod))
    {
        return Decision::Undo {
            pod: rec.pod.clone(),
            action: cleanup_for(rec),
        };
    }
    // in-flight backends first, in record order; those out already before one still to be
    // taken out, whose wait for a slot would hold them up (found by the model: a rejoin begun
    // beside a drain that waited for the slot the rejoin held; neither moved)
    let mut soonest: Option<steps::Held> = None;
    let (out, to_drain): (Vec<_>, Vec<_>) = status
        .backends
        .iter()
        .filter(|r| active(r))
        .partition(|r| r.step != Step::Drain);
    for rec in out.into_iter().chain(to_drain) {
        match in_flight(s, status, rec, obs, ring, now) {
            Ok(d) => return d,
            Err(held) => {
                if soonest.as_ref().is_none_or(|s| held.requeue < s.requeue) {
                    soonest = Some(held);
                }
            }
        }
    }
    // nothing new begins while a slot waits for the ring's pass: a new record of that pod would
    // take the slot as its own without the room a claim weighs (found by the model: two DBUs'
    // rejoins of hosts that served nobody each kept a slot, and each drained its pod again)
    if let Some(rec) = lock::awaiting(status, obs).next() {
        return awaiting_ring_pass(rec, obs);
    }
    let in_flight_n = status.backends.iter().filter(|r| active(r)).count();
    if in_flight_n < s.max_unavailable
        && pending.is_none()
        && let Some(d) = begin_next(s, status, obs, &todo, ring, target, now)
    {
        return d;
    }
    match soonest {
        Some(held) => held.decision(),
        None => Decision::Wait {
            reason: WaitReason::WaitingForBackends,
            message: "no outdated backend can start yet".into(),
            requeue: Duration::from_secs(10),
        },
    }
}

/// Membership follows the pods, also outside rollouts: a backend pod that came back at a new
/// IP (deleted by hand, evicted, its node lost) while the ring still has the IP it was at: by
/// its last record here, or, for a pod never rolled here, by the ring's own record of which pod
/// each host stood for (`Observed::ring_former`). Its old entry sends users nowhere and the new
/// pod is unverified, so it begins at Verify with both IPs: its ring state (out, down, flushed)
/// is asserted on both at once, then Verify, then RingRestore puts the new IP in at the old
/// host's count and removes the old entry (kept when another pod has its IP now: that entry is
/// that pod's), then the soak. One that fails stays out, stalled with the reason, like a
/// rollout's. Cheap when nothing moved: the ring is read only when a pod's IP differs from its
/// record's or the ring's.
///
/// Ok(Some): what to do (begin a rejoin, or read or drop first); Ok(None): nothing moved;
/// Err: the first moved pod that waits for room to be taken out.
fn rejoin(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    target: &str,
    now: Timestamp,
) -> Result<Option<Decision>, Decision> {
    // one this DBU was about to drain moved before anything was done to it (no slot held,
    // nothing run): its record goes, and it rejoins below like any pod that moved (found by
    // the model: the record waited for a slot while the host it would drain served nobody)
    if let Some(rec) = status.backends.iter().find(|r| {
        active(r)
            && r.step == Step::Drain
            && !r.failed
            && !lock::holds(status, &r.pod)
            && obs.pods.iter().any(|p| {
                p.name == r.pod
                    && p.ready
                    && !p.terminating
                    && p.ip.as_deref().is_some_and(|ip| ip != r.ip)
            })
    }) {
        // never drained only if the ring's record has never held it (a claim comes before
        // the drain; a status write lost after it, or a take-over of a left-out backend, keeps
        // the holder): read fresh; and the undo of a Drain record looks at the ring first
        let lk = match lock::read(obs) {
            Ok(lk) => lk,
            Err(wait) => return Ok(Some(wait)),
        };
        if !lk.holders.iter().any(|h| h.pod == rec.pod) {
            return Ok(Some(match obs.ring {
                None => Decision::wait(
                    WaitReason::RingUnreadable,
                    format!(
                        "{} came back at a new IP before it was drained: reading the director ring",
                        rec.pod
                    ),
                    Duration::from_secs(10),
                ),
                Some(_) => Decision::Undo {
                    pod: rec.pod.clone(),
                    action: super::decision::Cleanup::Nothing,
                },
            }));
        }
    }
    // (the pod, its last record if any, its IP now, the IP the ring had it at, and the ring's
    // record of its state there when no record here says it)
    type Moved<'a> = (
        &'a PodView,
        Option<&'a BackendStatus>,
        &'a str,
        &'a str,
        Option<&'a crate::api::StoodFor>,
    );
    // the ring's record of what each host stood for, by pod, in its order: one lookup per pod,
    // not a scan of every host per pod (a pass over a ring of 100 outdated backends spent most
    // of its time here; benches/scale.rs)
    let mut stood_for: std::collections::HashMap<&str, Vec<&crate::api::StoodFor>> =
        std::collections::HashMap::new();
    for f in &obs.ring_former {
        stood_for.entry(f.pod.as_str()).or_default().push(f);
    }
    // this DBU's records by pod, in one pass over them: whether one is in flight, and the
    // last one that finished (a scan of every record per pod made a pass O(N^2))
    let mut records: std::collections::HashMap<&str, (bool, Option<&BackendStatus>)> =
        std::collections::HashMap::new();
    for r in &status.backends {
        let e = records.entry(r.pod.as_str()).or_default();
        e.0 |= active(r);
        if r.step == Step::Done && !r.removed {
            e.1 = Some(r);
        }
    }
    let moved: Vec<Moved<'_>> = obs
        .pods
        .iter()
        .filter(|p| p.ready && !p.terminating)
        .filter(|p| !records.get(p.name.as_str()).is_some_and(|e| e.0))
        .filter_map(|p| {
            let ip = p.ip.as_deref()?;
            let rec = records.get(p.name.as_str()).and_then(|e| e.1);
            // at the IP its record finished at: not moved, whatever its revision (found by
            // the model: outdated by a new template before the ring's pass had seen it back,
            // it rejoined again from the entry it had left, and put back up over a human's
            // down)
            if rec.is_some_and(|r| r.new_ip.as_deref().unwrap_or(&r.ip) == ip) {
                return None;
            }
            match rec {
                // at the revision its record finished with: a cache showing the pod from
                // before its Replace (old revision, old IP) is a lag, not a move
                Some(r) if p.revision.as_deref() == Some(target) => {
                    let last = r.new_ip.as_deref().unwrap_or(&r.ip);
                    (last != ip).then_some((p, Some(r), ip, last, None))
                }
                // at any revision: one still outdated rejoins first and is rolled after
                // (of several entries it left, the one whose count is its own: one it only
                // landed on holds another pod's; then the one it served with: one it only
                // passed through was out; found by the model)
                _ => {
                    let left = || {
                        stood_for
                            .get(p.name.as_str())
                            .into_iter()
                            .flatten()
                            .copied()
                            .filter(|f| f.ip != ip)
                    };
                    let own = || left().filter(|f| f.counts_for(&p.name));
                    own()
                        .find(|f| f.vhosts > 0)
                        .or_else(|| own().next())
                        .or_else(|| left().find(|f| f.vhosts > 0))
                        .or_else(|| left().next())
                        .map(|f| (p, None, ip, f.ip.as_str(), Some(f)))
                }
            }
        })
        .collect();
    if moved.is_empty() {
        return Ok(None);
    }
    let Some(ring) = obs.ring.as_deref() else {
        // read it (`missing`), then decide again
        return Ok(Some(Decision::wait(
            WaitReason::RingUnreadable,
            format!(
                "{} came back at a new IP: reading the director ring",
                moved[0].0.name
            ),
            Duration::from_secs(10),
        )));
    };
    let mut no_room = None;
    for (pod, rec, ip, last, former) in moved {
        // moved again before the ring's pass recorded the entry its last record put it back
        // at (its slot is kept for that pass, `lock::awaiting`): the rejoin's claim names the
        // new IP, and the entry would then be known as nobody's, counted as serving (found by
        // the model: another DBU drained the only host that served). The pass records it first.
        if let Some(r) = rec.and_then(|r| lock::awaiting(status, obs).find(|a| a.pod == r.pod)) {
            return Ok(Some(awaiting_ring_pass(r, obs)));
        }
        let Some(old) = ring.iter().find(|h| h.ip == last) else {
            continue;
        };
        // back at an IP the ring has for another pod that moved, and users are sent there: the
        // pod serves them already, and taking it out to verify it is a backend out like a
        // drain: it waits for the ring's slot and its capacity (found by the model: a rejoin
        // took its serving IP out while another backend was out), and serves meanwhile; also
        // one whose entry a human took down with its vhosts kept (`steps::weighed_at`)
        if steps::weighed_at(&pod.name, ip, ring, obs) {
            let lk = match lock::read(obs) {
                Ok(lk) => lk,
                Err(wait) => return Ok(Some(wait)),
            };
            if let Some(reason) = room_to_take_out(s, status, obs, ring, lk, &pod.name, ip) {
                no_room.get_or_insert_with(|| {
                    Decision::wait(
                        reason,
                        format!(
                            "{} came back at {ip}, an entry users are sent to or a human took down with its vhosts kept, and is verified there once it may be taken out (a slot of the ring, and enough other hosts serving)",
                            pod.name
                        ),
                        Duration::from_secs(30),
                    )
                });
                continue;
            }
        }
        // another pod has the old IP now: its count is that pod's, the record's is this one's
        let reused = obs.ip_held_by_other(last, &pod.name).is_some();
        // ... and with no record here, the ring's record of its state there, as when the pod
        // left it, where the entry was changed since by the operator: for the pod that has the
        // IP now, or taken out (0 vhosts, down) by a rejoin of this pod that was dropped before
        // it put the pod back (found by the model); a human's change to it is kept. At 0
        // vhosts it is out whether or not it is down yet (found by the model: a rejoin's
        // re-assert cut short after its `update 0`, the rejoin then dropped for want of room,
        // and the next rejoin took the 0 for the pod's count and put it back at 0)
        let taken_out = old.vhosts == 0;
        // or put back at another pod's count since: that pod's rejoin holds it in the ring's
        // record, or the ring's pass saw it do so (found by the model: the count another pod's
        // rejoin put back at this pod's old entry was taken for a human's)
        let theirs = obs.others_state_at(last, &pod.name);
        let kept = former.filter(|_| reused || taken_out || theirs);
        let original = match (rec, kept) {
            (Some(r), _) if reused || old.vhosts == 0 => r.original_vhosts,
            (None, Some(f)) => f.vhosts,
            _ => old.vhosts,
        };
        let up = match (rec, kept) {
            (Some(r), _) if reused => r.restores_up(),
            (Some(r), _) => old.up || (old.vhosts == 0 && r.restores_up()),
            (None, Some(f)) => f.up,
            (None, None) => old.up,
        };
        let mut back =
            BackendStatus::begin(&pod.name, last, pod.revision.clone(), original, Time(now));
        back.step = Step::Verify;
        back.new_ip = Some(ip.to_string());
        // bound to the pod seen at the new IP, as Replace binds the pod it found: Verify,
        // RingRestore and the soak act on that pod only, and one recreated under the name
        // meanwhile goes back to Replace and is verified itself (found by the model)
        back.new_pod_uid = pod.uid.clone();
        back.original_up = Some(up);
        back.rejoin = true;
        back.message = Some(format!(
            "came back at {ip} (was {last}): verified before it rejoins the ring"
        ));
        return Ok(Some(Decision::Begin(Box::new(back))));
    }
    no_room.map_or(Ok(None), Err)
}

/// Whether a record's step protects users rather than disrupts them, so that it runs while the
/// rollout is paused: RingRemove (its Dovecot is stopped: `down` and `flush` move the users
/// still mapped there), and StopDovecot once the pod is no longer Ready (its Dovecot is
/// already stopping: finishing the stop leads to RingRemove).
fn protects_users(rec: &BackendStatus, obs: &Observed) -> bool {
    active(rec)
        && !rec.failed
        && match rec.step {
            Step::RingRemove => true,
            Step::StopDovecot => obs
                .pods
                .iter()
                .find(|p| p.name == rec.pod)
                .is_some_and(|p| !p.ready),
            _ => false,
        }
}

/// A record's next move, or how long until it has one.
fn in_flight(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    rec: &BackendStatus,
    obs: &Observed,
    ring: &[RingHost],
    now: Timestamp,
) -> Result<Decision, steps::Held> {
    let run = |ceiling_users| {
        Ok(Decision::Run {
            pod: rec.pod.clone(),
            step: rec.step,
            ceiling_users,
        })
    };
    if let Some(at) = &rec.retry_after
        && at.0 > now
    {
        let wait = until(at.0, now);
        return Err(steps::Held::step(
            wait,
            format!("{}: retrying {} after a transient error", rec.pod, rec.step),
        ));
    }
    let g = steps::GateInput {
        s,
        status,
        rec,
        obs,
        ring,
        now,
    };
    if let Some(held) = steps::moved_hold(&g) {
        return held;
    }
    match steps::gate(&g) {
        Some(gated) => gated,
        None => run(None),
    }
}

/// A failed backend halts the rollout, but does not freeze the others in flight (with
/// maxUnavailable > 1): one already stopped goes on to Verify and back into the ring (Verify
/// guards it as any other); one still running is put back now. Stalled names the failed one
/// meanwhile (`settled`), and nothing new starts.
fn while_failed(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    failed: &BackendStatus,
    obs: &Observed,
    ring: &[RingHost],
    now: Timestamp,
) -> Decision {
    let others = || status.backends.iter().filter(|r| active(r) && !r.failed);
    // users first: a backend still running goes back before another one is finished
    if let Some(rec) = others().find(|r| r.step <= Step::StopLmtp) {
        return Decision::Undo {
            pod: rec.pod.clone(),
            action: cleanup_for(rec),
        };
    }
    let mut soonest: Option<steps::Held> = None;
    for rec in others() {
        match in_flight(s, status, rec, obs, ring, now) {
            Ok(d) => return d,
            Err(held) if soonest.as_ref().is_none_or(|s| held.requeue < s.requeue) => {
                soonest = Some(held);
            }
            Err(_) => {}
        }
    }
    match soonest {
        Some(held) => held.decision(),
        None => failed_stall(failed),
    }
}

/// Keeps the ring's lock true to what is out: registers a backend already past Drain that is not
/// registered (it is out of the ring whatever the lock says; e.g. records from before the lock)
/// and releases registered backends that are back, also those the record holds for this DBU
/// without an active record in its status (a claim whose status write was lost; found by the
/// model: the slot stayed taken for ever after the backend was skipped), and left-out holders
/// of its StatefulSet whose pods are gone for good. None when the lock is as status says.
fn lock_sync(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
) -> Option<Decision> {
    let unregistered = || {
        status
            .backends
            .iter()
            .filter(|r| active(r) && r.step != Step::Drain && !lock::holds(status, &r.pod))
    };
    if let Some(d) = rejoin_room(s, status, obs) {
        return Some(d);
    }
    let out_unregistered: Vec<String> = unregistered().map(|r| r.pod.clone()).collect();
    let stray = match &obs.ring_lock {
        Some(Ok(lk)) => {
            lk.holders.iter().any(|h| {
                h.dbu == obs.me
                    && h.left_out.is_none()
                    && !status
                        .backends
                        .iter()
                        .any(|r| r.pod == h.pod && lock::keeps(r, obs))
            }) || !lock::released_left_out(s, status, obs, lk).is_empty()
                // a holder at the IP its record had when claimed, not the one Replace found:
                // the ring's pass learns which pod a host added since stands for from the
                // record of who is out (found by the model: a pod moved right after RingRestore
                // and its new entry was never known as its)
                || lk.holders.iter().any(|h| {
                    h.dbu == obs.me
                        && h.left_out.is_none()
                        && status.backends.iter().any(|r| {
                            r.pod == h.pod
                                && lock::keeps(r, obs)
                                && r.new_ip.as_deref().is_some_and(|ip| ip != h.ip)
                        })
                })
        }
        _ => false,
    };
    if out_unregistered.is_empty() && !lock::release_due(status, obs) && !stray {
        return None;
    }
    if let Err(wait) = lock::read(obs) {
        return Some(wait);
    }
    let mut pods = lock::kept(status, obs);
    pods.extend(out_unregistered);
    Some(Decision::Claim { pods })
}

/// The wait of a DBU whose last backend is back at a new IP that the ring's pass has not yet
/// recorded as the pod's: its slot is let go once the pass has (`lock::awaits_ring_pass`); the
/// ring is read first, since an entry a human removed since has nothing to record.
fn awaiting_ring_pass(rec: &BackendStatus, obs: &Observed) -> Decision {
    let (reason, requeue) = match obs.ring {
        None => (WaitReason::RingUnreadable, Duration::from_secs(5)),
        Some(_) => (WaitReason::WaitingForRingPass, Duration::from_secs(10)),
    };
    Decision::wait(reason, lock::awaiting_message(rec), requeue)
}

/// A rejoin at an IP that still takes users (its new IP, or the old one the pod came back to)
/// is not out yet: it is weighed as a new backend out against the ring's record read now
/// (another DBU may have claimed since it began; it may have registered while its new IP was
/// not in the ring and the pod came back to its old one since; its pod may have been recreated
/// under it at the IP it was just put in at), and without room its record goes, nothing done,
/// and the pod serves until `rejoin` finds room. Weighed in `lock_sync`, the first thing a
/// decision does, so before the drift takes anything out.
fn rejoin_room(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
) -> Option<Decision> {
    let rejoins = || {
        status
            .backends
            .iter()
            .filter(|r| active(r) && steps::rejoining(r))
    };
    let rec = rejoins().next()?;
    let Some(ring) = obs.ring.as_deref() else {
        // read it (`missing`), then decide again
        return Some(Decision::wait(
            WaitReason::RingUnreadable,
            format!(
                "{} rejoins the ring: reading the director ring before it takes a slot",
                rec.pod
            ),
            Duration::from_secs(10),
        ));
    };
    // the ring's record is read only for one that would take a serving host out
    let serving: Vec<(&BackendStatus, Vec<&str>)> = rejoins()
        .map(|r| (r, steps::weighed_ips(r, ring, obs)))
        .filter(|(_, ips)| !ips.is_empty())
        .collect();
    if !serving.is_empty() {
        let lk = match lock::read(obs) {
            Ok(lk) => lk,
            Err(wait) => return Some(wait),
        };
        if let Some((rec, _)) = serving.iter().find(|(r, ips)| {
            ips.iter()
                .any(|ip| room_to_take_out(s, status, obs, ring, lk, &r.pod, ip).is_some())
        }) {
            return Some(Decision::Undo {
                pod: rec.pod.clone(),
                action: super::decision::Cleanup::Nothing,
            });
        }
    }
    None
}

/// Why `pod`, serving at `ip`, may not be taken out now (None: it may). It needs a slot in the
/// ring's record read now (its own registration, and a deleted DBU's it adopted, count as
/// nothing out yet; found by the model: adopted, a rejoin took its serving IP out beside
/// another DBU's drain), and enough other hosts serving (found by the model: it was the only
/// one).
fn room_to_take_out(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    ring: &[RingHost],
    lk: &super::observed::RingLock,
    pod: &str,
    ip: &str,
) -> Option<WaitReason> {
    let fresh = super::observed::RingLock {
        version: lk.version.clone(),
        holders: lk
            .holders
            .iter()
            .filter(|h| h.pod != pod)
            .cloned()
            .collect(),
    };
    if lock::busy(s, status, obs, &fresh, pod).is_some() {
        return Some(WaitReason::RingBusy);
    }
    let out = lock::out_ips(status, obs, pod);
    let out: Vec<&str> = out.iter().map(String::as_str).collect();
    match dovecot::validate_ip(ip).map(|a| gates::ring_gate(s, status, obs, ring, pod, a, &out)) {
        Ok(None) => None,
        Ok(Some(Decision::Wait { reason, .. })) => Some(reason),
        _ => Some(WaitReason::InsufficientRingCapacity),
    }
}

/// `spec.abort`: the first in-flight backend that still needs undoing, else the end state.
fn abort(status: &DovecotBackendUpgradeStatus) -> Decision {
    if let Some(rec) = status.backends.iter().find(|r| active(r) && !r.failed) {
        return Decision::Undo {
            pod: rec.pod.clone(),
            action: cleanup_for(rec),
        };
    }
    let out: Vec<String> = status
        .backends
        .iter()
        .filter(|r| active(r))
        .map(|r| format!("{} (at {})", r.pod, r.step))
        .collect();
    if out.is_empty() {
        Decision::Aborted {
            message: "rollout aborted (spec.abort); no backend is drained; set spec.abort=false to resume".into(),
            left_out: false,
        }
    } else {
        Decision::Aborted {
            message: format!(
                "rollout aborted (spec.abort); kept out of the director ring because Dovecot was already stopped or a step failed: {}; to finish them set spec.abort=false and annotate {RETRY_ANNOTATION}; a restore by hand would be undone while this DBU keeps them out",
                out.join(", ")
            ),
            left_out: true,
        }
    }
}
