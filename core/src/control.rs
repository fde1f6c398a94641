//! What `kubectl dbu` does, pure: the patch each control verb makes, and the status, ring and plan it prints.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::{APPROVE_ANNOTATION, DovecotBackendUpgrade, RETRY_ANNOTATION};
use crate::text::bounded;
use crate::time::{human, until};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Status,
    Plan,
    Pause,
    Resume,
    Abort,
    Approve(Option<String>),
    Retry,
    Skip(String),
    Hold(String),
    Release(String),
    /// Reads a DovecotRing.
    Ring,
    /// Releases a left-out backend from a DovecotRing.
    RingRelease(String),
}

impl Verb {
    /// Whether the verb changes the DBU (a patch), rather than only reading it.
    pub fn writes(&self) -> bool {
        !matches!(self, Verb::Status | Verb::Plan | Verb::Ring)
    }

    /// Whether NAME is a DovecotRing rather than a DovecotBackendUpgrade.
    pub fn on_ring(&self) -> bool {
        matches!(self, Verb::Ring | Verb::RingRelease(_))
    }
}

/// The merge patch a control verb makes, from the DBU as read. It carries the copy's
/// resourceVersion, so that a concurrent change (a list edited meanwhile) is a conflict, not
/// lost. `now` makes the retry token. Err: the verb cannot apply to this DBU.
pub fn patch(verb: &Verb, dbu: &DovecotBackendUpgrade, now: Timestamp) -> Result<Value, String> {
    let spec = &dbu.spec;
    let mut p = match verb {
        Verb::Status | Verb::Plan | Verb::Ring => return Err("reads only".into()),
        Verb::RingRelease(_) => return Err("a DovecotRing verb".into()),
        Verb::Pause => json!({"spec": {"paused": true}}),
        Verb::Resume => json!({"spec": {"paused": false, "abort": false}}),
        Verb::Abort => json!({"spec": {"abort": true}}),
        Verb::Approve(rev) => {
            let rev = rev
                .clone()
                .or_else(|| spec.revision.clone())
                .or_else(|| dbu.status.as_ref().and_then(|s| s.target_revision.clone()))
                .ok_or("no revision to approve yet: name one (kubectl dbu approve NAME REV)")?;
            json!({"spec": {"canary": {"approvedRevision": rev}}})
        }
        Verb::Retry => json!({"metadata": {"annotations": {
            RETRY_ANNOTATION: format!("kubectl-dbu-{}", now.as_second())
        }}}),
        Verb::Skip(pod) => json!({"spec": {"skip": with(&spec.skip, pod)}}),
        Verb::Hold(pod) => json!({"spec": {"hold": with(&spec.hold, pod)}}),
        Verb::Release(pod) => {
            if !spec.hold.contains(pod) {
                return Err(format!("{pod} is not in spec.hold"));
            }
            let rest: Vec<&String> = spec.hold.iter().filter(|p| *p != pod).collect();
            json!({"spec": {"hold": rest}})
        }
    };
    if let Some(rv) = &dbu.metadata.resource_version {
        p["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(p)
}

fn with(list: &[String], pod: &str) -> Vec<String> {
    let mut l = list.to_vec();
    if !l.iter().any(|p| p == pod) {
        l.push(pod.to_string());
    }
    l
}

/// One line saying what a verb did, for the terminal.
pub fn done(verb: &Verb, name: &str) -> String {
    let what = match verb {
        Verb::Status | Verb::Plan => "read".to_string(),
        Verb::Pause => "paused".into(),
        Verb::Resume => "resumed".into(),
        Verb::Abort => "aborting".into(),
        Verb::Approve(_) => "canary approved".into(),
        Verb::Retry => "retry requested".into(),
        Verb::Skip(p) => format!("{p} skipped"),
        Verb::Hold(p) => format!("{p} held"),
        Verb::Release(p) => format!("{p} released"),
        Verb::Ring => "read".into(),
        Verb::RingRelease(p) => {
            return format!("dovecotring/{name}: {p} released; the ring no longer keeps it out");
        }
    };
    format!("dovecotbackendupgrade/{name}: {what}")
}

/// The merge patch of `ring-release`: the annotation `mailops.io/release` naming the pod, with
/// a token so that releasing the same pod again later is a new value; under the ring's
/// resourceVersion. Err: the pod is not a left-out backend of the ring.
pub fn ring_release_patch(
    ring: &crate::api::DovecotRing,
    pod: &str,
    now: Timestamp,
) -> Result<Value, String> {
    let out = ring
        .status
        .as_ref()
        .map(|s| s.out.as_slice())
        .unwrap_or_default();
    match out.iter().find(|h| h.pod == pod) {
        Some(h) if h.left_out.is_some() => {}
        Some(h) => {
            return Err(format!(
                "{pod} is held out by DovecotBackendUpgrade {}, which exists: steer it there (skip, abort, retry)",
                h.dbu
            ));
        }
        None => return Err(format!("{pod} is not out of the ring")),
    }
    let mut p = json!({"metadata": {"annotations": {
        crate::api::RELEASE_ANNOTATION: format!("{pod}@{}", now.as_second())
    }}});
    if let Some(rv) = &ring.metadata.resource_version {
        p["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(p)
}

/// `kubectl dbu ring`: conditions, directors, and every host with who holds it out.
pub fn ring_report(ring: &crate::api::DovecotRing) -> String {
    let name = ring.metadata.name.as_deref().unwrap_or("?");
    let st = ring.status.clone().unwrap_or_default();
    let mut out = String::new();
    let sets: Vec<&str> = ring.spec.stateful_sets().collect();
    let _ = writeln!(
        out,
        "dovecotring/{name}: StatefulSets {}; at most {} out, at least {} available",
        sets.join(", "),
        ring.spec.max_unavailable,
        ring.spec.min_available_backends
    );
    for c in &st.conditions {
        if c.status == "True" || c.type_ == "Ready" {
            let _ = writeln!(
                out,
                "  {}={} {}: {}",
                c.type_,
                c.status,
                c.reason,
                bounded(&c.message, 300)
            );
        }
    }
    let _ = writeln!(
        out,
        "
{:<24} {:<16} {:>7} {:>6}",
        "DIRECTOR", "IP", "SYNCED", "HOSTS"
    );
    for d in &st.directors {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:>7} {:>6}",
            d.pod,
            d.ip.as_deref().unwrap_or("-"),
            d.synced,
            d.hosts.map_or("-".to_string(), |n| n.to_string())
        );
    }
    let _ = writeln!(
        out,
        "
{:<16} {:<24} {:>6} {:<4} {:>6}  OUT",
        "HOST", "POD", "VHOSTS", "UP", "USERS"
    );
    for h in &st.hosts {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>6} {:<4} {:>6}  {}",
            h.ip,
            h.pod.as_deref().unwrap_or("-"),
            h.vhosts,
            if h.up { "up" } else { "down" },
            h.users,
            h.out.as_deref().unwrap_or("")
        );
    }
    for h in st
        .out
        .iter()
        .filter(|h| !st.hosts.iter().any(|x| x.ip == h.ip))
    {
        let _ = writeln!(
            out,
            "{:<16} {:<24} (not in the ring)  out: {}",
            h.ip, h.pod, h.dbu
        );
    }
    out
}

