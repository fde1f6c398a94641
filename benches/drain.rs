//! Benchmark: the drain on a realistic mail workload, strategy Move against Wait and the runbook.
//!
//! A real director and three backends (Dovecot 2.3.19, `director_user_expire = 15m`, IDLE
//! sessions hibernating after 10 s), 300 users through the director: a fifth parked in IDLE, two
//! fifths polling every minute, the rest logged out just before; LMTP deliveries to all of them
//! every 200 ms. Per backend: how long WaitSessions took, and what users noticed while the
//! backend was out (IDLE sessions closed, failed logins, deferred deliveries), and how many exec
//! requests per second the operator sent to the pods while it drained. Prints one JSON line per
//! run.
//!
//! Wait runs with a 60 s ceiling, not the production 15 minutes: with pollers and IDLE clients the
//! director's count never reaches 0, so Wait always ends at its ceiling, whatever it is; the
//! runbook's figure is its fixed 15-minute wait. Needs root. `cargo bench --bench drain`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dovecot_upgrade_operator::exec::{ExecError, ExecOutput, ExecRequest, PodExec};

use dbu_lab::workload::{Noticed, Workload, WorkloadSpec, prime};
use dbu_lab::{self as lab, Lab, LabSpec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::engine;

const RUNBOOK_WAIT: Duration = Duration::from_secs(15 * 60);
const USERS: u32 = 300;

/// Counts the exec requests the operator sends, by when they were sent.
struct Counting<'a> {
    inner: &'a dyn PodExec,
    since: Instant,
    sent: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl PodExec for Counting<'_> {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        self.sent.lock().unwrap().push(self.since.elapsed());
        self.inner.exec(req).await
    }
}

struct Window {
    start: Duration,
    end: Option<Duration>,
    wait_start: Option<Duration>,
    wait_end: Option<Duration>,
}

