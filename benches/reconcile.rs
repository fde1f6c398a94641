//! Benchmark: one reconcile that decides without exec, with 1,000 pods (10 StatefulSets) and 100
//! DBUs in the watch stores; and the serialized status size of a rollout over 1,000 backends.
//! Prints JSON lines (scripts/bench.sh tabulates). `cargo bench --bench reconcile`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use dbu_core::fixtures;
use dovecot_upgrade_operator::api::{DovecotBackendUpgrade, DovecotBackendUpgradeStatus, Step};
use dovecot_upgrade_operator::controller::{self, Stores};
use dovecot_upgrade_operator::engine::{self, Outcome};
use dovecot_upgrade_operator::exec::{ExecError, ExecOutput, ExecRequest, PodExec};
use dovecot_upgrade_operator::machine::{self, Decision, Observed, StepResult};
use dovecot_upgrade_operator::settings::{self, Settings};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

const STS: usize = 10;
const PER_STS: usize = 100;
const DBUS: usize = 100;

/// Fails the benchmark if anything execs: these reconciles must decide from the stores alone.
struct NoExec;

#[async_trait]
impl PodExec for NoExec {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        panic!("unexpected exec in {}: {:?}", req.pod, req.argv)
    }
}

fn dbu(name: &str, sts: &str) -> DovecotBackendUpgrade {
    fixtures::dbu(
        json!({"name": name, "uid": format!("uid-{name}"), "generation": 1}),
        json!({"backends": {"statefulSet": sts}}),
    )
}

fn world() -> (Vec<StatefulSet>, Vec<Pod>, Vec<DovecotBackendUpgrade>) {
    let mut sts = Vec::new();
    let mut pods = Vec::new();
    for i in 0..STS {
        sts.push(
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": format!("be-{i}"), "namespace": "mail", "uid": format!("sts-{i}")},
                "spec": {"replicas": PER_STS, "serviceName": "be", "selector": {"matchLabels": {"app": format!("be-{i}")}},
                         "template": {}, "updateStrategy": {"type": "OnDelete"}},
                "status": {"replicas": PER_STS, "updateRevision": "rev-2"}
            }))
            .unwrap(),
        );
        for j in 0..PER_STS {
            pods.push(
                serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("be-{i}-{j}"), "namespace": "mail", "uid": format!("p-{i}-{j}"),
                                 "labels": {"app": format!("be-{i}"), "controller-revision-hash": "rev-2"},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("be-{i}"), "uid": format!("sts-{i}")}]},
                    "spec": {"containers": [{"name": "dovecot", "image": "dovecot:2.3.19"}]},
                    "status": {"phase": "Running", "podIP": format!("10.{i}.{}.{}", j / 250, j % 250 + 1),
                               "conditions": [{"type": "Ready", "status": "True"}]}
                }))
                .unwrap(),
            );
        }
    }
    for d in 0..2 {
        pods.push(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("director-{d}"), "namespace": "mail", "labels": {"app": "director"}},
                "status": {"podIP": format!("10.99.0.{d}"), "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap(),
        );
    }
    // 10 DBUs own a StatefulSet each; 90 name ones that do not exist (they stall)
    let dbus = (0..DBUS)
        .map(|k| {
            let target = if k < STS {
                format!("be-{k}")
            } else {
                format!("ghost-{k}")
            };
            dbu(&format!("dbu-{k}"), &target)
        })
        .collect();
    (sts, pods, dbus)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn reconcile_latency(rounds: usize) {
    let (sts, pods, dbus) = world();
    let ring: dovecot_upgrade_operator::api::DovecotRing = serde_json::from_value(json!({
        "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
        "metadata": {"name": "mail", "namespace": "mail", "resourceVersion": "7"},
        "spec": {"directors": {"selector": {"matchLabels": {"app": "director"}}},
                 "backends": (0..STS).map(|k| json!({"statefulSet": format!("be-{k}")})).collect::<Vec<_>>()}
    }))
    .unwrap();
    let stores = Stores::from_objects(sts, pods, dbus.clone(), vec![ring.clone()]);
    // observe must use the stores only; the requests a finished rollout makes are the GET of
    // its ring (a backend a deleted DBU left out is taken over first) and of the Lease an
    // earlier release kept the ring's lock in: none exists here
    let (svc, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let served = ring.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            assert!(
                req.method() == http::Method::GET
                    && (path.contains("/leases/") || path.ends_with("/dovecotrings/mail")),
                "only the ring and an earlier release's Lease are read: {} {path}",
                req.method(),
            );
            let (code, body) = if path.contains("/leases/") {
                (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404}),
                )
            } else {
                (200, serde_json::to_value(&served).unwrap())
            };
            send.send_response(
                http::Response::builder()
                    .status(code)
                    .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = kube::Client::new(svc, "mail");
    let cases: Vec<(Settings, _)> = dbus
        .iter()
        .take(STS)
        .map(|d| {
            let s = settings::with_ring(settings::validate(&d.spec).unwrap(), "mail", &ring.spec)
                .unwrap();
            (
                s,
                controller::edges_for(&client, &stores, d, "mail", "mail", Default::default()).0,
            )
        })
        .collect();
    let mut times = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let (s, cluster) = &cases[r % cases.len()];
        let t = Instant::now();
        let out: Outcome = engine::reconcile_once(
            s,
            DovecotBackendUpgradeStatus::default(),
            Some(1),
            &NoExec,
            cluster,
            &dovecot_upgrade_operator::engine::NetProbes,
            &Timestamp::now,
        )
        .await
        .unwrap();
        times.push(t.elapsed());
        assert_eq!(out.decision, Decision::Complete);
    }
    times.sort();
    println!(
        "{}",
        json!({"bench": "reconcile", "pods": STS * PER_STS + 2, "statefulsets": STS, "dbus": DBUS,
               "rounds": rounds, "p50_ms": pct(&times, 0.5), "p99_ms": pct(&times, 0.99),
               "min_ms": pct(&times, 0.0), "max_ms": pct(&times, 1.0)})
    );
}

