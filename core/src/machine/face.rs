//! The ring's own pass: its face (hosts, directors, users, sync) and conditions from what every director says, and the out state of backends no DBU looks after any more, re-asserted.
//!
//! A DBU re-asserts the ring state of its own backends (`decide::ring_drift`). A backend whose
//! DBU was deleted with it still out (`leftOut`) has nobody else: a director that restarts
//! forgets `update 0` and `down` and would send users to a stopped or unverified backend. The
//! ring takes that over until a DBU of its StatefulSet finishes it.

use k8s_openapi::jiff::Timestamp;

use super::conditions::{self, READY, RECONCILING, STALLED};
use super::decide::argv_towards;
use super::fold;
use super::note::Note;
use super::split;
use super::steps;
use crate::api::{
    DovecotRingSpec, DovecotRingStatus, RingDirectorStatus, RingHolder, RingHostStatus,
};
use crate::dovecot::{Doveadm, RingHost, RingMember};

/// One Ready director, as read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectorRead {
    pub pod: String,
    pub ip: Option<String>,
    /// `director status` (None: unreadable).
    pub hosts: Option<Vec<RingHost>>,
    /// `director ring status`: whether it says `ring synced`, and whom it names (None:
    /// unreadable).
    pub ring: Option<(bool, Vec<RingMember>)>,
}

/// A pod of one of the ring's StatefulSets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendPod {
    pub name: String,
    pub ip: Option<String>,
    /// Ready (its Dovecot answers): a host whose pod is not serves nobody, whatever the ring
    /// shows.
    pub ready: bool,
}

/// What the ring's pass works from.
#[derive(Debug, Clone, Copy)]
pub struct RingInput<'a> {
    pub spec: &'a DovecotRingSpec,
    pub generation: Option<i64>,
    /// Ready directors, by name.
    pub directors: &'a [DirectorRead],
    pub backends: &'a [BackendPod],
    /// Why this ring cannot stand as declared (it shares a StatefulSet or directors with
    /// another ring), from the same resolution the DBUs use.
    pub conflict: Option<&'a str>,
}

/// status, reason, message of one condition.
type Cond<'a> = (bool, &'a str, String);

/// Commands for one director, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassert {
    pub director: String,
    pub argv: Vec<Vec<String>>,
    pub why: String,
}

/// The ring's status after this pass (its record of who is out untouched), and the commands
/// that put backends nobody else looks after back out of service.
pub fn assess(
    input: &RingInput<'_>,
    prev: &DovecotRingStatus,
    now: Timestamp,
) -> (DovecotRingStatus, Vec<Reassert>) {
    let mut st = prev.clone();
    st.observed_generation = input.generation;
    let first = input
        .directors
        .iter()
        .find_map(|d| d.hosts.as_deref().map(|h| (d.pod.as_str(), h)));
    // one map, not a scan of the backends per host and use: a pass over N hosts stays O(N)
    let mut by_ip: std::collections::HashMap<&str, &str> = Default::default();
    for b in input.backends {
        if let Some(ip) = b.ip.as_deref() {
            by_ip.entry(ip).or_insert(b.name.as_str());
        }
    }
    let pod_at = |ip: &str| by_ip.get(ip).map(|n| n.to_string());
    // the last pass's hosts by IP (a director lists an IP once), and the backends by name: a
    // scan of either per host made the ring's pass O(N^2) (benches/scale.rs)
    let mut prev_by_ip: std::collections::HashMap<&str, &RingHostStatus> = Default::default();
    for h in &prev.hosts {
        prev_by_ip.entry(h.ip.as_str()).or_insert(h);
    }
    let before = |ip: &str| prev_by_ip.get(ip).copied();
    let mut backend_named: std::collections::HashMap<&str, &BackendPod> = Default::default();
    for b in input.backends {
        backend_named.entry(b.name.as_str()).or_insert(b);
    }
    let has_ip = |name: &str| backend_named.get(name).is_some_and(|b| b.ip.is_some());
    let holder_of = |ip: &str| {
        prev.out.iter().find(|h| {
            h.ip == ip
                || h.left_out
                    .as_ref()
                    .is_some_and(|l| l.record.new_ip.as_deref() == Some(ip))
        })
    };
    st.hosts = first
        .map(|(_, hosts)| {
            let counts: Vec<Option<String>> = hosts
                .iter()
                .map(|h| counts_for(before(&h.ip), h, holder_of(&h.ip), pod_at(&h.ip).as_deref()))
                .collect();
            let mut position: std::collections::HashMap<&str, usize> = Default::default();
            for (i, h) in hosts.iter().enumerate() {
                position.entry(h.ip.as_str()).or_insert(i);
            }
            // back in the ring: at an IP whose host counts for it (its rejoin put it there),
            // not merely at one the ring has for another pod, and no longer held out (a rejoin
            // in flight may still be dropped and begun again from the host it left)
            let rejoined = |name: &str| {
                !prev.out.iter().any(|o| o.pod == name)
                    && backend_named
                        .get(name)
                        .and_then(|b| b.ip.as_deref())
                        .and_then(|at| position.get(at))
                        .is_some_and(|i| counts[*i].as_deref() == Some(name))
            };
            hosts
                .iter()
                .zip(&counts)
                .map(|(h, counts)| {
                    let was = before(&h.ip);
                    let former = former_pod(
                        prev,
                        was,
                        &has_ip,
                        &rejoined,
                        &h.ip,
                        pod_at(&h.ip).as_deref(),
                    );
                    let (former_vhosts, former_up) = match &former {
                        Some(f) => former_state(prev, was, h, f, counts.as_deref()),
                        None => before_take_out(prev, was, h, pod_at(&h.ip).as_deref()),
                    };
                    let taken_by = taken_by(was, former.as_deref(), pod_at(&h.ip));
                    let stood = former.clone().or_else(|| pod_at(&h.ip));
                    let (counts_vhosts, counts_up) =
                        counted_state(was, h, counts.as_deref(), stood.as_deref(), &|c| {
                            !has_ip(c) || rejoined(c) || pod_at(&h.ip).as_deref() == Some(c)
                        });
                    RingHostStatus {
                        ip: h.ip.clone(),
                        counts_for: counts.clone(),
                        counts_vhosts,
                        counts_up,
                        taken_by,
                        former_pod: former,
                        former_vhosts,
                        former_up,
                        pod: pod_at(&h.ip),
                        vhosts: h.vhosts,
                        up: h.up,
                        users: h.users,
                        out: holder_of(&h.ip).map(describe),
                    }
                })
                .collect()
        })
        // no director readable: the hosts as last read stay, with the pods they stood for
        // (what a pod back at a new IP rejoins by; found by the model)
        .unwrap_or_else(|| prev.hosts.clone());
    st.host_count = first.map(|(_, h)| h.len() as i32);
    st.users = first.map(|(_, h)| h.iter().map(|h| h.users).sum());
    st.directors = input
        .directors
        .iter()
        .map(|d| RingDirectorStatus {
            pod: d.pod.clone(),
            ip: d.ip.clone(),
            synced: d.ring.as_ref().is_some_and(|r| r.0),
            hosts: d.hosts.as_ref().map(|h| h.len() as i32),
        })
        .collect();
    st.out_count = prev.out.len() as i32;
    // the backends out right now may differ between directors while their change propagates
    let changing: Vec<&str> = prev
        .out
        .iter()
        .flat_map(|h| {
            [Some(h.ip.as_str())]
                .into_iter()
                .chain(h.left_out.as_ref().map(|l| l.record.new_ip.as_deref()))
        })
        .flatten()
        .collect();
    let others: Vec<(String, Option<Vec<RingHost>>)> = input
        .directors
        .iter()
        .filter(|d| Some(d.pod.as_str()) != first.map(|f| f.0))
        .map(|d| (d.pod.clone(), d.hosts.clone()))
        .collect();
    let pods: Vec<(String, Option<String>)> = input
        .directors
        .iter()
        .map(|d| (d.pod.clone(), d.ip.clone()))
        .collect();
    let members: Vec<(String, Option<Vec<RingMember>>)> = input
        .directors
        .iter()
        .map(|d| (d.pod.clone(), d.ring.as_ref().map(|r| r.1.clone())))
        .collect();
    let trouble = split::between(first, &others, &pods, &members, &changing);
    // unreadable or still syncing: a wait, not a split (a director restarting passes here)
    let mut pending = Vec::new();
    for d in input.directors {
        if d.hosts.is_none() || d.ring.is_none() {
            pending.push(format!("{} could not be read", d.pod));
        } else if d.ring.as_ref().is_some_and(|r| !r.0) {
            pending.push(format!("{} is not ring synced", d.pod));
        }
    }
    let agree = !input.directors.is_empty() && trouble.is_empty() && pending.is_empty();
    st.synced = Some(if agree { "True" } else { "False" }.into());
    let g = input.generation;
    let c = &mut st.conditions;
    let (ready, reconciling, stalled): (Cond, Cond, Cond) = if let Some(why) = input.conflict {
        (
            (false, "RingConflict", why.to_string()),
            (false, "RingConflict", why.to_string()),
            (true, "RingConflict", why.to_string()),
        )
    } else if input.directors.is_empty() {
        let m = "no Ready director pod matches spec.directors.selector".to_string();
        (
            (false, "NoReadyDirector", m.clone()),
            (true, "NoReadyDirector", m),
            (false, "NoReadyDirector", String::new()),
        )
    } else if !trouble.is_empty() {
        let m = format!(
            "the directors disagree: {}; no backend is taken out until they agree",
            trouble.join("; ")
        );
        (
            (false, "RingSplit", m.clone()),
            (false, "RingSplit", m.clone()),
            (true, "RingSplit", m),
        )
    } else if !agree {
        let m = format!("waiting for the directors: {}", pending.join("; "));
        (
            (false, "RingNotSynced", m.clone()),
            (true, "RingNotSynced", m),
            (false, "RingNotSynced", String::new()),
        )
    } else {
        let m = format!(
            "{} directors agree on {} hosts; {} out",
            input.directors.len(),
            st.host_count.unwrap_or(0),
            st.out_count
        );
        (
            (true, "RingSynced", m.clone()),
            (false, "RingSynced", m),
            (false, "RingSynced", String::new()),
        )
    };
    conditions::set(c, READY, ready.0, ready.1, &ready.2, g, now);
    conditions::set(
        c,
        RECONCILING,
        reconciling.0,
        reconciling.1,
        &reconciling.2,
        g,
        now,
    );
    conditions::set(c, STALLED, stalled.0, stalled.1, &stalled.2, g, now);
    (st, orphans(input, prev))
}

