//! Benchmark: a large ring end to end. One StatefulSet of N backends (10 to 100) rolled by one
//! DBU through the real engine and ring pass against the model's world (tests/model: directors,
//! backends and the API server in memory, every command answered at once), with maxUnavailable 1
//! and 3. The operator's own time is the wall time less the time the world's state was held
//! (its simulation of Dovecot and the API server); per backend it should stay flat as N grows.
//! Prints JSON lines (scripts/bench.sh tabulates). `cargo bench --bench scale`.

#[path = "../tests/model/mod.rs"]
#[allow(dead_code)]
mod model;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dbu_core::api::Phase;
use model::run::{DBUS, Run, Start};

/// One rollout of `n` backends at `max_unavailable`.
fn roll(n: usize, max_unavailable: u32) -> serde_json::Value {
    let (dbu, _) = DBUS[0];
    // the ring's other StatefulSet keeps one backend that this DBU does not roll
    let mut run = Run::new(
        Start {
            per_sts: [n, 1],
            both: false,
        },
        false,
    );
    {
        let mut st = run.world.lock();
        st.ring_spec.max_unavailable = max_unavailable as i32;
        let d = st.dbus.get_mut(dbu).expect("the DBU");
        d.spec["maxUnavailable"] = serde_json::json!(max_unavailable);
        d.generation += 1;
    }
    run.world.timed = true;
    let sim_start = run.world.lock().now;
    let start = Instant::now();
    let mut passes = 0u64;
    for round in 0.. {
        // the ring's pass every fifth round, as its watch would wake it
        if round % 5 == 0 {
            run.ring_pass();
        }
        run.pass(dbu);
        passes += 1;
        let phase = run.world.lock().dbus[dbu].status.phase;
        match phase {
            Some(Phase::Completed) => break,
            Some(Phase::Failed | Phase::Aborted) => panic!("the rollout of {n} ended {phase:?}"),
            _ => {}
        }
        assert!(round < 200 * n, "the rollout of {n} did not finish");
        run.tick(Duration::from_secs(1));
    }
    let wall = start.elapsed().as_secs_f64();
    let world = run.world.held_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let sim_s = dbu_core::time::elapsed(
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(sim_start),
        run.world.lock().now,
    )
    .as_secs_f64();
    let upgraded = {
        let st = run.world.lock();
        st.pods
            .values()
            .filter(|p| p.sts == "backend" && p.revision == "rev-2")
            .count()
    };
    assert_eq!(upgraded, n, "every backend at the new revision");
    let writes = run.world.lock().writes.clone();
    serde_json::json!({
        "bench": "scale",
        "status_writes_per_transition": writes.status as f64 / writes.transitions.max(1) as f64,
        "backends": n,
        "max_unavailable": max_unavailable,
        "passes_per_backend": passes as f64 / n as f64,
        "operator_ms_per_backend": (wall - world) * 1e3 / n as f64,
        "world_ms_per_backend": world * 1e3 / n as f64,
        "simulated_s_per_backend": sim_s / n as f64,
    })
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // one rollout first, not measured: the process's first (its allocator's arenas, page
    // faults, lazy statics) took half as long again, and it was always the 10 at 1's
    roll(10, 1);
    for m in [1, 3] {
        for n in [10, 25, 50, 100] {
            for _ in 0..runs {
                println!("{}", roll(n, m));
            }
        }
    }
}