/// A rollout over 1,000 backends, simulated with the plan's own functions (every step
/// succeeds at once); the largest serialized status on the way, and the dry-run plan's size.
/// `keep_all` skips `machine::compact`, to show what it saves.
fn status_size(backends: usize, keep_all: bool) {
    let spec = dbu("big", "be").spec;
    let s = settings::validate(&spec).unwrap();
    let n = backends as u32;
    let mut obs = Observed {
        ring: Some(
            (0..n)
                .map(|i| fixtures::host(i, 100, true, u64::from(i % 7)))
                .collect(),
        ),
        ring_synced: Some(true),
        ring_lock: Some(Ok(machine::RingLock::default())),
        ..fixtures::world(n, "rev-1", "rev-2")
    };
    let mut status = DovecotBackendUpgradeStatus::default();
    let mut now = fixtures::ts(0);
    let (mut largest, mut passes) = (0usize, 0usize);
    let plan_size = match machine::decide(
        &Settings {
            dry_run: true,
            ..s.clone()
        },
        &status,
        &obs,
        now,
    ) {
        Decision::DryRun(p) => serde_json::to_vec(&p).unwrap().len(),
        d => panic!("{d:?}"),
    };
    loop {
        machine::retarget(&mut status, "rev-2");
        let d = machine::decide(&s, &status, &obs, now);
        match &d {
            Decision::Complete => break,
            Decision::Begin(rec) => status.backends.push((**rec).clone()),
            // the ring's lock taken (compare-and-swap) as the engine would
            Decision::Claim { pods } => status.ring_held = pods.clone(),
            Decision::Run { pod, step, .. } => {
                let i: usize = pod.trim_start_matches("backend-").parse().unwrap();
                let ring = obs.ring.as_mut().unwrap();
                match step {
                    Step::Drain => {
                        ring[i].vhosts = 0;
                        ring[i].users = 0;
                    }
                    Step::RingRemove => ring[i].up = false,
                    Step::Replace => obs.pods[i] = fixtures::pod(i as u32, "rev-2"),
                    Step::RingRestore => {
                        ring[i].vhosts = 100;
                        ring[i].up = true;
                    }
                    _ => {}
                }
                let rec = status.backends.iter_mut().find(|r| &r.pod == pod).unwrap();
                let result = StepResult::Advanced {
                    message: Some(format!("{pod}: {step} done")),
                    new_ip: None,
                    pod_uid: None,
                    layout: None,
                };
                machine::apply_result(rec, &result, now);
                machine::record_finish(&mut status, pod, now);
                if !keep_all {
                    machine::compact(&mut status);
                }
            }
            d => panic!("unexpected {d:?}"),
        }
        status.progress = Some(machine::progress(&status, &obs, "rev-2"));
        let settled = machine::settled(&s, &d, &status, &obs, now);
        dovecot_upgrade_operator::conditions::summarize(&mut status, &settled, Some(1), now);
        // without compaction the status only grows: its final size is its largest
        if !keep_all {
            largest = largest.max(serde_json::to_vec(&status).unwrap().len());
        }
        passes += 1;
        now = dovecot_upgrade_operator::time::after(now, Duration::from_secs(1));
    }
    if keep_all {
        largest = serde_json::to_vec(&status).unwrap().len();
    }
    println!(
        "{}",
        json!({"bench": "status_size", "backends": backends, "passes": passes, "compaction": !keep_all,
               "largest_status_bytes": largest, "final_status_bytes": serde_json::to_vec(&status).unwrap().len(),
               "dry_run_plan_bytes": plan_size})
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    reconcile_latency(2000).await;
    status_size(1000, false);
    // what the status would be without compaction (every finished record kept), for comparison
    status_size(1000, true);
}
