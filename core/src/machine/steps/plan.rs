//! The plan of one backend: every step's script run against the simulated world, and the
//! commands it ran, in order (a poll's commands once).

use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{BackendStatus, PlannedStep, Step};
use crate::dovecot::RingHost;
use crate::settings::Settings;

use super::observed::{Observed, StsView};
use super::sim::SimWorld;
use super::{Action, Input, Next, StepResult};

/// Polls of one step the plan follows; the simulated world settles within two.
const MAX_POLLS: usize = 4;

/// Placeholders for what only the running world says (PIDs), as the plan prints them.
pub const PLACEHOLDERS: [(&str, &str); 2] = [
    ("/proc/4000", "/proc/<master pid>"),
    ("/proc/4242/", "/proc/<session pid>/"),
];

/// The commands each step would run for one backend, as the engine runs them: the step
/// scripts run against [`SimWorld`], where every command succeeds.
#[allow(clippy::too_many_arguments)]
pub fn steps_for(
    s: &Settings,
    obs: &Observed,
    ring: &[RingHost],
    target: &str,
    pod: &str,
    ip: IpAddr,
    vhosts: u32,
    now: Timestamp,
) -> Vec<PlannedStep> {
    let from = obs
        .pods
        .iter()
        .find(|p| p.name == pod)
        .and_then(|p| p.revision.clone());
    let mut rec = record(pod, &ip.to_string(), vhosts, from, now);
    let mut world = SimWorld::new(s, &rec, ring, target, vhosts);
    // the world the scripts read, without the pods (they read their pod through an action):
    // the plan of each backend then costs nothing per pod of the StatefulSet
    let mut obs = Observed {
        sts: Some(StsView {
            update_revision: Some(target.to_string()),
            ..obs.sts.clone().unwrap_or(StsView {
                update_strategy: "OnDelete".into(),
                update_revision: None,
                replicas: 0,
                ordinals_start: 0,
                current: true,
                template_revision: None,
                termination_grace: None,
            })
        }),
        director: obs.director.clone().or_else(|| Some("<director>".into())),
        directors: obs.directors.clone(),
        ..Observed::default()
    };
    let mut out = Vec::new();
    for step in Step::ALL.iter().copied().filter(|x| *x != Step::Done) {
        rec.step = step;
        let mut commands: Vec<Vec<String>> = Vec::new();
        for _ in 0..MAX_POLLS {
            obs.ring = Some(world.ring());
            let input = Input {
                s,
                rec: &rec,
                obs: &obs,
                now,
                ceiling_users: None,
            };
            let mut seen = Vec::new();
            let mut run = Vec::new();
            let result = loop {
                match super::step(input, &seen) {
                    Next::Act(action) => {
                        if let Action::Exec { argv, .. } = &action {
                            let mut shown = placeholders(argv);
                            // the probe's token is made when the step runs, not now
                            if let Some(t) = &rec.probe_token {
                                shown = shown.iter().map(|a| a.replace(t, PROBE_TOKEN)).collect();
                            }
                            run.push(shown);
                        }
                        let output = world.answer(s, &action);
                        seen.push((action, output));
                    }
                    Next::Done(r) => break r,
                }
            };
            merge_poll(&mut commands, run);
            match result {
                StepResult::Advanced {
                    new_ip,
                    pod_uid,
                    layout,
                    ..
                } => {
                    if let Some(ip) = new_ip.filter(|n| *n != rec.ip) {
                        rec.new_ip = Some(ip);
                    }
                    rec.bind_pod(step, pod_uid.as_deref());
                    if let Some(l) = layout {
                        rec.mail_layout = Some(*l);
                    }
                    break;
                }
                // time passes only while a step polls
                StepResult::Waiting { .. } | StepResult::Draining { .. } => world.tick(),
                // written, then acted on by the next run, as the engine does
                StepResult::Intend(intent) => intent.record(&mut rec),
                // the simulated world never fails: a script that does is a bug the tests show
                StepResult::Rewind { .. }
                | StepResult::Failed(_)
                | StepResult::Transient { .. } => {
                    break;
                }
            }
        }
        out.push(PlannedStep {
            step,
            target: super::target(step).into(),
            commands,
            note: super::note(step, s, pod, &ip.to_string()),
        });
    }
    out
}

/// A backend's record as Begin writes it.
pub(super) fn record(
    pod: &str,
    ip: &str,
    vhosts: u32,
    from: Option<String>,
    now: Timestamp,
) -> BackendStatus {
    BackendStatus::begin(pod, ip, from, vhosts, Time(now))
}

/// Adds one run of a step's script to its commands: the first run that ran any in full, a
/// later poll only with the commands the earlier ones did not run (a poll's commands are
/// listed once; a run that only wrote an intent ran none).
pub fn merge_poll(commands: &mut Vec<Vec<String>>, run: Vec<Vec<String>>) {
    let first = commands.is_empty();
    for argv in run {
        if first || !commands.contains(&argv) {
            commands.push(argv);
        }
    }
}

/// How the plan shows the probe message's token (made when Verify runs).
pub const PROBE_TOKEN: &str = "{probe token}";

/// An argv with the simulated world's PIDs shown as placeholders.
pub fn placeholders(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            PLACEHOLDERS
                .iter()
                .fold(a.clone(), |a, (from, to)| a.replace(from, to))
        })
        .collect()
}