/// The pod a host stood for before its IP was left or taken (`RingHostStatus::former_pod`):
/// the pod the last pass saw at it, kept while that pod is not back in the ring (`rejoined`:
/// at an IP whose host counts for it) and no pod or another one has the IP. Names, not UIDs: a
/// StatefulSet's pod comes back under its name. A pod back in the ring leaves no host it left
/// standing for it, whether or not another pod sat there since (found by the model: a pod that
/// took the entry moved on before the pass saw the first one rejoin, the entry kept standing
/// for it, and it rejoined from there again once outdated, at the count from before a human's
/// change); one merely at an IP the ring has for another pod is not back.
/// `before`: the last pass's host at `ip`; `has_ip`: whether the backend pod so named has an IP.
fn former_pod(
    prev: &DovecotRingStatus,
    before: Option<&RingHostStatus>,
    has_ip: &dyn Fn(&str) -> bool,
    rejoined: &dyn Fn(&str) -> bool,
    ip: &str,
    now: Option<&str>,
) -> Option<String> {
    // as the last pass saw it, or, for a host added since (a rejoin's new IP), as the record
    // of who is out says
    let was = before
        .and_then(|h| h.stood_for())
        .or_else(|| prev.out.iter().find(|h| h.ip == ip).map(|h| h.pod.as_str()))?;
    let has_ip = has_ip(was);
    match now {
        Some(n) if n == was => None,
        _ if rejoined(was) => None,
        None => Some(was.to_string()),
        // taken: kept while the pod it stood for lives elsewhere (one gone has no claim)
        Some(_) => has_ip.then(|| was.to_string()),
    }
}

/// Another pod seen at a host's IP since its former pod `former` left it
/// (`RingHostStatus::taken_by`): the one there now, else the one the last pass recorded while
/// the host stood for the same former pod (found by the model: a pod that took a moved pod's
/// entry, downed there by its rejoin, was scaled away before the moved pod's record read the
/// entry, which took that `down` for a human's and put the moved pod back down). `before`: the
/// last pass's host at the IP.
fn taken_by(
    before: Option<&RingHostStatus>,
    former: Option<&str>,
    now: Option<String>,
) -> Option<String> {
    let former = former?;
    now.filter(|n| n != former).or_else(|| {
        before
            .filter(|h| h.former_pod.as_deref() == Some(former))
            .and_then(|h| h.taken_by.clone())
    })
}