/// `kubectl dbu status`: the summary, the conditions, a table of backends and the last error.
pub fn status_report(dbu: &DovecotBackendUpgrade, now: Timestamp) -> String {
    let name = dbu.metadata.name.as_deref().unwrap_or("?");
    let mut out = String::new();
    let Some(st) = &dbu.status else {
        let _ = writeln!(out, "{name}: no status yet (the operator has not seen it)");
        return out;
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let generation = dbu.metadata.generation;
    let _ = writeln!(
        out,
        "{name}: phase {}, {} backends upgraded, target revision {}{}",
        st.phase.map_or("-".to_string(), |p| format!("{p:?}")),
        opt(&st.progress),
        opt(&st.target_revision),
        dbu.spec
            .revision
            .as_ref()
            .map_or(String::new(), |r| format!(" (spec.revision {r})"))
    );
    if st.observed_generation != generation {
        let _ = writeln!(
            out,
            "  the operator has not observed generation {} yet (status is for {})",
            generation.unwrap_or_default(),
            st.observed_generation
                .map_or("none".to_string(), |g| g.to_string())
        );
    }
    for c in &st.conditions {
        let since = now
            .since(c.last_transition_time.0)
            .ok()
            .and_then(|s| s.total(k8s_openapi::jiff::Unit::Second).ok())
            .map_or(String::new(), |s| {
                format!(
                    " for {}",
                    crate::time::human(std::time::Duration::from_secs(s.max(0.0) as u64))
                )
            });
        let _ = writeln!(
            out,
            "  {:<12}{:<6}{}{}{}",
            c.type_,
            c.status,
            c.reason,
            since,
            if c.message.is_empty() {
                String::new()
            } else {
                format!(": {}", bounded(&c.message, 300))
            }
        );
    }
    if !st.backends.is_empty() {
        let rows = st
            .backends
            .iter()
            .map(|r| {
                vec![
                    r.pod.clone(),
                    format!("{:?}", r.step),
                    if r.failed {
                        "failed, out of the ring"
                    } else if r.removed {
                        "removed"
                    } else if r.step == crate::api::Step::Done {
                        "done"
                    } else {
                        "in flight"
                    }
                    .into(),
                    match &r.new_ip {
                        Some(n) => format!("{} -> {n}", r.ip),
                        None => r.ip.clone(),
                    },
                    r.original_vhosts.to_string(),
                    bounded(r.message.as_deref().unwrap_or(""), 120),
                ]
            })
            .collect();
        out.push_str(&table(
            &["BACKEND", "STEP", "STATE", "IP", "VHOSTS", "MESSAGE"],
            rows,
            "  ",
            "  ",
        ));
    }
    for r in st
        .backends
        .iter()
        .filter(|r| r.step == crate::api::Step::WaitSessions && !r.failed)
    {
        let Some(d) = &r.drain else { continue };
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "drain of {}: {} users left ({} without a session), {} sessions live, {} sessions and {} sessionless users moved{}",
            r.pod,
            d.users_left,
            opt(d.without_session),
            opt(d.sessions),
            d.sessions_moved,
            d.users_moved,
            d.predicted_end.as_ref().map_or(String::new(), |t| {
                format!(", ends in about {}", human(until(t.0, now)))
            })
        );
    }
    if let Some((pod, e)) = st
        .backends
        .iter()
        .filter_map(|r| r.last_error.as_ref().map(|e| (&r.pod, e)))
        .next_back()
    {
        let _ = writeln!(
            out,
            "last error: {pod} at {:?}: {}{}: {}",
            e.step,
            if e.argv.is_empty() {
                "no command".to_string()
            } else {
                format!("{:?}", e.argv.join(" "))
            },
            e.exit_code
                .map_or(String::new(), |c| format!(" exited {c}")),
            bounded(&e.stderr, 400)
        );
    }
    if let Some(approve) = dbu
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPROVE_ANNOTATION))
    {
        let _ = writeln!(out, "approved by annotation: {approve}");
    }
    out
}

