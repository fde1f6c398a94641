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

/// A DovecotRing: rings are few (one per director ring), unlike DBUs and pods.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RingLabels {
    namespace: String,
    ring: String,
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
    /// Its Stalled condition is True.
    stalled: bool,
    /// The oldest `started` of its backends out of the ring (epoch seconds).
    out_since: Option<i64>,
    /// Since when it is paused: `status.pausedSince`, else when this replica first saw it so.
    paused_since: Option<i64>,
    /// Since when it waits for a slot of its ring (`status.ringWaitingSince`).
    slot_waiting_since: Option<i64>,
}

/// What the ring pass last read of one DovecotRing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RingReading {
    /// Hosts in the ring, as the first Ready director lists them.
    pub hosts: Option<i32>,
    /// Users mapped over all hosts.
    pub users: Option<u64>,
    /// Backends its record holds out.
    pub out: i64,
    /// Every Ready director says `ring synced` and they agree; None: not read.
    pub synced: Option<bool>,
    /// The oldest `started` of the backends a deleted DBU left out (epoch seconds): no DBU
    /// reports those.
    pub left_out_since: Option<i64>,
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
    stalled: Gauge,
    out_since: Gauge,
    paused_since: Gauge,
    slot_waiting_since: Gauge,
    leader: Gauge,
    ring_hosts: Family<RingLabels, Gauge>,
    ring_users: Family<RingLabels, Gauge>,
    ring_out: Family<RingLabels, Gauge>,
    ring_synced: Family<RingLabels, Gauge>,
    dbus: Mutex<HashMap<String, DbuState>>,
    rings: Mutex<HashMap<(String, String), RingReading>>,
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
        let stalled = Gauge::default();
        registry.register(
            "rollouts_stalled",
            "DBUs whose Stalled condition is True (a failed backend, or a spec or cluster that needs a human)",
            stalled.clone(),
        );
        let out_since = Gauge::default();
        registry.register(
            "backend_out_since_timestamp_seconds",
            "When the backend that has been out of its ring longest went out (Drain; epoch seconds; 0: none out)",
            out_since.clone(),
        );
        let paused_since = Gauge::default();
        registry.register(
            "paused_since_timestamp_seconds",
            "Since when the DBU paused longest has been paused (epoch seconds; 0: none paused)",
            paused_since.clone(),
        );
        let slot_waiting_since = Gauge::default();
        registry.register(
            "slot_waiting_since_timestamp_seconds",
            "Since when the DBU waiting longest for a slot of its ring (RingBusy) has waited (epoch seconds; 0: none waits)",
            slot_waiting_since.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controller (holds the leader Lease, or runs without election)",
            leader.clone(),
        );
        let ring_hosts = Family::<RingLabels, Gauge>::default();
        registry.register(
            "ring_hosts",
            "Hosts in the director ring, as its first Ready director lists them",
            ring_hosts.clone(),
        );
        let ring_users = Family::<RingLabels, Gauge>::default();
        registry.register(
            "ring_users",
            "Users the director ring maps over all its hosts",
            ring_users.clone(),
        );
        let ring_out = Family::<RingLabels, Gauge>::default();
        registry.register(
            "ring_backends_out",
            "Backends the ring's record holds out of the ring",
            ring_out.clone(),
        );
        let ring_synced = Family::<RingLabels, Gauge>::default();
        registry.register(
            "ring_synced",
            "1 when every Ready director says ring synced and they agree, 0 when not (absent: not read)",
            ring_synced.clone(),
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
            stalled,
            out_since,
            paused_since,
            slot_waiting_since,
            leader,
            ring_hosts,
            ring_users,
            ring_out,
            ring_synced,
            dbus: Mutex::new(HashMap::new()),
            rings: Mutex::new(HashMap::new()),
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
        st.paused_since = paused.then(|| {
            out.status
                .paused_since
                .as_ref()
                .map(|t| t.0.as_second())
                .or(st.paused_since)
                .unwrap_or(now as i64)
        });
        st.slot_waiting_since = out
            .status
            .ring_waiting_since
            .as_ref()
            .map(|t| t.0.as_second());
        st.out_since = out
            .status
            .backends
            .iter()
            .filter(|r| crate::machine::active(r))
            .filter_map(|r| r.started.as_ref().map(|t| t.0.as_second()))
            .min();
        st.stalled = out
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True");
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

    /// This replica no longer leads: it reports no DBU and no ring (the leader does).
    pub fn forget_all(&self) {
        let mut dbus = self.dbus.lock().expect("metrics lock");
        dbus.clear();
        self.leading(false);
        {
            let mut rings = self.rings.lock().expect("metrics lock");
            for (ns, ring) in rings.keys() {
                self.remove_ring(ns, ring);
            }
            rings.clear();
        }
        self.refresh(&dbus);
    }

    /// Whether this replica runs the controller now.
    pub fn leading(&self, yes: bool) {
        self.leader.set(i64::from(yes));
    }

    /// What a ring pass read of the ring `namespace/name`; `existing` are the rings that still
    /// exist (a deleted ring's series go).
    pub fn ring(
        &self,
        namespace: &str,
        name: &str,
        read: RingReading,
        existing: &[(String, String)],
    ) {
        // always the DBUs' lock first, then the rings'
        let dbus = self.dbus.lock().expect("metrics lock");
        let mut rings = self.rings.lock().expect("metrics lock");
        rings.insert((namespace.to_string(), name.to_string()), read);
        let gone: Vec<(String, String)> = rings
            .keys()
            .filter(|k| !existing.contains(k))
            .cloned()
            .collect();
        for k in gone {
            rings.remove(&k);
            self.remove_ring(&k.0, &k.1);
        }
        for ((ns, ring), r) in rings.iter() {
            let l = RingLabels {
                namespace: ns.clone(),
                ring: ring.clone(),
            };
            self.ring_out.get_or_create(&l).set(r.out);
            let set = |f: &Family<RingLabels, Gauge>, v: Option<i64>| match v {
                Some(v) => {
                    f.get_or_create(&l).set(v);
                }
                None => {
                    f.remove(&l);
                }
            };
            set(&self.ring_hosts, r.hosts.map(i64::from));
            set(
                &self.ring_users,
                r.users.map(|u| i64::try_from(u).unwrap_or(i64::MAX)),
            );
            set(&self.ring_synced, r.synced.map(i64::from));
        }
        self.refresh_since(&dbus, &rings);
    }

    fn remove_ring(&self, namespace: &str, ring: &str) {
        let l = RingLabels {
            namespace: namespace.to_string(),
            ring: ring.to_string(),
        };
        for f in [
            &self.ring_hosts,
            &self.ring_users,
            &self.ring_out,
            &self.ring_synced,
        ] {
            f.remove(&l);
        }
    }

    /// The "since" gauges: the oldest time over every DBU (and ring, for left-out backends).
    fn refresh_since(
        &self,
        dbus: &HashMap<String, DbuState>,
        rings: &HashMap<(String, String), RingReading>,
    ) {
        let oldest = |it: &mut dyn Iterator<Item = Option<i64>>| it.flatten().min().unwrap_or(0);
        self.out_since.set(oldest(
            &mut dbus
                .values()
                .map(|d| d.out_since)
                .chain(rings.values().map(|r| r.left_out_since)),
        ));
        self.paused_since
            .set(oldest(&mut dbus.values().map(|d| d.paused_since)));
        self.slot_waiting_since
            .set(oldest(&mut dbus.values().map(|d| d.slot_waiting_since)));
    }

    fn refresh(&self, dbus: &HashMap<String, DbuState>) {
        self.refresh_since(dbus, &self.rings.lock().expect("metrics lock"));
        self.stalled
            .set(dbus.values().filter(|d| d.stalled).count() as i64);
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
            earlier: Vec::new(),
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

    #[test]
    fn alert_gauges_take_the_oldest_over_dbus_and_rings() {
        let m = Metrics::new();
        let at = |s: i64| Some(Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
        let out = |started: i64| {
            let mut r = rec("backend-1", Step::Verify);
            r.started = at(started);
            r
        };
        let mut a = outcome(Phase::Failed, vec![out(2_000)], vec![]);
        a.status.conditions = vec![Condition {
            type_: "Stalled".into(),
            status: "True".into(),
            reason: "BackendFailed".into(),
            message: "m".into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }];
        let mut b = outcome(Phase::Paused, vec![out(1_500)], vec![]);
        b.status.ring_waiting_since = at(1_700);
        m.record("mail/a", &a, 3_000.0);
        m.record("mail/b", &b, 3_100.0);
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_rollouts_stalled "),
            Some("dbu_rollouts_stalled 1")
        );
        assert_eq!(
            line(&t, "dbu_backend_out_since_timestamp_seconds "),
            Some("dbu_backend_out_since_timestamp_seconds 1500")
        );
        // paused without status.pausedSince: since this replica first saw it paused
        m.record("mail/b", &b, 3_200.0);
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_paused_since_timestamp_seconds "),
            Some("dbu_paused_since_timestamp_seconds 3100")
        );
        assert_eq!(
            line(&t, "dbu_slot_waiting_since_timestamp_seconds "),
            Some("dbu_slot_waiting_since_timestamp_seconds 1700")
        );
        // a backend a deleted DBU left out, known only to the ring, is older still
        let key = ("mail".to_string(), "ring".to_string());
        let read = RingReading {
            hosts: Some(3),
            users: Some(40),
            out: 2,
            synced: Some(false),
            left_out_since: Some(900),
        };
        m.ring("mail", "ring", read.clone(), std::slice::from_ref(&key));
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_backend_out_since_timestamp_seconds "),
            Some("dbu_backend_out_since_timestamp_seconds 900")
        );
        assert_eq!(
            line(&t, "dbu_ring_synced{"),
            Some("dbu_ring_synced{namespace=\"mail\",ring=\"ring\"} 0")
        );
        assert_eq!(
            line(&t, "dbu_ring_users{"),
            Some("dbu_ring_users{namespace=\"mail\",ring=\"ring\"} 40")
        );
        // a ring not read (no Ready director) shows no synced series; a deleted one none at all
        m.ring(
            "mail",
            "ring",
            RingReading {
                synced: None,
                ..read
            },
            std::slice::from_ref(&key),
        );
        assert_eq!(line(&m.encode(), "dbu_ring_synced{"), None);
        m.ring(
            "mail",
            "other",
            RingReading::default(),
            &[("mail".into(), "other".into())],
        );
        let t = m.encode();
        assert_eq!(
            line(&t, "dbu_ring_hosts{namespace=\"mail\",ring=\"ring\""),
            None
        );
        assert_eq!(
            line(&t, "dbu_backend_out_since_timestamp_seconds "),
            Some("dbu_backend_out_since_timestamp_seconds 1500")
        );
        // nothing out, nothing paused, no leader: zeros
        m.record(
            "mail/a",
            &outcome(Phase::Completed, vec![], vec![]),
            4_000.0,
        );
        m.forget("mail/b");
        m.leading(true);
        m.forget_all();
        let t = m.encode();
        for g in [
            "dbu_backend_out_since_timestamp_seconds",
            "dbu_paused_since_timestamp_seconds",
            "dbu_slot_waiting_since_timestamp_seconds",
            "dbu_rollouts_stalled",
            "dbu_leader",
        ] {
            assert_eq!(line(&t, &format!("{g} ")), Some(format!("{g} 0").as_str()));
        }
    }

    /// Every `dbu_` metric the chart's alerts and dashboard query is one the operator exports
    /// (a renamed metric would leave an alert that never fires).
    #[test]
    fn alerts_and_dashboard_query_only_exported_metrics() {
        // families show only once they have a series: one ring read
        let m = Metrics::new();
        let ring = ("mail".to_string(), "ring".to_string());
        m.ring(
            "mail",
            "ring",
            RingReading {
                hosts: Some(1),
                users: Some(1),
                out: 0,
                synced: Some(true),
                left_out_since: None,
            },
            std::slice::from_ref(&ring),
        );
        m.record("mail/a", &outcome(Phase::Progressing, vec![], vec![]), 1.0);
        let exported: Vec<String> = m
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect();
        let known = |name: &str| {
            exported.iter().any(|e| {
                name == e
                    || ["_total", "_count", "_sum", "_bucket"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(e.as_str()))
            })
        };
        for (file, text) in [
            (
                "prometheusrule.yaml",
                include_str!("../charts/dovecot-upgrade-operator/templates/prometheusrule.yaml"),
            ),
            (
                "dashboard.json",
                include_str!("../charts/dovecot-upgrade-operator/files/dashboard.json"),
            ),
        ] {
            let mut seen = 0;
            for (i, _) in text.match_indices("dbu_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name == "dbu_" {
                    continue; // the prefix itself, in prose
                }
                assert!(
                    known(&name),
                    "{file} queries {name}, which the operator does not export"
                );
                seen += 1;
            }
            assert!(seen > 5, "{file}: {seen} metrics found");
        }
    }
}