async fn one_run(strategy: &str, net: u8, run: usize) {
    let dir = tempfile::Builder::new()
        .prefix("dbu-bench-")
        .tempdir()
        .unwrap();
    let mut spec = LabSpec::new(dir.path(), net, vec![100, 100, 100]);
    spec.users = USERS + 10;
    spec.user_expire = "15m".into();
    spec.hibernate_after = Some("10s".into());
    let lab = Lab::start(spec).expect("lab starts");
    let dip = lab.spec.director_ip();
    lab::lmtp_deliver(&lab.spec.backend_ip(0), "user1", "bench").expect("mail for the verify user");
    let w = WorkloadSpec::mix(&dip, USERS, Duration::from_secs(60));
    prime(&dip, &w.recent).expect("recent logins");
    let idle_users = w.idle.len();
    let work = Workload::start(w).expect("workload");
    // long enough for IDLE sessions to hibernate and every poller to have logged in once
    tokio::time::sleep(Duration::from_secs(15)).await;
    let users_at_start: BTreeMap<String, u64> = lab
        .ring()
        .unwrap()
        .into_iter()
        .map(|h| (h.ip, h.users))
        .collect();
    lab.new_revision("rev-2", "");
    let drain = match strategy {
        "Move" => {
            serde_json::json!({"strategy": "Move", "maxParallel": 10, "pollInterval": "5s", "timeout": "15m"})
        }
        _ => serde_json::json!({"strategy": "Wait", "pollInterval": "5s", "timeout": "60s"}),
    };
    let s = lab::settings(serde_json::json!({
        "drain": drain,
        "ordering": "Ordinal",
        "timeouts": {"command": "40s", "stop": "30s", "replace": "60s"}
    }));
    let lab_exec = lab.exec();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let exec = Counting {
        inner: &lab_exec,
        since: work.started,
        sent: sent.clone(),
    };
    let mut windows: BTreeMap<String, Window> = BTreeMap::new();
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    let t = Instant::now();
    let out = engine::drive(
        &s,
        DovecotBackendUpgradeStatus::default(),
        &exec,
        &lab,
        &dovecot_upgrade_operator::engine::NetProbes,
        &k8s_openapi::jiff::Timestamp::now,
        Duration::from_secs(3600),
        |o| {
            let at = work.started.elapsed();
            for r in &o.status.backends {
                ips.entry(r.pod.clone()).or_insert(r.ip.clone());
                let w = windows.entry(r.pod.clone()).or_insert(Window {
                    start: at,
                    end: None,
                    wait_start: None,
                    wait_end: None,
                });
                if r.step == Step::WaitSessions && w.wait_start.is_none() {
                    w.wait_start = Some(at);
                }
                if r.step > Step::WaitSessions && w.wait_start.is_some() && w.wait_end.is_none() {
                    w.wait_end = Some(at);
                }
                if r.step == Step::Done && w.end.is_none() {
                    w.end = Some(at);
                }
            }
        },
    )
    .await
    .unwrap();
    let wall = t.elapsed();
    let stats = work.stop();
    assert_eq!(out.status.phase, Some(Phase::Completed), "{:?}", out.status);
    let mut per_backend = Vec::new();
    let mut rest = Duration::ZERO;
    for (pod, w) in &windows {
        let end = w.end.unwrap_or(Duration::MAX);
        let seen = stats.between(w.start, end);
        let kicks = seen
            .iter()
            .filter(|n| matches!(n, Noticed::Kick { .. }))
            .count();
        let failed = seen
            .iter()
            .filter(|n| matches!(n, Noticed::FailedLogin { .. }))
            .count();
        let deferred = seen
            .iter()
            .filter(|n| matches!(n, Noticed::DeliveryDeferred { .. }))
            .count();
        let execs_draining = match (w.wait_start, w.wait_end) {
            (Some(a), Some(b)) => sent
                .lock()
                .unwrap()
                .iter()
                .filter(|t| **t >= a && **t <= b)
                .count(),
            _ => 0,
        };
        let drain_s = match (w.wait_start, w.wait_end) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        rest += end.saturating_sub(w.start) - Duration::from_secs_f64(drain_s);
        let rec = out.status.backends.iter().find(|r| &r.pod == pod);
        let d = rec.and_then(|r| r.drain.as_ref());
        per_backend.push(serde_json::json!({
            "pod": pod,
            "users_at_start": users_at_start.get(&ips[pod]).copied().unwrap_or(0),
            "drain_s": drain_s,
            "kicks": kicks,
            "failed_logins": failed,
            "deferred": deferred,
            "execs_per_s": if drain_s > 0.0 { execs_draining as f64 / drain_s } else { 0.0 },
            "sessions_moved": d.map_or(0, |d| d.sessions_moved),
            "users_moved": d.map_or(0, |d| d.users_moved),
        }));
    }
    let outside = stats.kicks()
        - per_backend
            .iter()
            .map(|b| b["kicks"].as_u64().unwrap() as usize)
            .sum::<usize>();
    println!(
        "{}",
        serde_json::json!({
            "bench": "drain", "strategy": strategy, "run": run,
            "users": USERS, "idle_users": idle_users,
            "wall_s": wall.as_secs_f64(),
            "backends": per_backend,
            "kicks_outside": outside,
            "failed_logins": stats.failed_logins(),
            "bounced": stats.bounced(),
            "deferred": stats.noticed.iter().filter(|(_, n)| matches!(n, Noticed::DeliveryDeferred { .. })).count(),
            "logins": stats.logins,
            // the runbook on the same workload: its fixed wait plus the same commands and restarts
            "runbook_s": (RUNBOOK_WAIT * windows.len() as u32 + rest).as_secs_f64(),
        })
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench --bench drain [Move|Wait]`; BENCH_RUNS repeats each
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for (strategy, n, net) in [("Move", runs, 53u8), ("Wait", runs, 54)] {
        if !args.is_empty() && !args.iter().any(|a| a == strategy) {
            continue;
        }
        for run in 1..=n {
            one_run(strategy, net, run).await;
        }
    }
}
