//! Benchmark: full rollouts on the real-Dovecot rig; wall time against the time spent inside the
//! runbook's own commands and pod restarts, which no operator can avoid, and against the runbook's
//! fixed 15-minute wait per backend. Prints one JSON line per run (scripts/bench.sh tabulates).
//!
//! Needs root and Debian's Dovecot (scripts/install-tools.sh). `cargo bench --bench rollout`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dbu_lab::{self as lab, ImapSession, Lab, LabSpec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase};
use dovecot_upgrade_operator::engine::{self, Cluster, ClusterError};
use dovecot_upgrade_operator::exec::{ExecError, ExecOutput, ExecRequest, PodExec};
use dovecot_upgrade_operator::machine::Observed;
use dovecot_upgrade_operator::settings::Settings;

/// Times every exec, split into the operator's ring reads and the steps' commands.
struct TimingExec<'a> {
    inner: &'a dyn PodExec,
    ring_reads: Vec<Vec<String>>,
    steps: Mutex<(Duration, usize)>,
    reads: Mutex<(Duration, usize)>,
}

#[async_trait]
impl PodExec for TimingExec<'_> {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let t = Instant::now();
        let out = self.inner.exec(req).await;
        let took = t.elapsed();
        let bucket = if self.ring_reads.iter().any(|r| r == req.argv) {
            &self.reads
        } else {
            &self.steps
        };
        let mut b = bucket.lock().unwrap();
        b.0 += took;
        b.1 += 1;
        out
    }
}

/// Times pod replacement (kill, recreate, Dovecot start): the restart the runbook also waits for.
struct TimingCluster<'a> {
    lab: &'a Lab,
    replace: Mutex<Duration>,
}

#[async_trait]
impl Cluster for TimingCluster<'_> {
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError> {
        self.lab.observe(s).await
    }
    async fn observe_fresh(&self, s: &Settings) -> Result<Observed, ClusterError> {
        self.lab.observe_fresh(s).await
    }
    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError> {
        let t = Instant::now();
        let r = self.lab.delete_pod(pod, uid).await;
        *self.replace.lock().unwrap() += t.elapsed();
        r
    }
    async fn release_pod(
        &self,
        pod: &str,
        uid: &str,
        at: k8s_openapi::jiff::Timestamp,
    ) -> Result<(), ClusterError> {
        self.lab.release_pod(pod, uid, at).await
    }
    async fn read_key(
        &self,
        key: &dovecot_upgrade_operator::settings::ObjectKey,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        self.lab.read_key(key).await
    }
    async fn fresh_pod(
        &self,
        s: &Settings,
        pod: &str,
    ) -> Result<Option<dovecot_upgrade_operator::machine::PodView>, ClusterError> {
        self.lab.fresh_pod(s, pod).await
    }
    async fn fresh_update_revision(&self, s: &Settings) -> Result<Option<String>, ClusterError> {
        self.lab.fresh_update_revision(s).await
    }
    async fn read_ring_lock(
        &self,
        s: &Settings,
    ) -> Result<dovecot_upgrade_operator::machine::RingLock, ClusterError> {
        self.lab.read_ring_lock(s).await
    }
    async fn cached_ring_lock(
        &self,
        s: &Settings,
    ) -> Option<dovecot_upgrade_operator::machine::RingLock> {
        self.lab.cached_ring_lock(s).await
    }
    async fn write_ring_lock(
        &self,
        s: &Settings,
        version: Option<&str>,
        holders: &[dovecot_upgrade_operator::machine::RingHolder],
    ) -> Result<(), ClusterError> {
        self.lab.write_ring_lock(s, version, holders).await
    }
    async fn changed(&self) {
        self.lab.changed().await
    }
}

/// `probes`: Verify's IMAP probe besides the LMTP one, and the soak with its director login
/// (an idle ring: the soak makes its own traffic); the other scenarios: LMTP probe, no soak.
fn settings(scenario: &str) -> Settings {
    let mut v = serde_json::json!({
        "drain": {"pollInterval": "1s", "timeout": "60s"},
        "timeouts": {"command": "40s", "stop": "30s", "replace": "60s"}
    });
    if scenario == "probes" {
        v["verify"] = serde_json::json!({
            "imapProbe": {"credentialsSecret": {"name": "probe"}, "tls": {"mode": "None"}},
            "soak": {"enabled": true, "timeout": "30s"}
        });
    }
    lab::settings(v)
}

const RUNBOOK_WAIT: Duration = Duration::from_secs(15 * 60);

