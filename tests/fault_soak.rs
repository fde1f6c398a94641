//! A randomized fault soak on real Dovecot: rollouts in a row on a ring of two directors and
//! three backends with live IMAP and LMTP traffic, each rollout with 1-5 faults drawn at random
//! passes; every director's ring is sampled every 200 ms throughout.
//!
//! `DBU_SOAK_ROLLOUTS` (10 in CI; `scripts/fault-soak.sh` runs 100 for BENCHMARKS.md) and
//! `DBU_SOAK_SEED` (printed, so that any run can be repeated).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{report, rig_with, ring_of};
use dbu_lab::faults::{FaultKind, FaultyExec};
use dbu_lab::traffic::{Traffic, TrafficSpec};
use dbu_lab::{Lab, LabSpec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase};
use dovecot_upgrade_operator::engine::{self, Cluster};
use serde_json::json;

const DIRECTORS: [&str; 2] = ["director-0", "director-1"];

/// What can go wrong during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// The operator dies in the middle of a pass (its status is never written).
    OperatorKill,
    /// director-1 restarts (it re-learns the ring's state from director-0).
    DirectorRestart,
    /// One exec's connection drops, before or after the command ran.
    ExecDrop,
    /// A status write or a write of the ring's record conflicts (409).
    WriteConflict,
    /// A backend pod is deleted by hand (the StatefulSet recreates it at the update revision).
    PodDeletion,
    /// The rollout is paused for a few passes.
    PauseResume,
    /// The rollout is aborted, then resumed.
    AbortRetry,
    /// A human takes a backend that is not in flight down (and up again after the rollout).
    HumanDown,
}

const FAULTS: [Fault; 8] = [
    Fault::OperatorKill,
    Fault::DirectorRestart,
    Fault::ExecDrop,
    Fault::WriteConflict,
    Fault::PodDeletion,
    Fault::PauseResume,
    Fault::AbortRetry,
    Fault::HumanDown,
];

/// xorshift: reproducible per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the sampler saw of every director.
#[derive(Debug, Default)]
struct Sampled {
    samples: u64,
    most_out: usize,
    violations: Vec<String>,
}