/// The steps of one backend as both plan commands print them: each argv on its own line,
/// quoted where a shell would split or expand it, so a line is the exact argv.
pub fn steps_text(steps: &[crate::api::PlannedStep]) -> String {
    let mut out = String::new();
    for s in steps {
        let _ = writeln!(out, "  {:?} (in the {})", s.step, s.target);
        for c in &s.commands {
            let line: Vec<String> = c.iter().map(|a| quoted(a)).collect();
            let _ = writeln!(out, "    $ {}", line.join(" "));
        }
        if let Some(n) = &s.note {
            let _ = writeln!(out, "    {n}");
        }
    }
    out
}

/// One argument as a POSIX shell reads it back unchanged.
fn quoted(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// One backend's steps in a printed plan.
pub struct BackendSteps<'a> {
    pub pod: &'a str,
    pub ip: Option<&'a str>,
    pub steps: &'a [crate::api::PlannedStep],
}

/// A rollout plan as both plan commands print it (`kubectl dbu plan` from status, the
/// operator's `plan -f` against the cluster): why it would not start, the backends in order,
/// then the steps of each backend given, every argv exact.
pub fn plan_text(plan: &crate::api::RolloutPlan, backends: &[BackendSteps<'_>]) -> String {
    let mut out = String::new();
    if let Some(b) = &plan.blocked {
        let _ = writeln!(out, "would not start now: {b}");
    }
    let _ = writeln!(
        out,
        "order ({} backends):",
        plan.order.len() as i64 + plan.more
    );
    for (i, b) in plan.order.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {} ({}): {} users, {} vhosts",
            i + 1,
            b.pod,
            b.ip.as_deref().unwrap_or("no IP"),
            b.users,
            b.vhosts
        );
    }
    if plan.more > 0 {
        let _ = writeln!(out, "  ... and {} more", plan.more);
    }
    for b in backends {
        let _ = writeln!(out, "\n{} ({}):", b.pod, b.ip.unwrap_or("no IP"));
        out.push_str(&steps_text(b.steps));
    }
    out
}

