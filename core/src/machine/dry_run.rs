//! Dry-run rendering: the order of outdated backends and the argv of every step, for
//! `status.plan` and the `plan` command, without running anything.

use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;

use super::decision::{Decision, active};
use super::observed::Observed;
use super::start::{begin_next, outdated};
use crate::api::{DovecotBackendUpgradeStatus, PlannedBackend, PlannedStep, RolloutPlan, Step};
use crate::dovecot::{self, RingHost};
use crate::settings::Settings;

/// The commands each step would run for one backend, as the engine runs them.
pub fn steps_for(s: &Settings, pod: &str, ip: IpAddr, vhosts: u32) -> Vec<PlannedStep> {
    let d = &s.director;
    let b = &s.backend;
    let step = |step, target: &str, commands: Vec<Vec<String>>, note: Option<String>| PlannedStep {
        step,
        target: target.into(),
        commands,
        note,
    };
    vec![
        step(
            Step::Drain,
            "director",
            vec![d.director_update(ip, 0)],
            None,
        ),
        step(
            Step::WaitSessions,
            "director",
            vec![d.director_status(), b.who()],
            Some(format!(
                "poll every {:?} until the director maps no users to {ip} and who shows no sessions on {pod} (who runs on the backend); at most {:?}, then {:?}",
                s.poll_interval, s.drain_timeout, s.on_drain_timeout
            )),
        ),
        step(Step::StopLmtp, "backend", vec![b.service_stop_lmtp()], None),
        step(
            Step::StopDovecot,
            "backend",
            vec![b.stop(), dovecot::read_master_pid(&s.base_dir)],
            Some(format!(
                "then wait up to {:?} for the master process to exit",
                s.stop_timeout
            )),
        ),
        step(
            Step::RingRemove,
            "director",
            vec![d.director_down(ip), d.director_flush(ip)],
            None,
        ),
        step(
            Step::Reset,
            "backend",
            s.reset.clone(),
            Some("only after master.pid shows Dovecot stopped".into()),
        ),
        step(
            Step::Replace,
            "backend",
            Vec::new(),
            Some(format!(
                "delete pod {pod}; wait up to {:?} for it to be Ready at the target revision",
                s.replace_timeout
            )),
        ),
        step(
            Step::Verify,
            "backend",
            {
                let mut v = vec![
                    b.mailbox_list(&s.user),
                    b.mailbox_status(&s.user, &s.mailbox),
                    b.fetch_text(&s.user, &s.mailbox),
                ];
                if s.lmtp_probe.is_some() || s.imap_probe.is_some() {
                    v.insert(0, b.expunge_probes(&s.user));
                    v.push(b.expunge_probes(&s.user));
                }
                v
            },
            {
                let mut probes = Vec::new();
                if let Some(port) = s.lmtp_probe {
                    probes.push(format!(
                        "one probe message over LMTP to the new pod's IP, port {port}"
                    ));
                }
                if let Some(p) = &s.imap_probe {
                    probes.push(format!(
                        "an IMAP login ({:?}) at the new pod's IP, port {}, as {}: find, fetch and expunge the probe message",
                        p.tls, p.port, s.user
                    ));
                }
                (!probes.is_empty()).then(|| {
                    format!(
                        "then {} (probe mail removed by its {} header)",
                        probes.join(", then "),
                        crate::probe::PROBE_HEADER
                    )
                })
            },
        ),
        step(
            Step::RingRestore,
            "director",
            vec![d.director_update(ip, vhosts), d.director_up(ip)],
            Some("with director add <new ip> / remove <old ip> first if the pod IP changed".into()),
        ),
        step(
            Step::Soak,
            "director",
            match s.soak {
                Some(_) => vec![d.director_status(), d.director_user_status(&s.user)],
                None => Vec::new(),
            },
            Some(match s.soak {
                Some(limit) => format!(
                    "until the director maps users to it (at most {}, pod Ready throughout), else drain it again and halt",
                    crate::time::human(limit)
                ),
                None => "off (spec.verify.soak.enabled: false)".into(),
            }),
        ),
    ]
}

/// Most backends listed in a status plan.
pub const PLAN_LIMIT: usize = 100;

/// What the rollout would do from here, without doing it.
pub fn dry_run(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    ring: &[RingHost],
    target: &str,
    now: Timestamp,
) -> RolloutPlan {
    let todo = outdated(s, &obs.pods, target, Some(ring));
    let order: Vec<PlannedBackend> = todo
        .iter()
        .filter(|p| !s.hold.contains(&p.name))
        .map(|p| {
            let host = ring.iter().find(|h| Some(h.ip.as_str()) == p.ip.as_deref());
            // an in-flight backend is drained already: its count to restore is the recorded one
            let recorded = status
                .backends
                .iter()
                .find(|r| r.pod == p.name && active(r));
            PlannedBackend {
                pod: p.name.clone(),
                ip: p.ip.clone(),
                users: host.map_or(0, |h| h.users as i64),
                vhosts: recorded.map_or_else(
                    || host.map_or(0, |h| i64::from(h.vhosts)),
                    |r| i64::from(r.original_vhosts),
                ),
            }
        })
        .collect();
    let steps = order
        .first()
        .and_then(|p| {
            let ip = dovecot::validate_ip(p.ip.as_deref()?).ok()?;
            Some(steps_for(s, &p.pod, ip, p.vhosts as u32))
        })
        .unwrap_or_default();
    let blocked = match begin_next(s, status, obs, &todo, ring, target, now) {
        Some(Decision::Wait { message, .. }) | Some(Decision::Stall { message, .. }) => {
            Some(message)
        }
        _ => None,
    };
    let more = order.len().saturating_sub(PLAN_LIMIT) as i64;
    RolloutPlan {
        order: order.into_iter().take(PLAN_LIMIT).collect(),
        more,
        steps,
        blocked,
    }
}
