//! Prometheus metrics of the controller, with bounded labels only (step, phase, category, result).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{Phase, Step};
use crate::engine::Outcome;
use crate::machine::Decision;
use crate::reason::EventReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn step_buckets() -> Histogram {
    // 50 ms .. ~27 min
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// What one DBU contributes to the gauges.
#[derive(Debug, Clone, Default)]
struct DbuState {
    in_flight: i64,
    phase: Option<Phase>,
    /// Seconds since the epoch when it was last seen paused.
    paused_at: Option<f64>,
    /// Users still mapped to its draining backends.
    drain_users: i64,
    /// Per backend: sessions and sessionless users moved so far, as last counted.
    moved: HashMap<String, (u64, u64)>,
}

/// Every metric the operator exports. DBU and pod names never become labels: a fleet of
/// thousands of backends must not become thousands of series.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    step_seconds: HistogramFamily<StepLabels>,
    drain_wait_seconds: Histogram,
    drain_ceiling_users: Histogram,
    upgraded: Counter,
    failed: Counter,
    in_flight: Gauge,
    drain_users_left: Gauge,
    drain_sessions_moved: Counter,
    drain_users_moved: Counter,
    rollouts: Family<PhaseLabels, Gauge>,
    paused_seconds: Counter<f64, AtomicU64>,
    dbus: Mutex<HashMap<String, DbuState>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dbu");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (ok, error) and error category",
            reconciles.clone(),
        );
        let step_seconds: HistogramFamily<StepLabels> =
            Family::new_with_constructor(step_buckets as fn() -> Histogram);
        registry.register(
            "step_duration_seconds",
            "Time from a step's start to its success, by step",
            step_seconds.clone(),
        );
        let drain_wait_seconds = step_buckets();
        registry.register(
            "drain_wait_seconds",
            "Time a drained backend waited for its users to leave",
            drain_wait_seconds.clone(),
        );
        let drain_ceiling_users = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "drain_ceiling_users",
            "Users still mapped to a backend when the drain ceiling was reached",
            drain_ceiling_users.clone(),
        );
        let upgraded = Counter::default();
        registry.register(
            "backends_upgraded",
            "Backends upgraded and back in the ring",
            upgraded.clone(),
        );
        let failed = Counter::default();
        registry.register(
            "backends_failed",
            "Backends that failed a step and were kept out of the ring",
            failed.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "backends_in_flight",
            "Backends between Drain and Done (failed ones included: they are out of the ring)",
            in_flight.clone(),
        );
        let drain_users_left = Gauge::default();
        registry.register(
            "drain_users_left",
            "Users the director still maps to backends in WaitSessions",
            drain_users_left.clone(),
        );
        let drain_sessions_moved = Counter::default();
        registry.register(
            "drain_sessions_moved",
            "IDLE or hibernated sessions a Move drain moved to another backend (each a reconnect)",
            drain_sessions_moved.clone(),
        );
        let drain_users_moved = Counter::default();
        registry.register(
            "drain_users_moved",
            "Users without a session a Move drain moved at once",
            drain_users_moved.clone(),
        );
        let rollouts = Family::<PhaseLabels, Gauge>::default();
        registry.register("rollouts", "DBUs by phase", rollouts.clone());
        let paused_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "paused_seconds",
            "Time rollouts spent paused (spec.paused, awaiting approval, outside the window, held)",
            paused_seconds.clone(),
        );
        Self {
            registry,
            reconciles,
            step_seconds,
            drain_wait_seconds,
            drain_ceiling_users,
            upgraded,
            failed,
            in_flight,
            drain_users_left,
            drain_sessions_moved,
            drain_users_moved,
            rollouts,
            paused_seconds,
            dbus: Mutex::new(HashMap::new()),
        }
    }

    /// Records one successful reconcile of the DBU `key` (namespace/name) at `now` (epoch seconds).
    pub fn record(&self, key: &str, out: &Outcome, now: f64) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: "ok".into(),
                category: "none".into(),
            })
            .inc();
        if let Some((step, took)) = out.finished {
            self.step_seconds
                .get_or_create(&StepLabels {
                    step: step.as_str().into(),
                })
                .observe(took.as_secs_f64());
            if step == Step::WaitSessions {
                self.drain_wait_seconds.observe(took.as_secs_f64());
            }
        }
        if let Decision::Run {
            step: Step::WaitSessions,
            ceiling_users: Some(n),
            ..
        } = &out.decision
        {
            self.drain_ceiling_users.observe(*n as f64);
        }
        for n in &out.notes {
            match n.reason {
                EventReason::BackendUpgraded => {
                    self.upgraded.inc();
                }
                EventReason::StepFailed => {
                    self.failed.inc();
                }
                _ => {}
            }
        }
        let in_flight = out
            .status
            .backends
            .iter()
            .filter(|r| crate::machine::active(r))
            .count() as i64;
        let paused = out.status.phase == Some(Phase::Paused);
        let mut dbus = self.dbus.lock().expect("metrics lock");
        let st = dbus.entry(key.to_string()).or_default();
        if let Some(since) = st.paused_at {
            self.paused_seconds.inc_by((now - since).max(0.0));
        }
        st.paused_at = paused.then_some(now);
        st.in_flight = in_flight;
        st.drain_users = out.status.drain_users.unwrap_or(0) as i64;
        for r in &out.status.backends {
            let Some(d) = &r.drain else { continue };
            let seen = st.moved.entry(r.pod.clone()).or_default();
            // a count below the last one is a new record (the backend upgraded again)
            let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
            let (ds, du) = (
                delta(d.sessions_moved, seen.0),
                delta(d.users_moved, seen.1),
            );
            self.drain_sessions_moved.inc_by(ds);
            self.drain_users_moved.inc_by(du);
            *seen = (d.sessions_moved, d.users_moved);
        }
        st.phase = out.status.phase;
        self.refresh(&dbus);
    }

    /// A reconcile that failed before it could decide (API errors and the like).
    pub fn error(&self, category: &'static str) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: "error".into(),
                category: category.into(),
            })
            .inc();
    }

    /// The DBU is gone: it no longer counts in the gauges.
    pub fn forget(&self, key: &str) {
        let mut dbus = self.dbus.lock().expect("metrics lock");
        dbus.remove(key);
        self.refresh(&dbus);
    }

    /// This replica no longer leads: it reports no DBU (the leader does).
    pub fn forget_all(&self) {
        let mut dbus = self.dbus.lock().expect("metrics lock");
        dbus.clear();
        self.refresh(&dbus);
    }

    fn refresh(&self, dbus: &HashMap<String, DbuState>) {
        self.in_flight.set(dbus.values().map(|d| d.in_flight).sum());
        self.drain_users_left
            .set(dbus.values().map(|d| d.drain_users).sum());
        for phase in Phase::ALL {
            let n = dbus.values().filter(|d| d.phase == Some(phase)).count() as i64;
            self.rollouts
                .get_or_create(&PhaseLabels {
                    phase: format!("{phase:?}"),
                })
                .set(n);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, DovecotBackendUpgradeStatus};
    use crate::machine::Note;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::time::Duration;

    fn rec(pod: &str, step: Step) -> BackendStatus {
        BackendStatus {
            step,
            started: None,
            ..BackendStatus::begin(
                pod,
                "10.0.0.1",
                None,
                100,
                Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            )
        }
    }

    fn outcome(phase: Phase, recs: Vec<BackendStatus>, notes: Vec<Note>) -> Outcome {
        Outcome {
            status: DovecotBackendUpgradeStatus {
                phase: Some(phase),
                backends: recs,
                ..Default::default()
            },
            decision: Decision::Run {
                pod: "backend-7".into(),
                step: Step::WaitSessions,
                ceiling_users: Some(3),
            },
            notes,
            requeue: None,
            finished: Some((Step::WaitSessions, Duration::from_secs(42))),
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn outcomes_become_bounded_series() {
        let m = Metrics::new();
        let done = Note::new(
            crate::reason::EventReason::BackendUpgraded,
            "backend-7: upgraded",
        );
        m.record(
            "mail/a",
            &outcome(
                Phase::Progressing,
                vec![rec("backend-7", Step::StopLmtp)],
                vec![done],
            ),
            100.0,
        );
        m.record("mail/b", &outcome(Phase::Paused, vec![], vec![]), 100.0);
        m.record("mail/b", &outcome(Phase::Paused, vec![], vec![]), 130.0);
        m.error("kube_api");
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_backends_upgraded_total"),
            Some("dbu_backends_upgraded_total 1")
        );
        assert_eq!(
            line(&t, "dbu_backends_in_flight"),
            Some("dbu_backends_in_flight 1")
        );
        assert_eq!(
            line(&t, "dbu_paused_seconds_total"),
            Some("dbu_paused_seconds_total 30.0")
        );
        assert_eq!(
            line(&t, "dbu_reconciles_total{result=\"error\""),
            Some("dbu_reconciles_total{result=\"error\",category=\"kube_api\"} 1")
        );
        assert_eq!(
            line(&t, "dbu_step_duration_seconds_count{step=\"WaitSessions\"}"),
            Some("dbu_step_duration_seconds_count{step=\"WaitSessions\"} 3")
        );
        assert_eq!(
            line(&t, "dbu_drain_ceiling_users_sum"),
            Some("dbu_drain_ceiling_users_sum 9.0")
        );
        assert_eq!(
            line(&t, "dbu_rollouts{phase=\"Paused\"}"),
            Some("dbu_rollouts{phase=\"Paused\"} 1")
        );
        // no pod or DBU name in any series
        assert!(!t.contains("backend-7") && !t.contains("mail/"), "{t}");
        m.forget("mail/a");
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_backends_in_flight"),
            Some("dbu_backends_in_flight 0")
        );
        // a replica that lost the leader Lease reports no DBU: the leader does
        m.forget_all();
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_rollouts{phase=\"Paused\"}"),
            Some("dbu_rollouts{phase=\"Paused\"} 0")
        );
    }

    #[test]
    fn drains_count_moves_once_and_sum_users_left() {
        let m = Metrics::new();
        let draining = |moved: u64, flushed: u64, left: u64| {
            let mut r = rec("backend-7", Step::WaitSessions);
            r.drain = Some(crate::api::DrainProgress {
                users_left: left,
                without_session: None,
                sessions: None,
                sessions_moved: moved,
                users_moved: flushed,
                unknown_sessions: None,
                users_listed: None,
                predicted_end: None,
                observed: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            });
            let mut o = outcome(Phase::Progressing, vec![r], vec![]);
            o.status.drain_users = Some(left);
            o
        };
        m.record("mail/a", &draining(5, 0, 40), 1.0);
        m.record("mail/a", &draining(5, 0, 38), 2.0);
        m.record("mail/a", &draining(9, 30, 0), 3.0);
        m.record("mail/b", &draining(0, 0, 7), 3.0);
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_drain_sessions_moved_total"),
            Some("dbu_drain_sessions_moved_total 9")
        );
        assert_eq!(
            line(&t, "dbu_drain_users_moved_total"),
            Some("dbu_drain_users_moved_total 30")
        );
        assert_eq!(
            line(&t, "dbu_drain_users_left"),
            Some("dbu_drain_users_left 7")
        );
        // the same backend upgraded again starts a new record from 0
        m.record("mail/a", &draining(2, 0, 3), 4.0);
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_drain_sessions_moved_total"),
            Some("dbu_drain_sessions_moved_total 11")
        );
    }
}