/// `kubectl dbu plan`: the dry run in status.plan (the steps of its first backend; the others
/// differ only by pod and IP). Err: there is none for this generation.
pub fn plan_report(dbu: &DovecotBackendUpgrade) -> Result<String, String> {
    let name = dbu.metadata.name.as_deref().unwrap_or("?");
    let st = dbu.status.as_ref();
    let Some(plan) = st.and_then(|s| s.plan.as_ref()) else {
        return Err(format!(
            "{name} has no plan: set spec.dryRun=true (kubectl patch dbu {name} --type merge -p '{{\"spec\":{{\"dryRun\":true}}}}'), wait for phase Planned, then ask again"
        ));
    };
    let mut out = String::new();
    if !dbu.spec.dry_run || st.and_then(|s| s.observed_generation) != dbu.metadata.generation {
        let _ = writeln!(
            out,
            "note: this plan is from an earlier generation or dry run; it may be out of date"
        );
    }
    let first: Vec<BackendSteps<'_>> = plan
        .order
        .first()
        .map(|b| BackendSteps {
            pod: &b.pod,
            ip: b.ip.as_deref(),
            steps: &plan.steps,
        })
        .into_iter()
        .collect();
    out.push_str(&plan_text(plan, &first));
    Ok(out)
}

/// Age as kubectl prints it (`45s`, `12m`, `3h`, `5d`).
fn age(
    from: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Timestamp,
) -> String {
    let Some(t) = from else { return "-".into() };
    let s = crate::time::elapsed(t, now).as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Rows under a header, each column as wide as its widest cell, as `kubectl get` prints: each
/// line starts with `indent`, and `gap` stands between columns.
fn table(head: &[&str], rows: Vec<Vec<String>>, indent: &str, gap: &str) -> String {
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    let all: Vec<Vec<String>> = std::iter::once(head).chain(rows).collect();
    let width: Vec<usize> = (0..all[0].len())
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &all {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = width[i]))
            .collect();
        let _ = writeln!(out, "{}", format!("{indent}{}", cells.join(gap)).trim_end());
    }
    out
}