/// The count and up/down a host had for its former pod `f`, kept from the pass that first
/// saw `f` leave: the host as read now (a human's change since the last pass is `f`'s), unless
/// it is out now (0 vhosts, down: the operator took the entry out for the pod that has the IP
/// now, or for `f`'s own rejoin), then as the last pass read it; for a host added since, the
/// record of who is out. Another pod at the IP, or a rollout of it, changes the entry before
/// `f` rejoins elsewhere (found by the model: a pod that took a moved pod's serving IP rejoined
/// first and zeroed it, and the moved pod rejoined at 0 vhosts, down).
fn former_state(
    prev: &DovecotRingStatus,
    before: Option<&RingHostStatus>,
    now: &RingHost,
    f: &str,
    counts_now: Option<&str>,
) -> (Option<u32>, Option<bool>) {
    let ip = now.ip.as_str();
    if let Some(h) = before {
        // the count is another pod's now (the pod at the IP, put back there by its rejoin or
        // its undo since the last pass), where the last pass read it as `f`'s: not a human's
        // change for `f`, so `f`'s is as that pass read it (found by the model with seed 2027:
        // a moved pod rejoined elsewhere at the count another pod's undo had put at its entry)
        let others_now = counts_now.is_some_and(|c| c != f)
            && h.former_pod.is_none()
            && h.pod.as_deref() == Some(f)
            && h.counts_for.as_deref().unwrap_or(f) == f;
        return match h.former_pod.as_deref() {
            Some(was) if was == f && h.former_vhosts.is_some() => (h.former_vhosts, h.former_up),
            // taken out for `f` itself while it sat there: as it was before that
            None if now.vhosts == 0 && h.former_vhosts.is_some() => (h.former_vhosts, h.former_up),
            _ if now.vhosts == 0 && !now.up => (Some(h.vhosts), Some(h.up)),
            _ if others_now => (Some(h.vhosts), Some(h.up)),
            _ => (Some(now.vhosts), Some(now.up)),
        };
    }
    // a host added since (a rejoin put `f` in at it, and `f` left before a pass saw it there):
    // the left-out record's state, else the host's as read now while it serves (found by the
    // model: kept as nothing, the host's count then stood for `f` as read, and once the
    // operator took the entry out `f` rejoined elsewhere at 0 vhosts, down)
    prev.out
        .iter()
        .find(|h| h.ip == ip && h.pod == f)
        .and_then(|h| h.left_out.as_ref())
        .map(|l| (Some(l.record.original_vhosts), Some(l.record.restores_up())))
        .unwrap_or(if now.vhosts > 0 {
            (Some(now.vhosts), Some(now.up))
        } else {
            (None, None)
        })
}

/// The count and up/down a host has for the pod it counts for (`counts`), when that pod is not
/// the one it stands for (`stood`: its former pod, else the pod at it) and has left it, with an
/// IP elsewhere that is not back in the ring (`settled`: back, at this IP, or without an IP). A DBU put
/// that pod back here over the entry of a pod that had left it, and then it moved on: the
/// host stands for both (found by the model with seed 2027: the ring named only the first, and
/// nothing rejoined the second). As read when first seen so; kept while the entry is out (0
/// vhosts: taken out for the other pod's rejoin) from the pass before.
fn counted_state(
    before: Option<&RingHostStatus>,
    now: &RingHost,
    counts: Option<&str>,
    stood: Option<&str>,
    settled: &dyn Fn(&str) -> bool,
) -> (Option<u32>, Option<bool>) {
    let Some(c) = counts.filter(|c| stood.is_some_and(|s| s != *c) && !settled(c)) else {
        return (None, None);
    };
    let kept = before.filter(|b| b.counts_for.as_deref() == Some(c));
    match kept {
        Some(b) if now.vhosts == 0 => match (b.counts_vhosts, b.counts_up) {
            (Some(v), Some(u)) => (Some(v), Some(u)),
            _ => (Some(b.vhosts), Some(b.up)),
        },
        _ => (Some(now.vhosts), Some(now.up)),
    }
}

/// The pod whose state a host's count and up/down are (`RingHostStatus::counts_for`): the pod
/// the ring's record holds out at this IP (`held`), once the host is put back (a DBU takes it
/// out for that pod and puts it back at that pod's count; the slot is kept until a pass has
/// recorded this, `lock::awaits_ring_pass`); else as the last pass had it (a host from before
/// the field: the pod it stood for); else, for a host first seen, the pod at it (`pod`). A pod
/// that only took the IP changes nothing (found by the model: a pod recreated at another pod's
/// entry, moved on before any DBU of its own, rejoined at that entry's count and not its own).
fn counts_for(
    before: Option<&RingHostStatus>,
    now: &RingHost,
    held: Option<&RingHolder>,
    pod: Option<&str>,
) -> Option<String> {
    // put back: taking users, and out at the last pass or changed since (a claim given up
    // before anything was taken out leaves the host as it was: found by the model, the host
    // then counted for a pod that had only sat there, and that pod's own host was forgotten)
    let back = (now.vhosts > 0 || now.up)
        && before
            .is_none_or(|b| b.vhosts == 0 || !b.up || b.vhosts != now.vhosts || b.up != now.up);
    if let Some(h) = held.filter(|_| back) {
        return Some(h.pod.clone());
    }
    match before {
        Some(b) => b
            .counts_for
            .clone()
            .or_else(|| b.stood_for().map(String::from)),
        None => pod.map(String::from),
    }
}

/// The count and up/down a host had before the operator took it out for the pod at it now (0
/// vhosts while the ring's record holds that pod out), kept from pass to pass while it stays
/// so: the pod's own state there, which it rejoins by if it moves before it is put back
/// (found by the model: a rejoin's pod came back to its old entry, the rejoin took that out, the
/// pod moved again and the rejoin gave way to another DBU's: begun again, it rejoined at 0
/// vhosts, down). None otherwise.
fn before_take_out(
    prev: &DovecotRingStatus,
    before: Option<&RingHostStatus>,
    now: &RingHost,
    pod: Option<&str>,
) -> (Option<u32>, Option<bool>) {
    let Some(pod) = pod else {
        return (None, None);
    };
    let held = prev.out.iter().any(|h| h.pod == pod);
    let Some(h) = before else {
        return (None, None);
    };
    if !(held && now.vhosts == 0) {
        return (None, None);
    }
    match (h.pod.as_deref(), h.former_pod.as_deref()) {
        // back at the host that stood for it (found by the model: taken out there at once)
        (_, Some(f)) if f == pod => (h.former_vhosts, h.former_up),
        (Some(p), None) if p == pod && h.former_vhosts.is_some() => (h.former_vhosts, h.former_up),
        (Some(p), None) if p == pod && h.vhosts > 0 => (Some(h.vhosts), Some(h.up)),
        _ => (None, None),
    }
}

/// A human's `mailops.io/release` (`pod@token`, comma-separated) not acted on yet: the ring's
/// record without the left-out backends it names, and those it released. Holders of DBUs that
/// exist are never released this way (their DBU steers them). None: nothing new.
pub fn release(
    annotation: Option<&str>,
    prev: &DovecotRingStatus,
) -> Option<(Vec<RingHolder>, Vec<String>)> {
    let value = annotation?.trim();
    if value.is_empty() || prev.release_token.as_deref() == Some(value) {
        return None;
    }
    let pods: Vec<&str> = value
        .split(',')
        .map(|p| p.split('@').next().unwrap_or_default().trim())
        .filter(|p| !p.is_empty())
        .collect();
    let released: Vec<String> = prev
        .out
        .iter()
        .filter(|h| h.left_out.is_some() && pods.contains(&h.pod.as_str()))
        .map(|h| h.pod.clone())
        .collect();
    let kept = prev
        .out
        .iter()
        .filter(|h| !(h.left_out.is_some() && pods.contains(&h.pod.as_str())))
        .cloned()
        .collect();
    Some((kept, released))
}