async fn one_run(scenario: &str, backends: usize, net: u8, run: usize) {
    let dir = tempfile::Builder::new()
        .prefix("dbu-bench-")
        .tempdir()
        .unwrap();
    let vhosts = (0..backends).map(|i| [100, 50, 20][i % 3]).collect();
    let lab = Lab::start(LabSpec::new(dir.path(), net, vhosts)).expect("lab starts");
    let dip = lab.spec.director_ip();
    // straight to the backend: through the director it would map user1 there for the expiry
    lab::lmtp_deliver(&lab.spec.backend_ip(0), "user1", "bench").expect("mail for the verify user");
    if scenario == "users" {
        // users who logged out just before: their mappings live until director_user_expire
        for u in 1..=30 {
            ImapSession::login(&dip, &format!("user{u}"))
                .unwrap()
                .logout();
        }
    }
    lab.put_secret("probe", "password", lab::LAB_PASSWORD.as_bytes());
    lab.new_revision("rev-2", "");
    let s = settings(scenario);
    let local = lab.exec();
    let exec = TimingExec {
        inner: &local,
        ring_reads: vec![
            s.director.director_status(),
            s.director.director_ring_status(),
        ],
        steps: Mutex::new((Duration::ZERO, 0)),
        reads: Mutex::new((Duration::ZERO, 0)),
    };
    let cluster = TimingCluster {
        lab: &lab,
        replace: Mutex::new(Duration::ZERO),
    };
    let mut passes = 0usize;
    let mut drain_wait = Duration::ZERO;
    let (mut verify, mut soak) = (Duration::ZERO, Duration::ZERO);
    let t = Instant::now();
    let out = engine::drive(
        &s,
        DovecotBackendUpgradeStatus::default(),
        &exec,
        &cluster,
        &engine::NetProbes,
        &k8s_openapi::jiff::Timestamp::now,
        Duration::from_secs(1800),
        |o| {
            passes += 1;
            use dovecot_upgrade_operator::api::Step;
            match o.finished {
                Some((Step::WaitSessions, took)) => drain_wait += took,
                Some((Step::Verify, took)) => verify += took,
                Some((Step::Soak, took)) => soak += took,
                _ => {}
            }
            if std::env::var_os("BENCH_TRACE").is_some() {
                eprintln!(
                    "{:>7.3}s {:?} requeue={:?}",
                    t.elapsed().as_secs_f64(),
                    o.decision,
                    o.requeue
                );
            }
        },
    )
    .await
    .unwrap();
    let wall = t.elapsed();
    assert_eq!(out.status.phase, Some(Phase::Completed), "{:?}", out.status);
    let (steps, step_calls) = *exec.steps.lock().unwrap();
    let (reads, read_calls) = *exec.reads.lock().unwrap();
    let replace = *cluster.replace.lock().unwrap();
    // waiting for mapped users to leave is the runbook's wait too (fixed 15 min there)
    let unavoidable = steps + replace + drain_wait;
    let overhead = wall.saturating_sub(unavoidable);
    let runbook = steps + replace + RUNBOOK_WAIT * backends as u32;
    println!(
        "{}",
        serde_json::json!({
            "bench": "rollout", "scenario": scenario, "backends": backends, "run": run,
            "wall_s": wall.as_secs_f64(),
            "step_commands_s": steps.as_secs_f64(), "step_commands": step_calls,
            "pod_restarts_s": replace.as_secs_f64(),
            "drain_wait_s": drain_wait.as_secs_f64(),
            "ring_reads_s": reads.as_secs_f64(), "ring_reads": read_calls,
            "reconciles": passes,
            "overhead_s": overhead.as_secs_f64(),
            "overhead_per_backend_s": overhead.as_secs_f64() / backends as f64,
            "runbook_s": runbook.as_secs_f64(),
            "verify_per_backend_s": verify.as_secs_f64() / backends as f64,
            "soak_per_backend_s": soak.as_secs_f64() / backends as f64,
            "speedup": runbook.as_secs_f64() / wall.as_secs_f64(),
        })
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; a filter picks scenarios: idle3, idle10, users3, probes3
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let all = [
        ("idle", 3usize, 30u8),
        ("idle", 10, 31),
        ("users", 3, 32),
        ("probes", 3, 33),
    ];
    for (scenario, n, net) in all {
        let name = format!("{scenario}{n}");
        if !args.is_empty() && !args.contains(&name) {
            continue;
        }
        for run in 1..=runs {
            one_run(scenario, n, net, run).await;
        }
    }
}