/// `kubectl dbu list`: one line per DBU, with the namespace column under `-A`.
pub fn list_report(dbus: &[DovecotBackendUpgrade], all_namespaces: bool, now: Timestamp) -> String {
    if dbus.is_empty() {
        return "No DovecotBackendUpgrades found.\n".into();
    }
    let rows = dbus
        .iter()
        .map(|d| {
            let st = d.status.clone().unwrap_or_default();
            let waiting = st
                .conditions
                .iter()
                .find(|c| c.status == "True" && c.type_ != "Ready")
                .map(|c| c.reason.clone())
                .unwrap_or_default();
            let mut row = vec![
                d.metadata.name.clone().unwrap_or_default(),
                st.phase.map_or("-".into(), |p| format!("{p:?}")),
                st.progress.unwrap_or_else(|| "-".into()),
                st.current.unwrap_or_else(|| "-".into()),
                if waiting.is_empty() {
                    "-".into()
                } else {
                    waiting
                },
                age(d.metadata.creation_timestamp.as_ref(), now),
            ];
            if all_namespaces {
                row.insert(0, d.metadata.namespace.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut head = vec!["NAME", "PHASE", "PROGRESS", "CURRENT", "REASON", "AGE"];
    if all_namespaces {
        head.insert(0, "NAMESPACE");
    }
    table(&head, rows, "", "   ")
}

/// `kubectl dbu rings`: one line per DovecotRing, with the namespace column under `-A`.
pub fn rings_report(
    rings: &[crate::api::DovecotRing],
    all_namespaces: bool,
    now: Timestamp,
) -> String {
    if rings.is_empty() {
        return "No DovecotRings found.\n".into();
    }
    let rows = rings
        .iter()
        .map(|r| {
            let st = r.status.clone().unwrap_or_default();
            let n = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            let mut row = vec![
                r.metadata.name.clone().unwrap_or_default(),
                n(st.host_count.map(|h| h.to_string())),
                format!("{}/{}", st.out_count, r.spec.max_unavailable),
                n(st.users.map(|u| u.to_string())),
                n(st.synced.clone()),
                st.out
                    .iter()
                    .map(|h| format!("{} ({})", h.pod, h.dbu))
                    .collect::<Vec<_>>()
                    .join(", "),
                age(r.metadata.creation_timestamp.as_ref(), now),
            ];
            if row[5].is_empty() {
                row[5] = "-".into();
            }
            if all_namespaces {
                row.insert(0, r.metadata.namespace.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut head = vec![
        "NAME",
        "HOSTS",
        "OUT",
        "USERS",
        "SYNCED",
        "HELD OUT BY",
        "AGE",
    ];
    if all_namespaces {
        head.insert(0, "NAMESPACE");
    }
    table(&head, rows, "", "   ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Step, StepError};
    use crate::fixtures::{self, ts};
    use serde_json::json;

    fn dbu(spec: serde_json::Value, status: serde_json::Value) -> DovecotBackendUpgrade {
        let mut v = fixtures::dbu_json(json!({}), spec);
        v["status"] = status;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn each_control_is_a_spec_or_annotation_patch_guarded_by_the_resource_version() {
        let d = dbu(
            json!({"skip": ["backend-0"], "hold": ["backend-2"]}),
            json!({"targetRevision": "backend-7d9"}),
        );
        let now = ts(0);
        let table: Vec<(Verb, serde_json::Value)> = vec![
            (Verb::Pause, json!({"spec": {"paused": true}})),
            (
                Verb::Resume,
                json!({"spec": {"paused": false, "abort": false}}),
            ),
            (Verb::Abort, json!({"spec": {"abort": true}})),
            (
                Verb::Approve(None),
                json!({"spec": {"canary": {"approvedRevision": "backend-7d9"}}}),
            ),
            (
                Verb::Approve(Some("x".into())),
                json!({"spec": {"canary": {"approvedRevision": "x"}}}),
            ),
            (
                Verb::Retry,
                json!({"metadata": {"annotations": {"mailops.io/retry": format!("kubectl-dbu-{}", now.as_second())}}}),
            ),
            (
                Verb::Skip("backend-4".into()),
                json!({"spec": {"skip": ["backend-0", "backend-4"]}}),
            ),
            (
                Verb::Skip("backend-0".into()),
                json!({"spec": {"skip": ["backend-0"]}}),
            ),
            (
                Verb::Hold("backend-1".into()),
                json!({"spec": {"hold": ["backend-2", "backend-1"]}}),
            ),
            (
                Verb::Release("backend-2".into()),
                json!({"spec": {"hold": []}}),
            ),
        ];
        for (verb, mut want) in table {
            want["metadata"]["resourceVersion"] = json!("10");
            assert_eq!(patch(&verb, &d, now), Ok(want), "{verb:?}");
            assert!(verb.writes());
        }
        assert!(patch(&Verb::Release("backend-9".into()), &d, now).is_err());
        assert!(!Verb::Status.writes() && !Verb::Plan.writes());
        // spec.revision is what a Git author approves
        let with_rev = dbu(
            json!({"revision": "2.3.21-cfg7"}),
            json!({"targetRevision": "backend-7d9"}),
        );
        assert_eq!(
            patch(&Verb::Approve(None), &with_rev, now).unwrap()["spec"]["canary"]["approvedRevision"],
            "2.3.21-cfg7"
        );
        let fresh = dbu(json!({}), json!({}));
        assert!(patch(&Verb::Approve(None), &fresh, now).is_err());
    }

    #[test]
    fn the_ring_shows_its_hosts_and_releases_only_a_left_out_backend() {
        let mut v = crate::fixtures::ring_json(json!({}));
        v["metadata"]["resourceVersion"] = json!("17");
        v["status"] = json!({
            "outCount": 2,
            "out": [
                {"dbu": "mail/gone", "pod": "backend-2", "ip": "10.0.0.3", "maxUnavailable": 1,
                 "leftOut": {"statefulSet": "backend", "record": {"pod": "backend-2", "ip": "10.0.0.3",
                   "fromRevision": "r1", "originalVhosts": 100, "step": "Reset", "stepStarted": "2026-11-28T10:00:00Z"}}},
                {"dbu": "mail/roll", "pod": "backend-0", "ip": "10.0.0.1", "maxUnavailable": 1}
            ],
            "hosts": [{"ip": "10.0.0.3", "pod": "backend-2", "vhosts": 0, "up": false, "users": 0,
                       "out": "left out at Reset by DovecotBackendUpgrade mail/gone, deleted"}],
            "directors": [{"pod": "director-0", "ip": "10.0.9.1", "synced": true, "hosts": 3}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "RingSynced",
                            "message": "1 directors agree on 3 hosts; 2 out", "lastTransitionTime": "2026-11-28T10:00:00Z"}]
        });
        let ring: crate::api::DovecotRing = serde_json::from_value(v).unwrap();
        let report = ring_report(&ring);
        assert!(
            report.contains("dovecotring/mail: StatefulSets backend; at most 1 out"),
            "{report}"
        );
        assert!(report.contains("left out at Reset"), "{report}");
        assert!(
            report.contains("10.0.0.1") && report.contains("(not in the ring)"),
            "{report}"
        );
        let p =
            ring_release_patch(&ring, "backend-2", Timestamp::from_second(100).unwrap()).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"annotations": {"mailops.io/release": "backend-2@100"}, "resourceVersion": "17"}})
        );
        let e = ring_release_patch(&ring, "backend-0", Timestamp::from_second(100).unwrap())
            .unwrap_err();
        assert!(e.contains("mail/roll, which exists"), "{e}");
        assert!(
            ring_release_patch(&ring, "backend-9", Timestamp::from_second(100).unwrap()).is_err()
        );
    }

    #[test]
    fn status_names_every_backend_and_the_last_error() {
        let mut failed = fixtures::record(1, Step::Verify, ts(0), "old", 50);
        failed.failed = true;
        failed.new_ip = Some("10.88.0.9".into());
        failed.last_error = Some(StepError {
            step: Step::Verify,
            argv: vec!["doveadm".into(), "mailbox".into(), "list".into()],
            exit_code: Some(67),
            stderr: "Error: user not found".into(),
            reason: None,
        });
        let done = fixtures::record(0, Step::Done, ts(0), "old", 100);
        let status = json!({
            "observedGeneration": 3, "phase": "Failed", "progress": "1/3",
            "targetRevision": "backend-7d9",
            "conditions": [{"type": "Stalled", "status": "True", "reason": "BackendFailed",
                "message": "backend backend-1 failed at step Verify", "lastTransitionTime": "2027-01-15T08:00:00Z"}],
            "backends": [done, failed],
        });
        let d = dbu(json!({"revision": "r7"}), status);
        let out = status_report(&d, ts(120));
        for want in [
            "roll: phase Failed, 1/3 backends upgraded, target revision backend-7d9 (spec.revision r7)",
            "not observed generation 4",
            "Stalled     True  BackendFailed for 2m: backend backend-1 failed at step Verify",
            "BACKEND    STEP    STATE",
            "backend-0  Done    done",
            "backend-1  Verify  failed, out of the ring  127.0.0.12 -> 10.88.0.9  50",
            "last error: backend-1 at Verify: \"doveadm mailbox list\" exited 67: Error: user not found",
        ] {
            assert!(out.contains(want), "{want:?} missing from:\n{out}");
        }
        let none: DovecotBackendUpgrade =
            serde_json::from_value(fixtures::dbu_json(json!({}), json!({}))).unwrap();
        assert!(status_report(&none, ts(0)).contains("no status yet"));
    }

    #[test]
    fn status_shows_a_drain_in_progress() {
        let mut r = fixtures::record(2, Step::WaitSessions, ts(0), "old", 20);
        r.drain = Some(crate::api::DrainProgress {
            users_left: 41,
            without_session: Some(30),
            sessions: Some(12),
            sessions_moved: 7,
            users_moved: 0,
            unknown_sessions: None,
            users_listed: None,
            predicted_end: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(90))),
            observed: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(30)),
        });
        let d = dbu(json!({}), json!({"phase": "Progressing", "backends": [r]}));
        let out = status_report(&d, ts(30));
        let want = "drain of backend-2: 41 users left (30 without a session), 12 sessions live, 7 sessions and 0 sessionless users moved, ends in about 60s";
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }

    #[test]
    fn plan_prints_order_and_argv_or_says_how_to_get_one() {
        let d = dbu(
            json!({"dryRun": true}),
            json!({"observedGeneration": 4, "plan": {
                "order": [{"pod": "backend-2", "ip": "10.88.0.7", "users": 0, "vhosts": 20}],
                "more": 2,
                "steps": [{"step": "Drain", "target": "director",
                    "commands": [["doveadm", "director", "update", "10.88.0.7", "0"]]}]
            }}),
        );
        let out = plan_report(&d).unwrap();
        for want in [
            "order (3 backends):",
            "backend-2 (10.88.0.7):\n  Drain",
            "1. backend-2 (10.88.0.7): 0 users, 20 vhosts",
            "... and 2 more",
            "Drain (in the director)",
            "$ doveadm director update 10.88.0.7 0",
        ] {
            assert!(out.contains(want), "{want:?} missing from:\n{out}");
        }
        assert!(!out.contains("out of date"), "{out}");
        let stale = dbu(
            json!({}),
            d.status
                .as_ref()
                .map(|s| serde_json::to_value(s).unwrap())
                .unwrap(),
        );
        assert!(plan_report(&stale).unwrap().contains("out of date"));
        let err = plan_report(&dbu(json!({}), json!({}))).unwrap_err();
        assert!(err.contains("dryRun"), "{err}");
    }

    #[test]
    fn lists_dbus_and_rings_as_kubectl_get_does() {
        let now = ts(1_000_000);
        let mut d = dbu(
            json!({}),
            json!({"phase": "Progressing", "progress": "1/3", "current": "backend-1",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Progressing", "message": "", "lastTransitionTime": "1970-01-12T13:46:40Z"},
                {"type": "Reconciling", "status": "True", "reason": "StepInProgress", "message": "", "lastTransitionTime": "1970-01-12T13:46:40Z"}
            ]}),
        );
        d.metadata.namespace = Some("mail".into());
        d.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            ts(1_000_000 - 3 * 3600),
        ));
        let one = list_report(std::slice::from_ref(&d), false, now);
        let lines: Vec<&str> = one.lines().collect();
        assert_eq!(
            lines[0],
            "NAME   PHASE         PROGRESS   CURRENT     REASON           AGE"
        );
        assert_eq!(
            lines[1],
            "roll   Progressing   1/3        backend-1   StepInProgress   3h"
        );
        let all = list_report(&[d], true, now);
        assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
        assert!(
            all.lines().nth(1).unwrap().starts_with("mail        roll"),
            "{all}"
        );
        assert_eq!(
            list_report(&[], false, now),
            "No DovecotBackendUpgrades found.\n"
        );
        let ring: crate::api::DovecotRing = serde_json::from_value(json!({
            "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
            "metadata": {"name": "main", "namespace": "mail"},
            "spec": {"directors": {"selector": {"matchLabels": {"app": "director"}}},
                "backends": [{"statefulSet": "backend"}], "maxUnavailable": 1},
            "status": {"hostCount": 3, "outCount": 1, "users": 40, "synced": "True",
                "out": [{"dbu": "mail/roll", "pod": "backend-1", "ip": "10.0.0.2", "maxUnavailable": 1}]}
        }))
        .unwrap();
        let r = rings_report(&[ring], false, now);
        assert_eq!(
            r.lines().nth(1),
            Some("main   3       1/1   40      True     backend-1 (mail/roll)   -"),
            "{r}"
        );
    }
}