/// Left-out backends whose vhost count a human set since they were left out, as the first
/// readable director shows them (`fold::keep_human_count`): the ring's record with those
/// counts kept, to be written (under the version read) before any re-assert zeroes them
/// again, and the Events. None: nothing to keep.
pub fn left_out_counts(
    input: &RingInput<'_>,
    prev: &DovecotRingStatus,
) -> Option<(Vec<RingHolder>, Vec<Note>)> {
    let view = input.directors.iter().find_map(|d| d.hosts.as_deref())?;
    let mut out = prev.out.clone();
    let mut notes = Vec::new();
    for h in &mut out {
        let Some(l) = h.left_out.as_mut() else {
            continue;
        };
        // an IP another pod holds now is that pod's: its count is no record's business
        let other = input
            .backends
            .iter()
            .any(|b| b.ip.as_deref() == Some(l.record.ip.as_str()) && b.name != l.record.pod);
        if other {
            continue;
        }
        let read_new = fold::new_entry_read(&prev.stood_for(), &l.record);
        notes.extend(fold::keep_human_count(&mut l.record, view, read_new));
    }
    (!notes.is_empty()).then_some((out, notes))
}

/// How a host's holder reads in status.
fn describe(h: &RingHolder) -> String {
    match &h.left_out {
        Some(l) => format!(
            "left out at {} by DovecotBackendUpgrade {}, deleted; the next one of StatefulSet {} takes it over",
            l.record.step, h.dbu, l.stateful_set
        ),
        None => format!("DovecotBackendUpgrade {}", h.dbu),
    }
}

/// The out state of every left-out backend, on every director that shows it more available
/// than its step allows: only at an IP that no other pod of the ring has now (an IP reused by
/// another backend is never downed for the old pod's sake).
fn orphans(input: &RingInput<'_>, prev: &DovecotRingStatus) -> Vec<Reassert> {
    let doveadm = Doveadm::new(input.spec.directors.config_file.clone());
    let mut out = Vec::new();
    for h in &prev.out {
        let Some(l) = &h.left_out else { continue };
        let rec = &l.record;
        // the new IP its pod has left since is not the record's any more (as for a DBU's own
        // drift; found by the model: it was another backend's old entry, whose own restore then
        // took this `down` for a human's and kept it down)
        let at = input
            .backends
            .iter()
            .find(|b| b.name == rec.pod)
            .and_then(|b| b.ip.as_deref());
        for ip in [Some(rec.ip.as_str()), rec.new_ip.as_deref()]
            .into_iter()
            .flatten()
            .filter(|ip| !steps::left_new_ip(rec, ip, at))
        {
            if input
                .backends
                .iter()
                .any(|b| b.ip.as_deref() == Some(ip) && b.name != rec.pod)
            {
                continue;
            }
            for d in input.directors {
                let Some(host) = d.hosts.iter().flatten().find(|x| x.ip == ip) else {
                    continue;
                };
                // the only host that takes users stays as it is: taking it out would leave the
                // ring serving nobody (found by the model: a left-out backend that a deletion
                // had put back, while the other host's pod had moved away)
                let serves = |x: &RingHost| {
                    x.up && x.vhosts > 0 && !dead(input, prev, &x.ip) && !unready(input, &x.ip)
                };
                if serves(host) && !d.hosts.iter().flatten().any(|x| x.ip != ip && serves(x)) {
                    continue;
                }
                // ... and one that takes users while the ring's record holds others out to its
                // room serves on, as a rejoin there waits for room (found by the model: a
                // rejoin left out beside another DBU's drain, its pod back at its old entry
                // and serving, was taken out too)
                let others = prev.out.iter().filter(|o| o.pod != rec.pod).count();
                if serves(host) && others >= h.max_unavailable.max(1) as usize {
                    continue;
                }
                let argv = argv_towards(&doveadm, steps::left_out_state(rec), host);
                if !argv.is_empty() {
                    out.push(Reassert {
                        director: d.pod.clone(),
                        argv,
                        why: format!(
                            "{} ({ip}) was left out at {} by DovecotBackendUpgrade {}, deleted; {} showed it at {} vhosts {}",
                            rec.pod,
                            rec.step,
                            h.dbu,
                            d.pod,
                            host.vhosts,
                            if host.up { "up" } else { "down" }
                        ),
                    });
                }
            }
        }
    }
    out
}

/// Whether the host at `ip` is a pod of the ring that is not Ready: its Dovecot does not answer
/// (found by the model: a left-out backend whose Dovecot the rollout had stopped, given vhosts
/// by a human, was held as the only host that served, and the logins sent there failed).
fn unready(input: &RingInput<'_>, ip: &str) -> bool {
    input
        .backends
        .iter()
        .any(|b| b.ip.as_deref() == Some(ip) && !b.ready)
}