/// Samples every director every 200 ms until `stop`: at most one backend out (vhosts 0 or
/// down) that a human did not take down, and some host serving.
fn sample(lab: &Lab, human: &Mutex<BTreeSet<String>>, stop: &AtomicBool) -> Sampled {
    let mut s = Sampled::default();
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for d in DIRECTORS {
            let Ok(out) = lab.doveadm(d, &["-f", "json", "director", "status"]) else {
                continue; // restarting or busy syncing: the next sample counts
            };
            let Ok(ring) = dovecot_upgrade_operator::dovecot::parse_director_status(&out) else {
                continue;
            };
            s.samples += 1;
            let human = human.lock().unwrap().clone();
            let out: Vec<&str> = ring
                .iter()
                .filter(|h| (h.vhosts == 0 || !h.up) && !human.contains(&h.ip))
                .map(|h| h.ip.as_str())
                .collect();
            s.most_out = s.most_out.max(out.len());
            let at = t0.elapsed().as_secs_f64();
            if out.len() > 1 {
                s.violations
                    .push(format!("{at:.1}s {d}: {} out at once: {out:?}", out.len()));
            }
            if !ring.iter().any(|h| h.up && h.vhosts > 0) {
                s.violations.push(format!("{at:.1}s {d}: no host serving"));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    s
}

/// What one rollout went through.
#[derive(Debug, Default)]
struct Rollout {
    faults: Vec<Fault>,
    /// When each fault was applied.
    timeline: Vec<(Instant, Fault)>,
    /// When the rollout started and ended.
    span: Option<(Instant, Instant)>,
    passes: u32,
    killed: u32,
    retries: u32,
    /// Hosts not back at their count and state after the rollout.
    left: Vec<String>,
    failure: Option<String>,
}

/// Drives rollout `n` to completion with `k` faults at random passes.
async fn rollout(
    lab: &Lab,
    exec: &FaultyExec<dbu_lab::LocalExec>,
    rng: &mut Rng,
    n: usize,
    human: &Mutex<BTreeSet<String>>,
    original: &BTreeMap<String, (u32, bool)>,
) -> Rollout {
    let mut r = Rollout::default();
    let began = Instant::now();
    let rev = format!("soak-{n}");
    lab.new_revision(&rev, &format!("login_greeting = Lab {rev} ready"));
    let k = 1 + rng.below(5) as usize;
    let mut plan: Vec<(u32, Fault)> = (0..k)
        .map(|_| {
            (
                rng.below(30) as u32,
                FAULTS[rng.below(FAULTS.len() as u64) as usize],
            )
        })
        .collect();
    plan.sort();
    r.faults = plan.iter().map(|(_, f)| *f).collect();
    let mut status = DovecotBackendUpgradeStatus::default();
    let (mut paused_until, mut aborting, mut retry) = (None::<u32>, false, None::<String>);
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        if Instant::now() > end {
            r.failure = Some(format!("not finished in 600 s: {:?}", status.phase));
            break;
        }
        let pass = r.passes;
        r.passes += 1;
        let (mut kill, mut lose_write) = (None, false);
        for (_, f) in plan.iter().filter(|(at, _)| *at == pass) {
            r.timeline.push((Instant::now(), *f));
            match f {
                Fault::OperatorKill => kill = Some(Duration::from_millis(rng.below(150))),
                Fault::DirectorRestart => {
                    tokio::task::block_in_place(|| lab.restart_pod("director-1"))
                        .expect("director-1 restarts");
                }
                Fault::ExecDrop => {
                    let what = [
                        "director update",
                        "director down",
                        "director flush",
                        " stop",
                        "who",
                        "director status",
                        "master.pid",
                        "mailbox",
                    ];
                    let kind = if rng.below(2) == 0 {
                        FaultKind::DropBefore
                    } else {
                        FaultKind::DropAfter
                    };
                    exec.inject(what[rng.below(what.len() as u64) as usize], kind, 1);
                }
                Fault::WriteConflict => {
                    if rng.below(2) == 0 {
                        lab.conflict_next_ring_writes(1);
                    } else {
                        lose_write = true;
                    }
                }
                Fault::PodDeletion => {
                    let pods = lab.backend_names();
                    let pod = &pods[rng.below(pods.len() as u64) as usize];
                    if let Some(uid) = lab.pod_uid(pod) {
                        Cluster::delete_pod(lab, pod, &uid)
                            .await
                            .expect("pod deleted");
                    }
                }
                Fault::PauseResume => paused_until = Some(pass + 3 + rng.below(5) as u32),
                Fault::AbortRetry => aborting = true,
                Fault::HumanDown => {
                    // a backend not in flight, and not the last other one serving
                    let busy: BTreeSet<&str> = status
                        .backends
                        .iter()
                        .filter(|b| dovecot_upgrade_operator::machine::active(b))
                        .map(|b| b.pod.as_str())
                        .collect();
                    let mut h = human.lock().unwrap();
                    let free: Vec<String> = lab
                        .backend_names()
                        .into_iter()
                        .filter(|p| !busy.contains(p.as_str()))
                        .filter_map(|p| lab.pod_ip(&p))
                        .filter(|ip| !h.contains(ip))
                        .collect();
                    if h.is_empty()
                        && let Some(ip) = free.first()
                        && lab.doveadm("director-0", &["director", "down", ip]).is_ok()
                    {
                        h.insert(ip.clone());
                    }
                }
            }
        }
        let paused = paused_until.is_some_and(|u| pass < u);
        let mut s = dbu_lab::settings(json!({
            "drain": {"pollInterval": "1s", "timeout": "5s"},
            "paused": paused,
            "abort": aborting,
        }));
        s.retry_token = retry.clone();
        let pass_fut = engine::reconcile_once(
            &s,
            status.clone(),
            Some(1),
            exec,
            lab,
            &engine::NetProbes,
            &common::now,
        );
        let out = match kill {
            Some(after) => match tokio::time::timeout(after, pass_fut).await {
                Ok(o) => o.expect("reconcile"),
                Err(_) => {
                    r.killed += 1;
                    continue;
                }
            },
            None => pass_fut.await.expect("reconcile"),
        };
        if !lose_write {
            status = out.status;
        }
        match status.phase {
            Some(Phase::Completed) if !aborting => break,
            // the abort finished: resume
            Some(Phase::Aborted) => aborting = false,
            _ => {}
        }
        if engine::stalled(&status) && !aborting && !paused {
            // a fault may fail a step (a pod deleted mid-Verify): a retry is what an admin does
            if r.retries >= 3 {
                let c = status.conditions.iter().find(|c| c.type_ == "Stalled");
                r.failure = Some(format!(
                    "stalled after 3 retries: {}",
                    c.map(|c| format!("{} {}", c.reason, c.message))
                        .unwrap_or_default()
                ));
                break;
            }
            r.retries += 1;
            retry = Some(format!("soak-{n}-{pass}"));
        }
        let wait = out
            .requeue
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
    }
    r.span = Some((began, Instant::now()));
    // the human puts back what they took down
    let downed: Vec<String> = human.lock().unwrap().iter().cloned().collect();
    for ip in downed {
        lab.doveadm("director-0", &["director", "up", &ip])
            .expect("human up");
        human.lock().unwrap().remove(&ip);
    }
    for pod in lab.backend_names() {
        if lab.pod_revision(&pod).as_deref() != Some(rev.as_str()) && r.failure.is_none() {
            r.left
                .push(format!("{pod} at {:?}, not {rev}", lab.pod_revision(&pod)));
        }
    }
    for d in DIRECTORS {
        // a restarted director may still be syncing: give it a moment
        let mut now = ring_of(lab, d);
        for _ in 0..50 {
            if &now == original {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            now = ring_of(lab, d);
        }
        for (ip, want) in original {
            if now.get(ip) != Some(want) {
                r.left
                    .push(format!("{d}: {ip} at {:?}, was {want:?}", now.get(ip)));
            }
        }
    }
    r
}

/// A failed login is put down to the last fault applied in this long before it.
const FAULT_REACH: Duration = Duration::from_secs(15);

/// Failed logins by the fault applied last within `FAULT_REACH` before each (`none` when there
/// was none: those are the ones that could be the operator's), and a few of the `none` ones.
fn attribute(
    failures: &[dbu_lab::traffic::LoginFailure],
    runs: &[Rollout],
    t0: Instant,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut faults: Vec<(Instant, Fault)> = runs.iter().flat_map(|r| r.timeline.clone()).collect();
    faults.sort_by_key(|(t, _)| *t);
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for f in failures {
        let cause = faults
            .iter()
            .rev()
            .find(|(t, _)| *t <= f.at && f.at.duration_since(*t) <= FAULT_REACH);
        let key = match cause {
            Some((_, fault)) => format!("{fault:?}"),
            None => {
                let during = runs
                    .iter()
                    .any(|r| r.span.is_some_and(|(a, b)| a <= f.at && f.at <= b));
                if unexplained.len() < 8 {
                    unexplained.push(format!(
                        "{:.1}s {} via {}{}: {}",
                        f.at.duration_since(t0).as_secs_f64(),
                        f.user,
                        f.director,
                        if during { "" } else { " (between rollouts)" },
                        f.error.trim()
                    ));
                }
                "none".to_string()
            }
        };
        *by.entry(key).or_default() += 1;
    }
    (by, unexplained)
}

async fn soak(rollouts: usize, seed: u64, net: u8) {
    let t0 = Instant::now();
    let rig = rig_with(|d| {
        let mut s = LabSpec::new(d, net, vec![100, 50, 20]);
        s.directors = 2;
        s
    });
    let lab = &rig.lab;
    let original = ring_of(lab, "director-0");
    let users: Vec<String> = (1..=12).map(|u| format!("user{u}")).collect();
    let traffic = Traffic::start(TrafficSpec {
        directors: vec![lab.spec.director_ip_of(0), lab.spec.director_ip_of(1)],
        long_lived: users[6..9].to_vec(),
        loopers: users[9..12].to_vec(),
        recipients: users[..6].to_vec(),
        lmtp_interval: Duration::from_millis(200),
        max_duration: Duration::from_secs(600 * rollouts as u64),
    });
    let exec = FaultyExec::new(lab.exec());
    let human = Mutex::new(BTreeSet::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = Rng(seed.max(1));
    let (sampled, runs) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(lab, &human, &stop));
        let runs = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut runs = Vec::new();
                for n in 0..rollouts {
                    let r = rollout(lab, &exec, &mut rng, n, &human, &original).await;
                    eprintln!(
                        "soak rollout {n}: faults {:?}, {} passes ({} killed, {} retries){}{}",
                        r.faults,
                        r.passes,
                        r.killed,
                        r.retries,
                        r.failure
                            .as_deref()
                            .map(|f| format!("; FAILED: {f}"))
                            .unwrap_or_default(),
                        if r.left.is_empty() {
                            String::new()
                        } else {
                            format!("; LEFT: {:?}", r.left)
                        }
                    );
                    runs.push(r);
                }
                runs
            })
        });
        stop.store(true, Ordering::Relaxed);
        (sampler.join().unwrap(), runs)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = traffic.stop();
    // every message accepted is in its INBOX (a duplicate is possible for an uncertain one)
    let mut lost = Vec::new();
    for user in &users[..6] {
        let got = lab.inbox_count("backend-0", user).unwrap_or(0);
        let want = rig.sent.get(user).copied().unwrap_or(0)
            + stats.accepted.get(user).copied().unwrap_or(0);
        if got < want {
            lost.push(format!("{user}: {got} of {want}"));
        }
    }
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in runs.iter().flat_map(|r| r.faults.iter()) {
        *by_kind.entry(format!("{f:?}")).or_default() += 1;
    }
    let failed: Vec<String> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.failure.is_some() || !r.left.is_empty())
        .map(|(n, r)| format!("rollout {n} (seed {seed}): {:?} {:?}", r.failure, r.left))
        .collect();
    let accepted: u64 = stats.accepted.values().sum();
    let left: usize = runs.iter().map(|r| r.left.len()).sum();
    let (by_fault, unexplained) = attribute(&stats.login_failures, &runs, t0);
    let none = by_fault.get("none").copied().unwrap_or(0);
    let after: BTreeMap<&String, &usize> = by_fault.iter().filter(|(k, _)| *k != "none").collect();
    if !unexplained.is_empty() {
        eprintln!(
            "fault soak: failed logins with no fault in the {FAULT_REACH:?} before them (first {}): {unexplained:#?}",
            unexplained.len()
        );
    }
    report(
        &format!("fault soak, {rollouts} rollouts, seed {seed}"),
        t0,
        &format!(
            "faults {by_kind:?}; {} passes killed, {} retries; ring sampled {} times, most out at once {}, {} invariant violations; {accepted} messages accepted, {} lost; {} IMAP logins ok, {} failed; {} kicked sessions reconnected; {left} hosts left not as they were; failed logins by the fault applied within {}s before them {after:?}, {none} with no fault in force",
            runs.iter().map(|r| r.killed).sum::<u32>(),
            runs.iter().map(|r| r.retries).sum::<u32>(),
            sampled.samples,
            sampled.most_out,
            sampled.violations.len(),
            lost.len(),
            stats.logins_ok,
            stats.logins_failed,
            stats.reconnects,
            FAULT_REACH.as_secs(),
        ),
    );
    assert!(
        sampled.violations.is_empty(),
        "seed {seed}: {:#?}",
        sampled.violations
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: accepted and lost: {lost:?} {stats:#?}"
    );
    assert!(failed.is_empty(), "seed {seed}: {failed:#?}");
    assert!(sampled.samples > 10, "the ring was sampled");
}

/// The short form (CI): 10 rollouts, or `DBU_SOAK_ROLLOUTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_in_a_row_with_random_faults_keep_every_promise() {
    let rollouts = std::env::var("DBU_SOAK_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("DBU_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_204);
    eprintln!("fault soak: {rollouts} rollouts, seed {seed} (DBU_SOAK_SEED={seed} repeats it)");
    soak(rollouts, seed, 59).await;
}
