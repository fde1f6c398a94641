//! The plan is what runs: a full rollout on real Dovecot under each drain strategy, and for
//! every backend and step the commands the engine ran equal the plan's, command for command.
//!
//! The plan of each backend is taken from a dry run before the rollout; what ran is read from
//! the engine's `dbu::exec` log events (the step scripts' commands, not the engine's own ring
//! reads). A step that polls runs its script once per reconcile: the first run counts in full,
//! later polls add only commands not run before, as the plan lists a poll's commands once.
//! What only the running world can say is shown alike on both sides: PIDs, and the user a Move
//! drain moves and where to. Needs root (see tests/lab).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Rig, now, rig_with, settings};
use dbu_lab::{ImapSession, LabSpec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::engine;
use dovecot_upgrade_operator::machine::{self, Decision};
use dovecot_upgrade_operator::settings::Settings;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One command a step script ran, from the engine's log: (backend, step, argv).
type Ran = (String, String, Vec<String>);

/// Collects the engine's `dbu::exec` events.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Ran>>>);

#[derive(Default)]
struct Fields {
    backend: String,
    step: String,
    argv: String,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "backend" {
            self.backend = v.to_string();
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        match f.name() {
            "backend" => self.backend = format!("{v:?}").trim_matches('"').to_string(),
            "step" => self.step = format!("{v:?}"),
            "argv" => self.argv = format!("{v:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, e: &tracing::Event<'_>, _: Context<'_, S>) {
        if e.metadata().target() != "dbu::exec" {
            return;
        }
        let mut f = Fields::default();
        e.record(&mut f);
        // a Debug-printed Vec<String> of plain arguments is JSON
        let argv: Vec<String> = serde_json::from_str(&f.argv)
            .unwrap_or_else(|e| panic!("argv {:?} not readable: {e}", f.argv));
        let step = f.step.trim_start_matches("Some(").trim_end_matches(')');
        self.0
            .lock()
            .unwrap()
            .push((f.backend, step.to_string(), argv));
    }
}

/// An argv with what only the running world says shown as the plan shows it; `drain`: a
/// WaitSessions command (there `director status <user>` looks up a user to move, whoever it
/// is, even the verify user).
fn shown(drain: bool, argv: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, a) in argv.iter().enumerate() {
        let digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
        let a = match a.strip_prefix("/proc/") {
            Some(rest) if digits(rest) => "/proc/<master pid>".to_string(),
            Some(rest) if rest.strip_suffix("/cmdline").is_some_and(digits) => {
                "/proc/<session pid>/cmdline".to_string()
            }
            _ => a.clone(),
        };
        // the user a Move drain looks up or moves, and where the director sends it
        let prev = |n: usize| i.checked_sub(n).map(|j| argv[j].as_str());
        let a = if prev(1) == Some("move")
            || (drain && prev(1) == Some("status") && prev(2) == Some("director"))
            // the look at one user's sessions right before its move
            || (drain && prev(1) == Some("-1") && prev(2) == Some("who"))
        {
            "<user>".to_string()
        } else if prev(2) == Some("move") {
            "<host>".to_string()
        } else if prev(1) == Some("Message-ID") {
            // the probe's token, made when Verify runs
            format!("<{}@dovecot-upgrade-operator>", machine::steps::PROBE_TOKEN)
        } else {
            a
        };
        // several sessions' titles in one read are the same command as one
        if out.last() != Some(&a) || !a.starts_with("/proc/") {
            out.push(a);
        }
    }
    out
}

/// Commands per (backend, step): each reconcile's run merged as the plan merges polls.
type Runs = BTreeMap<(String, String), Vec<Vec<String>>>;

async fn roll(rig: &Rig, s: &Settings, recorder: &Recorder) -> (Runs, Runs) {
    let lab = &rig.lab;
    let exec = lab.exec();
    // the plan, per backend, before anything runs
    let mut dry = s.clone();
    dry.dry_run = true;
    let status = DovecotBackendUpgradeStatus::default();
    let (decision, obs) = engine::dry_run_once(&dry, &status, &exec, lab, now())
        .await
        .unwrap();
    let Decision::DryRun(p) = decision else {
        panic!("no plan: {decision:?}")
    };
    let ring = obs.ring.clone().unwrap();
    let target = obs.sts.as_ref().unwrap().update_revision.clone().unwrap();
    let mut planned: Runs = BTreeMap::new();
    for b in &p.order {
        let ip = b.ip.as_deref().unwrap().parse().unwrap();
        let at = now();
        for st in machine::steps_for(s, &obs, &ring, &target, &b.pod, ip, b.vhosts as u32, at) {
            let drain = st.step == Step::WaitSessions;
            let cmds = st.commands.iter().map(|c| shown(drain, c)).collect();
            planned.insert((b.pod.clone(), format!("{:?}", st.step)), cmds);
        }
    }
    assert_eq!(p.order.len(), 3, "every backend planned");

    recorder.0.lock().unwrap().clear();
    let mut ran: Runs = BTreeMap::new();
    let out = engine::drive(
        s,
        status,
        &exec,
        lab,
        &engine::NetProbes,
        &now,
        Duration::from_secs(600),
        |o| {
            let run: Vec<Ran> = std::mem::take(&mut *recorder.0.lock().unwrap());
            let Decision::Run { pod, step, .. } = &o.decision else {
                assert!(run.is_empty(), "commands outside a step: {run:?}");
                return;
            };
            let key = (pod.clone(), format!("{step:?}"));
            let cmds = ran.entry(key.clone()).or_default();
            let mut this = Vec::new();
            for (backend, st, argv) in run {
                assert_eq!(
                    (backend.as_str(), st.as_str()),
                    (key.0.as_str(), key.1.as_str())
                );
                this.push(shown(*step == Step::WaitSessions, &argv));
            }
            machine::steps::merge_poll(cmds, this);
        },
    )
    .await
    .unwrap();
    assert_eq!(
        out.status.phase,
        Some(Phase::Completed),
        "{:#?}",
        out.status
    );
    (planned, ran)
}

fn compare(planned: &Runs, ran: &Runs) {
    let mut diffs = Vec::new();
    for (key, cmds) in planned {
        let got = ran.get(key).cloned().unwrap_or_default();
        if &got != cmds {
            let lines = |c: &[Vec<String>]| {
                c.iter()
                    .map(|a| format!("\n    {}", a.join(" ")))
                    .collect::<String>()
            };
            diffs.push(format!(
                "{key:?}\n  plan:{}\n  ran:{}",
                lines(cmds),
                lines(&got)
            ));
        }
    }
    for key in ran.keys().filter(|k| !planned.contains_key(*k)) {
        diffs.push(format!("{key:?} ran but is not in the plan"));
    }
    assert!(
        diffs.is_empty(),
        "the plan is not what ran:\n{}",
        diffs.join("\n")
    );
}

/// `expire`: how long the director keeps a mapping without a session.
fn rig(net: u8, vhosts: Vec<u32>, expire: &str) -> Rig {
    rig_with(|d| {
        let mut spec = LabSpec::new(d, net, vhosts);
        spec.users = 60;
        spec.user_expire = expire.into();
        spec
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_is_what_runs_under_wait_and_move() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone().with_filter(
        tracing_subscriber::filter::Targets::new().with_target("dbu::exec", tracing::Level::DEBUG),
    ));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // Wait: nobody holds a session; the rig's logins left mappings that expire in 10 s, so the
    // drain ends on its own before its ceiling
    let rig_w = rig(62, vec![100, 50, 20], "10s");
    rig_w.lab.new_revision("rev-2", "login_greeting = rev-2");
    let s = settings(json!({"drain": {"strategy": "Wait"}}));
    let (planned, ran) = roll(&rig_w, &s, &recorder).await;
    compare(&planned, &ran);
    drop(rig_w);

    // Move: on every backend one user in IDLE and one mapped without a session, as the plan's
    // simulated world has it; one move per poll, as the plan shows one
    // mappings outlive the rollout: a drain ends because users moved, not expired
    let rig_m = rig(63, vec![100, 100, 100], "15m");
    let lab = &rig_m.lab;
    let dip = lab.spec.director_ip();
    let mut idle: BTreeMap<String, ImapSession> = BTreeMap::new();
    let mut quiet: BTreeMap<String, String> = BTreeMap::new();
    for u in 1..=60 {
        let user = format!("user{u}");
        let mut session = ImapSession::login(&dip, &user).expect("login");
        let host = lab.user_host(&user).unwrap().expect("mapped");
        match idle.entry(host) {
            std::collections::btree_map::Entry::Vacant(v) => {
                session.idle().expect("IDLE");
                v.insert(session);
            }
            std::collections::btree_map::Entry::Occupied(o) => {
                session.logout();
                quiet.insert(o.key().clone(), user);
            }
        }
        if idle.len() == 3 && quiet.len() == 3 {
            break;
        }
    }
    assert_eq!((idle.len(), quiet.len()), (3, 3), "every backend has both");
    lab.new_revision("rev-2", "login_greeting = rev-2");
    let s = settings(json!({"drain": {"strategy": "Move", "maxParallel": 1}}));
    let (planned, ran) = roll(&rig_m, &s, &recorder).await;
    compare(&planned, &ran);
}