/// Whether the host at `ip` stood for a pod of the ring that no longer has that IP (moved,
/// or gone): nothing listens there. A host no pod of the ring ever had (a backend outside
/// Kubernetes) is not.
fn dead(input: &RingInput<'_>, prev: &DovecotRingStatus, ip: &str) -> bool {
    let stood_for_pod = prev
        .hosts
        .iter()
        .any(|h| h.ip == ip && h.stood_for().is_some());
    stood_for_pod && !input.backends.iter().any(|b| b.ip.as_deref() == Some(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LeftOut, Step};
    use crate::fixtures::{host, record, ts};

    fn spec() -> DovecotRingSpec {
        serde_json::from_value(serde_json::json!({
            "directors": {"selector": {"matchLabels": {"app": "director"}}},
            "backends": [{"statefulSet": "backend"}]
        }))
        .unwrap()
    }

    fn director(pod: &str, ip: &str, hosts: Vec<RingHost>, peers: &[&str]) -> DirectorRead {
        DirectorRead {
            pod: pod.into(),
            ip: Some(ip.into()),
            hosts: Some(hosts),
            ring: Some((
                true,
                peers
                    .iter()
                    .map(|p| RingMember {
                        ip: p.to_string(),
                        connected: true,
                    })
                    .collect(),
            )),
        }
    }

    /// mail/roll's holder of `pod` at `ip`.
    fn rolled(pod: impl Into<String>, ip: impl Into<String>) -> RingHolder {
        RingHolder {
            dbu: "mail/roll".into(),
            pod: pod.into(),
            ip: ip.into(),
            max_unavailable: 1,
            left_out: None,
            reason: None,
        }
    }

    /// The ring's status after one pass over `ring` as one director shows it.
    fn one_director_pass(
        ring: Vec<RingHost>,
        pods: &[BackendPod],
        prev: &DovecotRingStatus,
    ) -> DovecotRingStatus {
        let dirs = [director("director-0", "10.0.9.1", ring, &["10.0.9.1"])];
        let input = RingInput {
            spec: &spec(),
            generation: Some(1),
            directors: &dirs,
            backends: pods,
            conflict: None,
        };
        assess(&input, prev, ts(1)).0
    }

    fn backends() -> Vec<BackendPod> {
        (0..3)
            .map(|i| BackendPod {
                name: format!("backend-{i}"),
                ip: Some(host(i, 0, true, 0).ip),
                ready: true,
            })
            .collect()
    }

    fn left_out(i: u32, step: Step) -> RingHolder {
        let rec = record(i, step, ts(0), "r1", 100);
        RingHolder {
            dbu: "mail/gone".into(),
            pod: rec.pod.clone(),
            ip: rec.ip.clone(),
            max_unavailable: 1,
            left_out: Some(Box::new(LeftOut {
                stateful_set: "backend".into(),
                record: rec,
            })),
            reason: None,
        }
    }

    #[test]
    fn a_host_keeps_who_sat_at_it_since_its_pod_left_while_it_stands_for_that_pod() {
        let ring = vec![
            host(0, 100, true, 0),
            host(1, 50, true, 0),
            host(2, 20, true, 0),
        ];
        let (ip0, new) = (host(0, 0, true, 0).ip, "10.0.0.77");
        let taken = |st: &DovecotRingStatus| -> (Option<String>, Option<String>) {
            let h = st.hosts.iter().find(|h| h.ip == ip0).unwrap();
            (h.former_pod.clone(), h.taken_by.clone())
        };
        let first = one_director_pass(ring.clone(), &backends(), &DovecotRingStatus::default());
        assert_eq!(taken(&first), (None, None));
        // backend-0 moves: its old host stands for it, nobody sat there yet
        let mut pods = backends();
        pods[0].ip = Some(new.into());
        let moved = one_director_pass(ring.clone(), &pods, &first);
        assert_eq!(taken(&moved), (Some("backend-0".into()), None));
        // backend-1 takes the IP: seen sitting there
        let mut sat = pods.clone();
        sat[1].ip = Some(ip0.clone());
        let sitting = one_director_pass(ring.clone(), &sat, &moved);
        assert_eq!(
            taken(&sitting),
            (Some("backend-0".into()), Some("backend-1".into()))
        );
        // ... and remembered once it is gone (scaled away): the entry's state since may be its
        let gone: Vec<BackendPod> = pods
            .iter()
            .filter(|p| p.name != "backend-1")
            .cloned()
            .collect();
        let after = one_director_pass(ring.clone(), &gone, &sitting);
        assert_eq!(
            taken(&after),
            (Some("backend-0".into()), Some("backend-1".into()))
        );
        let f = after.stood_for().into_iter().find(|f| f.ip == ip0).unwrap();
        assert_eq!(f.taken_by.as_deref(), Some("backend-1"));
        // never sat on: nothing remembered
        assert_eq!(taken(&one_director_pass(ring, &pods, &moved)).1, None);
    }

    #[test]
    fn each_host_keeps_the_pod_it_stood_for_until_that_pod_is_back_in_the_ring() {
        let ring = vec![
            host(0, 100, true, 0),
            host(1, 50, true, 0),
            host(2, 20, true, 0),
        ];
        let peers = ["10.0.9.1"];
        let dirs = [director("director-0", "10.0.9.1", ring.clone(), &peers)];
        let spec = spec();
        let pass = |pods: &[BackendPod], dirs: &[DirectorRead], prev: &DovecotRingStatus| {
            let input = RingInput {
                spec: &spec,
                generation: Some(1),
                directors: dirs,
                backends: pods,
                conflict: None,
            };
            assess(&input, prev, ts(1)).0
        };
        let formers = |st: &DovecotRingStatus| -> Vec<(String, Option<String>, Option<String>)> {
            st.hosts
                .iter()
                .map(|h| (h.ip.clone(), h.pod.clone(), h.former_pod.clone()))
                .collect()
        };
        let first = pass(&backends(), &dirs, &DovecotRingStatus::default());
        assert!(first.hosts.iter().all(|h| h.former_pod.is_none()));
        let (ip0, ip1, new) = (host(0, 0, true, 0).ip, host(1, 0, true, 0).ip, "10.0.0.77");
        // backend-0 back at a new IP: its old host stands for it
        let mut pods = backends();
        pods[0].ip = Some(new.into());
        let moved = pass(&pods, &dirs, &first);
        assert_eq!(
            formers(&moved)[0],
            (ip0.clone(), None, Some("backend-0".into()))
        );
        // no director readable: the hosts stay as last read
        let unread = DirectorRead {
            hosts: None,
            ..dirs[0].clone()
        };
        assert_eq!(
            pass(&pods, std::slice::from_ref(&unread), &moved).hosts,
            moved.hosts
        );
        // backend-1 takes the old IP: kept while backend-0 is not in the ring at its own...
        pods[1].ip = Some(ip0.clone());
        let taken = pass(&pods, &dirs, &moved);
        assert_eq!(
            formers(&taken)[0],
            (
                ip0.clone(),
                Some("backend-1".into()),
                Some("backend-0".into())
            )
        );
        assert_eq!(
            formers(&taken)[1],
            (ip1.clone(), None, Some("backend-1".into()))
        );
        // ... and forgotten once it is
        let mut back = ring.clone();
        back.push(RingHost {
            ip: new.into(),
            ..host(0, 100, true, 0)
        });
        let dirs = [director("director-0", "10.0.9.1", back, &peers)];
        let rejoined = pass(&pods, &dirs, &taken);
        assert_eq!(formers(&rejoined)[0], (ip0, Some("backend-1".into()), None));
    }

    #[test]
    fn a_hosts_count_is_the_pod_first_seen_there_or_the_last_one_put_back_there() {
        let pass = one_director_pass;
        let counts = |st: &DovecotRingStatus| -> Vec<Option<String>> {
            st.hosts.iter().map(|h| h.counts_for.clone()).collect()
        };
        let some = |p: &str| Some(p.to_string());
        let ring = |v0: u32| vec![host(0, v0, true, 0), host(1, 50, true, 0)];
        let mut pods = backends();
        pods.truncate(2);
        let first = pass(ring(100), &pods, &DovecotRingStatus::default());
        assert_eq!(counts(&first), [some("backend-0"), some("backend-1")]);
        let ip0 = first.hosts[0].ip.clone();
        // backend-0 moves away and backend-1 is recreated at its old IP: the host stands for
        // backend-1 once backend-0 is elsewhere in the ring, and still counts for backend-0
        pods[0].ip = Some("10.0.0.77".into());
        pods[1].ip = Some(ip0.clone());
        let taken = pass(ring(100), &pods, &first);
        assert_eq!(counts(&taken), [some("backend-0"), some("backend-1")]);
        let mut both = ring(100);
        both.push(RingHost {
            ip: "10.0.0.77".into(),
            ..host(0, 100, true, 0)
        });
        let rejoined = pass(both.clone(), &pods, &taken);
        assert_eq!(rejoined.hosts[0].stood_for(), Some("backend-1"));
        assert_eq!(counts(&rejoined)[0], some("backend-0"));
        // so backend-1, which left its own host, rejoins by that one and not by this one
        let f = rejoined.stood_for();
        assert!(!f[0].counts_for("backend-1") && f[1].counts_for("backend-1"));
        // held out at the IP for backend-1 (its rejoin): a claim given up before anything was
        // taken out leaves the host as it was, and it still counts for backend-0...
        let mut held = rejoined.clone();
        held.out = vec![rolled("backend-1", ip0.clone())];
        assert_eq!(
            counts(&pass(both.clone(), &pods, &held))[0],
            some("backend-0")
        );
        // ... taken out, it still does; put back (at backend-1's count), it counts for
        // backend-1, and keeps doing so when backend-1 moves on before another pass
        let mut out = both.clone();
        out[0] = host(0, 0, false, 0);
        let taken_out = pass(out, &pods, &held);
        assert_eq!(counts(&taken_out)[0], some("backend-0"));
        let mut put = both.clone();
        put[0] = host(0, 50, true, 0);
        let mut held_out = taken_out.clone();
        held_out.out = held.out.clone();
        let put_back = pass(put.clone(), &pods, &held_out);
        assert_eq!(counts(&put_back)[0], some("backend-1"));
        pods[1].ip = Some("10.0.0.78".into());
        let mut gone = put_back.clone();
        gone.out.clear();
        assert_eq!(counts(&pass(put, &pods, &gone))[0], some("backend-1"));
        // a status from before the field: the pod the host stood for
        let mut old = first.clone();
        old.hosts.iter_mut().for_each(|h| h.counts_for = None);
        assert_eq!(
            counts(&pass(ring(100), &backends()[..2], &old)),
            counts(&first)
        );
    }

    /// A pod that left its host between two passes, where another pod's rejoin (or its undo)
    /// put that other pod back at its own count meanwhile, keeps the count the last pass read
    /// for it: the count there now is the other pod's, not a human's change (found by the
    /// model with seed 2027: mx-0 rejoined elsewhere at backend-0's 100, not its own 50).
    #[test]
    fn a_pod_that_left_keeps_its_count_where_another_pods_rejoin_put_its_own_since() {
        let pass = one_director_pass;
        let ring = |v1: u32| vec![host(0, 100, true, 0), host(1, v1, true, 0)];
        let mut pods = backends();
        pods.truncate(2);
        let first = pass(ring(50), &pods, &DovecotRingStatus::default());
        let ip1 = first.hosts[1].ip.clone();
        // backend-1 moves away; backend-0 comes back at backend-1's old IP, and its rejoin puts
        // it back there at its own 100 (held out at that IP by its DBU)
        pods[1].ip = Some("10.0.0.77".into());
        pods[0].ip = Some(ip1.clone());
        let mut held = first.clone();
        held.out = vec![rolled("backend-0", ip1.clone())];
        let after = pass(ring(100), &pods, &held);
        let h = &after.hosts[1];
        assert_eq!(
            (h.former_pod.as_deref(), h.counts_for.as_deref()),
            (Some("backend-1"), Some("backend-0"))
        );
        assert_eq!((h.former_vhosts, h.former_up), (Some(50), Some(true)));
        // a human's count on it while it still counts for backend-1 is backend-1's
        let by_hand = pass(ring(70), &pods, &first);
        let h = &by_hand.hosts[1];
        assert_eq!(h.counts_for.as_deref(), Some("backend-1"));
        assert_eq!(h.former_vhosts, Some(70));
    }

    /// The pod a rejoin put back over another moved pod's entry, moving on in its turn before
    /// it is back in the ring, is named by that host too, at its own count, kept while the
    /// entry is taken out for the other's rejoin (found by the model with seed 2027: the host
    /// stood only for the first pod, and nothing rejoined the second once its DBU was deleted).
    #[test]
    fn a_host_stands_also_for_the_pod_put_back_there_once_that_pod_moves_on_too() {
        let pass = one_director_pass;
        let ring = |v1: u32, up1: bool| vec![host(0, 100, true, 0), host(1, v1, up1, 0)];
        let counted = |st: &DovecotRingStatus| {
            let h = &st.hosts[1];
            (h.counts_for.clone(), h.counts_vhosts, h.counts_up)
        };
        let some = |p: &str| Some(p.to_string());
        let mut pods = backends();
        pods.truncate(2);
        let first = pass(ring(50, true), &pods, &DovecotRingStatus::default());
        let ip1 = first.hosts[1].ip.clone();
        // backend-1 moves away; backend-0 comes back at its old IP and is put back there at
        // its own 100 (held at that IP by its DBU): at the IP, it is only counted
        pods[1].ip = Some("10.0.0.77".into());
        pods[0].ip = Some(ip1.clone());
        let mut held = first.clone();
        held.out = vec![rolled("backend-0", ip1.clone())];
        let put_back = pass(ring(100, true), &pods, &held);
        assert_eq!(counted(&put_back), (some("backend-0"), None, None));
        // backend-0 moves on too, before any pass saw it settle: the host stands for both
        pods[0].ip = Some("10.0.0.78".into());
        let mut still_held = put_back.clone();
        still_held.out = held.out.clone();
        let left = pass(ring(100, true), &pods, &still_held);
        assert_eq!(
            (left.hosts[1].former_pod.as_deref(), counted(&left)),
            (
                Some("backend-1"),
                (some("backend-0"), Some(100), Some(true))
            )
        );
        let f: Vec<(String, u32, bool)> = left
            .stood_for()
            .into_iter()
            .filter(|f| f.ip == ip1)
            .map(|f| (f.pod, f.vhosts, f.counted))
            .collect();
        assert_eq!(
            f,
            [
                ("backend-1".into(), 50, false),
                ("backend-0".into(), 100, true)
            ]
        );
        // backend-1's rejoin takes the entry out: backend-0's count there is kept
        let mut released = left.clone();
        released.out.clear();
        let out = pass(ring(0, false), &pods, &released);
        assert_eq!(counted(&out), (some("backend-0"), Some(100), Some(true)));
        // backend-0 back in the ring at a host that counts for it: no longer named here
        let mut back = ring(0, false);
        back.push(RingHost {
            ip: "10.0.0.78".into(),
            ..host(0, 100, true, 0)
        });
        let rejoined = pass(back, &pods, &out);
        assert_eq!(counted(&rejoined), (some("backend-0"), None, None));
        // a pod gone (no IP) is not named either
        pods[0].ip = None;
        assert_eq!(counted(&pass(ring(100, true), &pods, &still_held)).1, None);
    }

    #[test]
    fn a_host_stops_standing_for_a_pod_once_that_pod_is_back_at_a_host_counting_for_it() {
        let pass = one_director_pass;
        let stood = |st: &DovecotRingStatus, i: usize| st.hosts[i].stood_for().map(String::from);
        let mut pods = backends();
        pods.truncate(2);
        let ring = vec![host(0, 100, true, 0), host(1, 50, true, 0)];
        let first = pass(ring.clone(), &pods, &DovecotRingStatus::default());
        let (ip0, ip1) = (first.hosts[0].ip.clone(), first.hosts[1].ip.clone());
        // backend-0 moves to backend-1's old IP, which the ring has for backend-1 (gone
        // elsewhere): not back, so its own host still stands for it
        pods[1].ip = Some("10.0.0.78".into());
        pods[0].ip = Some(ip1.clone());
        let landed = pass(ring.clone(), &pods, &first);
        assert_eq!(stood(&landed, 0), Some("backend-0".into()));
        // instead: backend-0 at a new IP, put back there by its rejoin (held, out, back in),
        // while backend-1 sat at its old host and moved on before the pass saw it back
        let mut pods = backends();
        pods.truncate(2);
        pods[0].ip = Some("10.0.0.77".into());
        pods[1].ip = Some(ip0.clone());
        let taken = pass(ring.clone(), &pods, &first);
        assert_eq!(stood(&taken, 0), Some("backend-0".into()));
        let new = |v: u32, up: bool| RingHost {
            ip: "10.0.0.77".into(),
            ..host(0, v, up, 0)
        };
        let mut held = taken.clone();
        held.out = vec![rolled("backend-0", "10.0.0.77")];
        let mut out = ring.clone();
        out.push(new(0, false));
        let added = pass(out, &pods, &held);
        let mut back = ring.clone();
        back.push(new(100, true));
        let mut held_out = added.clone();
        held_out.out = held.out.clone();
        let put_back = pass(back.clone(), &pods, &held_out);
        assert_eq!(put_back.hosts[2].counts_for.as_deref(), Some("backend-0"));
        // still held: its old host still stands for it (the rejoin may yet be begun again)
        assert_eq!(stood(&put_back, 0), Some("backend-0".into()));
        pods[1].ip = Some("10.0.0.79".into());
        let mut released = put_back.clone();
        released.out.clear();
        let after = pass(back, &pods, &released);
        assert_eq!(
            (stood(&after, 0), stood(&after, 2)),
            (None, Some("backend-0".into()))
        );
    }

    #[test]
    fn a_host_taken_out_for_the_pod_at_it_keeps_its_state_from_before_for_that_pod() {
        let pass = one_director_pass;
        let ring = |v0: u32, up0: bool| {
            vec![
                host(0, v0, up0, 0),
                host(1, 50, true, 0),
                host(2, 20, true, 0),
            ]
        };
        let first = pass(ring(100, true), &backends(), &DovecotRingStatus::default());
        // backend-0 held out: drained, then downed, over two passes
        let mut held = first.clone();
        held.out = vec![rolled("backend-0", "10.0.0.77")];
        let drained = pass(ring(0, true), &backends(), &held);
        let state = |st: &DovecotRingStatus| {
            let h = &st.hosts[0];
            (h.former_pod.clone(), h.former_vhosts, h.former_up)
        };
        assert_eq!(state(&drained), (None, Some(100), Some(true)));
        // (the pass keeps the ring's record of who is out as it was)
        let downed = pass(ring(0, false), &backends(), &drained);
        assert_eq!(state(&downed), (None, Some(100), Some(true)));
        // what a pod back at a new IP rejoins by is its state before the take-out
        let stood = downed.stood_for();
        assert_eq!((stood[0].vhosts, stood[0].up), (100, true));
        // it moves: the host stands for it at that state (found by the model: it rejoined at 0
        // vhosts, down)
        let mut pods = backends();
        pods[0].ip = Some("10.0.0.78".into());
        let moved = pass(ring(0, false), &pods, &downed);
        assert_eq!(
            state(&moved),
            (Some("backend-0".into()), Some(100), Some(true))
        );
        // not held: a 0 is someone else's, and nothing is kept
        let unheld = pass(ring(0, true), &backends(), &first);
        assert_eq!(state(&unheld), (None, None, None));
        // back at the host that stood for it, and taken out there before the next pass: the
        // state it stood for is kept
        let mut away = backends();
        away[0].ip = Some("10.0.0.78".into());
        let mut left = pass(ring(100, true), &away, &first);
        left.out = held.out.clone();
        let back = pass(ring(0, false), &backends(), &left);
        assert_eq!(state(&back), (None, Some(100), Some(true)));
    }

    #[test]
    fn the_face_of_a_whole_ring_and_its_conditions() {
        let ring = vec![
            host(0, 100, true, 3),
            host(1, 50, true, 2),
            host(2, 20, true, 1),
        ];
        let peers = ["10.0.9.1", "10.0.9.2"];
        let dirs = [
            director("director-0", "10.0.9.1", ring.clone(), &peers),
            director("director-1", "10.0.9.2", ring, &peers),
        ];
        let spec = spec();
        let input = RingInput {
            spec: &spec,
            generation: Some(2),
            directors: &dirs,
            backends: &backends(),
            conflict: None,
        };
        let (st, reassert) = assess(&input, &DovecotRingStatus::default(), ts(5));
        assert_eq!(reassert, vec![]);
        assert_eq!(
            (st.host_count, st.users, st.synced.as_deref(), st.out_count),
            (Some(3), Some(6), Some("True"), 0)
        );
        assert_eq!(st.hosts[0].pod.as_deref(), Some("backend-0"));
        assert_eq!(st.directors.len(), 2);
        let ready = st.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "RingSynced")
        );
        assert_eq!(st.observed_generation, Some(2));
        // a director that cannot be read (restarting): a wait, not a split
        let mut dirs = dirs.clone();
        dirs[1].hosts = None;
        let input = RingInput {
            directors: &dirs,
            ..input
        };
        let (st, _) = assess(&input, &st, ts(6));
        let get = |t: &str| {
            let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        assert_eq!(get(READY), ("False".into(), "RingNotSynced".into()));
        assert_eq!(get(RECONCILING), ("True".into(), "RingNotSynced".into()));
        assert_eq!(get(STALLED), ("False".into(), "RingNotSynced".into()));
        assert_eq!(st.synced.as_deref(), Some("False"));
    }

    #[test]
    fn a_human_releases_a_left_out_backend_once_per_value() {
        let mut live = left_out(0, Step::Verify);
        live.left_out = None;
        live.dbu = "mail/running".into();
        let prev = DovecotRingStatus {
            out: vec![left_out(2, Step::Reset), live.clone()],
            ..Default::default()
        };
        let (kept, released) = release(Some("backend-2@100, backend-0@100"), &prev).unwrap();
        // the live DBU's backend stays: its DBU steers it
        assert_eq!(
            (kept, released),
            (vec![live], vec!["backend-2".to_string()])
        );
        let done = DovecotRingStatus {
            release_token: Some("backend-2@100, backend-0@100".into()),
            ..prev.clone()
        };
        assert_eq!(
            release(Some("backend-2@100, backend-0@100"), &done),
            None,
            "acted on once"
        );
        assert_eq!(release(None, &prev), None);
        assert_eq!(release(Some("  "), &prev), None);
    }

    #[test]
    fn a_split_ring_is_stalled_naming_the_director() {
        let peers = ["10.0.9.1", "10.0.9.2"];
        let dirs = [
            director(
                "director-0",
                "10.0.9.1",
                vec![host(0, 100, true, 0), host(1, 50, true, 0)],
                &peers,
            ),
            // came back at a new IP: the other refused it, its list is its own
            director(
                "director-1",
                "10.0.9.3",
                vec![host(0, 100, true, 0), host(1, 100, true, 0)],
                &["10.0.9.3"],
            ),
        ];
        let spec = spec();
        let input = RingInput {
            spec: &spec,
            generation: Some(1),
            directors: &dirs,
            backends: &backends(),
            conflict: None,
        };
        let (st, _) = assess(&input, &DovecotRingStatus::default(), ts(5));
        let stalled = st.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "RingSplit")
        );
        assert!(
            stalled
                .message
                .contains("director-1 shows 127.0.0.12 at 100 vhosts up, director-0 at 50 up")
                && stalled
                    .message
                    .contains("director-0 is not connected to director director-1 (10.0.9.3)"),
            "{}",
            stalled.message
        );
        assert_eq!(st.synced.as_deref(), Some("False"));
    }

    /// The one director of a ring showing `hosts`, and the ring's record with backend-2 left
    /// out at `step`.
    fn lone_director_with_left_out(
        hosts: Vec<RingHost>,
        step: Step,
    ) -> ([DirectorRead; 1], DovecotRingStatus) {
        let dirs = [director("director-0", "10.0.9.1", hosts, &["10.0.9.1"])];
        let prev = DovecotRingStatus {
            out: vec![left_out(2, step)],
            ..Default::default()
        };
        (dirs, prev)
    }

    #[test]
    fn a_left_out_backend_is_kept_out_by_the_ring_but_never_at_an_ip_another_pod_has_now() {
        // a director restarted: it forgot update 0 and down of backend-2, left out at Reset
        let (dirs, prev) = lone_director_with_left_out(
            vec![
                host(0, 100, true, 0),
                host(1, 50, true, 0),
                host(2, 100, true, 0),
            ],
            Step::Reset,
        );
        let spec = spec();
        let bk = backends();
        let input = RingInput {
            spec: &spec,
            generation: Some(1),
            directors: &dirs,
            backends: &bk,
            conflict: None,
        };
        let (st, reassert) = assess(&input, &prev, ts(5));
        let ip = host(2, 0, true, 0).ip;
        assert_eq!(reassert.len(), 1);
        let argv: Vec<String> = reassert[0].argv.iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            argv,
            vec![
                format!("doveadm director update {ip} 0"),
                format!("doveadm director down {ip}"),
                format!("doveadm director flush {ip}"),
            ]
        );
        assert!(
            reassert[0].why.contains("left out at Reset"),
            "{}",
            reassert[0].why
        );
        assert!(
            st.hosts[2]
                .out
                .as_deref()
                .unwrap()
                .contains("left out at Reset")
        );
        // a drained left-out backend (WaitSessions) only needs 0 vhosts
        let prev = DovecotRingStatus {
            out: vec![left_out(2, Step::WaitSessions)],
            ..Default::default()
        };
        let (_, reassert) = assess(&input, &prev, ts(5));
        assert_eq!(
            reassert[0].argv,
            vec![Doveadm::new(None).director_update(ip.parse().unwrap(), 0)]
        );
        // left out once its Dovecot may have stopped, before RingRemove took it down: nobody
        // drives it on, so the ring holds it down (and flushed), not just at 0 vhosts
        let full: Vec<String> = vec![
            format!("doveadm director update {ip} 0"),
            format!("doveadm director down {ip}"),
            format!("doveadm director flush {ip}"),
        ];
        for (step, want) in [
            (Step::StopLmtp, &full[..1]),
            (Step::StopDovecot, &full[..]),
            (Step::RingRemove, &full[..]),
            (Step::Replace, &full[..]),
            (Step::Verify, &full[..]),
        ] {
            let prev = DovecotRingStatus {
                out: vec![left_out(2, step)],
                ..Default::default()
            };
            let (_, reassert) = assess(&input, &prev, ts(5));
            let argv: Vec<String> = reassert[0].argv.iter().map(|a| a.join(" ")).collect();
            assert_eq!(argv, want, "{step}");
        }
        // its old IP now belongs to another backend pod: untouched
        let mut reused = bk.clone();
        reused[2].ip = Some("10.9.9.9".into());
        reused[1].ip = Some(ip.clone());
        let input = RingInput {
            backends: &reused,
            ..input
        };
        assert_eq!(assess(&input, &prev, ts(5)).1, vec![]);
        // a rejoin left out with its new IP (backend-2's entry here, its pod at another IP):
        // held out there while its pod has it, let be once the pod has left it
        let mut rejoin = left_out(0, Step::Verify);
        let l = rejoin.left_out.as_mut().unwrap();
        l.record.new_ip = Some(ip.clone());
        l.record.ip = "10.0.0.99".into();
        let prev = DovecotRingStatus {
            out: vec![rejoin],
            ..Default::default()
        };
        let mut there = bk.clone();
        there[0].ip = Some(ip.clone());
        there[2].ip = Some("10.9.9.9".into());
        let mut gone = there.clone();
        gone[0].ip = Some("10.9.9.8".into());
        for (pods, reasserted) in [(&there, 1), (&gone, 0)] {
            let input = RingInput {
                backends: pods,
                ..input
            };
            assert_eq!(assess(&input, &prev, ts(5)).1.len(), reasserted);
        }
        // one serving there while the ring's record holds another backend out to its room
        // serves on (as a rejoin there waits for room); a drained one is held drained
        let mut full = prev.clone();
        full.out.push(RingHolder {
            dbu: "mail/mx".into(),
            pod: "mx-0".into(),
            ip: "10.0.0.98".into(),
            max_unavailable: 1,
            left_out: None,
            reason: None,
        });
        let input = RingInput {
            backends: &there,
            ..input
        };
        assert_eq!(assess(&input, &full, ts(5)).1, vec![]);
    }

    /// The only host that takes users is kept as it is, but a host whose pod is not Ready takes
    /// nobody: a left-out backend whose Dovecot was stopped, opened by a human while the other
    /// hosts are down, is taken out again.
    #[test]
    fn a_left_out_backend_held_as_the_last_serving_host_only_while_its_pod_is_ready() {
        let (dirs, prev) = lone_director_with_left_out(
            vec![
                host(0, 100, false, 0),
                host(1, 50, false, 0),
                host(2, 80, true, 0),
            ],
            Step::RingRemove,
        );
        let spec = spec();
        let ip = host(2, 0, true, 0).ip;
        for (ready, argv) in [
            (true, vec![]),
            (
                false,
                vec![
                    format!("doveadm director update {ip} 0"),
                    format!("doveadm director down {ip}"),
                    format!("doveadm director flush {ip}"),
                ],
            ),
        ] {
            let mut bk = backends();
            bk[2].ready = ready;
            let input = RingInput {
                spec: &spec,
                generation: Some(1),
                directors: &dirs,
                backends: &bk,
                conflict: None,
            };
            let got: Vec<String> = assess(&input, &prev, ts(5))
                .1
                .iter()
                .flat_map(|r| r.argv.iter().map(|a| a.join(" ")))
                .collect();
            assert_eq!(got, argv, "ready: {ready}");
        }
    }
}
