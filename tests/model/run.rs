//! Random event sequences over the model world: each event applied, the operator's passes run
//! through the real controller path (settings, ring binding, `engine::reconcile_once`,
//! `engine::cleanup`, `engine::ring_pass`), the invariants judged after every step, and the
//! rollouts driven to their end once the events stop (liveness).

use std::collections::BTreeMap;
use std::time::Duration;

use dbu_core::api::{DovecotBackendUpgradeStatus, DovecotRing, Phase, RETRY_ANNOTATION};
use dbu_core::conditions;
use dbu_core::machine::face::BackendPod;
use dbu_core::reason::EventReason;
use dovecot_upgrade_operator::engine::{self, RingWorld};
use dovecot_upgrade_operator::settings::{self, Policy};
use futures::FutureExt;
use proptest::prelude::*;

use super::world::{Revision, State, USERS, World};

/// DBU names and the StatefulSet each rolls.
pub const DBUS: [(&str, &str); 2] = [("mail/a", "backend"), ("mail/b", "mx")];

/// One thing that happens in the world, or one pass of the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// One reconcile of a DBU (by index), as the controller runs it.
    Pass(u8),
    /// The ring's own pass.
    RingPass,
    /// Time passes (seconds).
    Tick(u16),
    /// A new leader (see `apply`: it decides from the status as last written).
    OperatorRestart,
    /// The next pass of a DBU dies after this many execs: what it did stays, its status is lost.
    Kill(u8, u8),
    /// The next exec fails before it runs.
    ExecFails,
    /// The next exec runs but its answer is lost (the operator times out).
    ExecLost,
    /// The next status write of a DBU conflicts.
    StatusConflict(u8),
    /// The next write of the ring's record conflicts.
    RingConflict,
    /// A director restarts: it forgets and re-learns the ring's state from the other one.
    DirectorRestart(u8),
    /// A director stops receiving the ring's changes, until `CatchUp`.
    DirectorLags(u8),
    CatchUp,
    /// A backend pod is deleted and recreated: at its IP, at a new IP, or at a free old IP.
    PodDeleted(u8),
    PodMoved(u8),
    PodTakesOldIp(u8),
    /// The pod's next incarnation never becomes Ready (until `Fix`).
    NeverReady(u8),
    /// The pod's node is cordoned for maintenance (kubectl drain, a node-pool upgrade), or no
    /// longer: the operator relocates a pod on a cordoned node.
    NodeCordoned(u8),
    NodeUncordoned(u8),
    /// A new pod template: good, broken (Verify fails), or with mail in the cache volume.
    NewTemplate(Template),
    /// Readiness unblocked and a good template on top.
    Fix,
    Pause(u8, bool),
    Abort(u8),
    Skip(u8, u8),
    Retry(u8),
    MaxUnavailable(u8, u8),
    DeleteDbu(u8),
    CreateDbu(u8),
    /// StatefulSet `i` keeps one pod fewer (its highest ordinal goes, never to return).
    ScaleDown(u8),
    HumanDown(u8),
    HumanUp(u8),
    HumanUpdate(u8, u8),
    Login(u8, u8),
    Logout(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    Good,
    Broken,
    MailInCache,
}

/// Events, weighted: operator passes most, the rest as faults. `open`: the events among those
/// whose violations are known and not fixed yet (`KNOWN_OPEN`) that are drawn too; CI explores
/// without them.
pub fn event(open: Vec<String>) -> BoxedStrategy<Ev> {
    let all = prop_oneof![
        30 => (0u8..2).prop_map(Ev::Pass),
        4 => Just(Ev::RingPass),
        6 => (1u16..90).prop_map(Ev::Tick),
        2 => Just(Ev::OperatorRestart),
        2 => ((0u8..2), (0u8..8)).prop_map(|(d, n)| Ev::Kill(d, n)),
        2 => Just(Ev::ExecFails),
        2 => Just(Ev::ExecLost),
        1 => (0u8..2).prop_map(Ev::StatusConflict),
        1 => Just(Ev::RingConflict),
        1 => (0u8..2).prop_map(Ev::DirectorRestart),
        1 => (0u8..2).prop_map(Ev::DirectorLags),
        2 => Just(Ev::CatchUp),
        1 => (0u8..8).prop_map(Ev::PodDeleted),
        1 => (0u8..8).prop_map(Ev::PodMoved),
        1 => (0u8..8).prop_map(Ev::PodTakesOldIp),
        1 => (0u8..8).prop_map(Ev::NeverReady),
        1 => (0u8..8).prop_map(Ev::NodeCordoned),
        1 => (0u8..8).prop_map(Ev::NodeUncordoned),
        1 => (0u8..2).prop_map(Ev::ScaleDown),
        2 => prop_oneof![4 => Just(Template::Good), 1 => Just(Template::Broken), 1 => Just(Template::MailInCache)].prop_map(Ev::NewTemplate),
        1 => Just(Ev::Fix),
        1 => ((0u8..2), any::<bool>()).prop_map(|(d, p)| Ev::Pause(d, p)),
        1 => (0u8..2).prop_map(Ev::Abort),
        1 => ((0u8..2), (0u8..4)).prop_map(|(d, p)| Ev::Skip(d, p)),
        1 => (0u8..2).prop_map(Ev::Retry),
        1 => ((0u8..2), (1u8..3)).prop_map(|(d, n)| Ev::MaxUnavailable(d, n)),
        1 => (0u8..2).prop_map(Ev::DeleteDbu),
        1 => (0u8..2).prop_map(Ev::CreateDbu),
        1 => (0u8..8).prop_map(Ev::HumanDown),
        1 => (0u8..8).prop_map(Ev::HumanUp),
        1 => ((0u8..8), (1u8..4)).prop_map(|(p, n)| Ev::HumanUpdate(p, n)),
        4 => ((0u8..5), (0u8..2)).prop_map(|(u, d)| Ev::Login(u, d)),
        2 => (0u8..5).prop_map(Ev::Logout),
    ];
    // mapped, not filtered: a filter over every event of 100,000 sequences rejects too often
    all.prop_map(move |e| {
        let drawn = || {
            let name = format!("{e:?}");
            open.iter()
                .any(|o| name.split('(').next() == Some(o.as_str()))
        };
        if known_open_event(&e) && !drawn() {
            Ev::Tick(1)
        } else {
            e
        }
    })
    .boxed()
}

/// The known-open events `DBU_MODEL_OPEN` asks for: `1` all of them, or names separated by
/// commas (e.g. `PodMoved`); none when unset.
pub fn open_from_env() -> Vec<String> {
    match std::env::var("DBU_MODEL_OPEN") {
        Err(_) => Vec::new(),
        Ok(v) if v == "1" => KNOWN_OPEN.iter().map(|s| s.to_string()).collect(),
        Ok(v) => v.split(',').map(|s| s.trim().to_string()).collect(),
    }
}

/// Events that still break a promise, each with a shrunk case in `tests/model_based.rs`
/// (`known_open_*`, ignored until fixed), left out of CI's draw until then (by the name of the
/// event). None now: `PodTakesOldIp` (a pod recreated at an IP the ring has for another pod)
/// was, until its last cases were fixed (docs/design.md, items 66 and 68); `PodMoved` and
/// `HumanUpdate` were before it.
pub const KNOWN_OPEN: &[&str] = &[];

/// Whether `e` is one of the `KNOWN_OPEN` events.
pub fn known_open_event(e: &Ev) -> bool {
    // drawn for every event of every sequence: nothing is formatted while the list is empty
    if KNOWN_OPEN.is_empty() {
        return false;
    }
    let name = format!("{e:?}");
    let name = name.split('(').next().unwrap_or_default();
    KNOWN_OPEN.contains(&name)
}

/// A world to start from: StatefulSet sizes and whether DBU b exists at the start.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub per_sts: [usize; 2],
    pub both: bool,
}

pub fn start() -> impl Strategy<Value = Start> {
    ((1usize..3), (1usize..3), any::<bool>()).prop_map(|(a, b, both)| Start {
        per_sts: [a, b],
        both,
    })
}

/// What a sequence ended with.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub passes: u32,
    pub completed: u32,
    pub failed_logins: u32,
    /// The DBUs' status writes and step transitions (`State::writes`).
    pub writes: super::world::Writes,
    pub log: Vec<String>,
}

fn spec_for(sts: &str) -> serde_json::Value {
    serde_json::json!({
        "backends": {"statefulSet": sts},
        "ring": super::world::RING,
        "director": null,
        "verify": {"user": super::world::VERIFY_USER, "soak": {"enabled": false}},
        "drain": {"strategy": "Move", "timeout": "60s", "pollInterval": "5s"},
    })
}

fn dbu(name: &str, sts: &str) -> super::world::Dbu {
    super::world::Dbu {
        name: name.to_string(),
        sts: sts.to_string(),
        spec: spec_for(sts),
        annotations: BTreeMap::new(),
        status: DovecotBackendUpgradeStatus::default(),
        deleting: false,
        generation: 1,
    }
}

/// The run of one sequence.
pub struct Run {
    pub world: World,
}

impl Run {
    pub fn new(start: Start, log: bool) -> Run {
        let mut st = State::new(start.per_sts, true);
        st.log_on = log;
        for (k, (name, sts)) in DBUS.iter().enumerate() {
            if k == 0 || start.both {
                st.dbus.insert(name.to_string(), dbu(name, sts));
            }
        }
        // every rollout starts from a new template
        st.revisions.insert("rev-2".into(), Revision::default());
        st.update_revision = "rev-2".into();
        let log = st.log_on;
        let mut run = Run {
            world: World::new(st),
        };
        // the operator has watched the ring before the events begin: its record of which pod
        // each host stands for is what a pod back at a new IP rejoins by. The first world of a
        // start is always the same, so is that pass's record: it is kept per start and thread
        // (a ring pass costs as much as a short sequence)
        thread_local! {
            static FIRST: std::cell::RefCell<Vec<([usize; 2], bool, dbu_core::api::DovecotRingStatus)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = (start.per_sts, start.both);
        let cached = FIRST.with(|f| {
            f.borrow()
                .iter()
                .find(|(p, b, _)| (*p, *b) == key)
                .map(|(_, _, s)| s.clone())
        });
        match cached {
            Some(status) if !log => run.world.lock().ring_status = status,
            _ => {
                run.ring_pass();
                let status = run.world.lock().ring_status.clone();
                FIRST.with(|f| f.borrow_mut().push((key.0, key.1, status)));
            }
        }
        run
    }

    fn pod_name(&self, i: u8) -> Option<String> {
        let st = self.world.lock();
        let names: Vec<&String> = st.pods.keys().collect();
        (!names.is_empty()).then(|| names[i as usize % names.len()].clone())
    }

    fn dbu_name(i: u8) -> &'static str {
        DBUS[i as usize % DBUS.len()].0
    }

    fn edit(&self, i: u8, f: impl FnOnce(&mut super::world::Dbu)) {
        let mut st = self.world.lock();
        if let Some(d) = st.dbus.get_mut(Self::dbu_name(i))
            && !d.deleting
        {
            f(d);
            d.generation += 1;
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: &Ev) {
        self.world.lock().note(|| format!("{ev:?}"));
        let before = self.serving();
        match ev {
            Ev::Pass(i) => {
                self.world.lock().human_unread.clear();
                self.pass(Self::dbu_name(*i))
            }
            Ev::RingPass => self.ring_pass(),
            Ev::Tick(s) => self.tick(Duration::from_secs(u64::from(*s))),
            // a new leader starts its watches with a quorum list (kube's default list
            // semantic), and a deposed leader writes nothing once the Lease is not its own
            // (status and the ring's record are fenced like exec): its first pass decides
            // from the status as last written. A pass cut short is `Kill`.
            Ev::OperatorRestart => {}
            Ev::Kill(i, n) => {
                self.world.lock().faults.kill_after = Some(u32::from(*n));
                self.pass(Self::dbu_name(*i));
                self.world.lock().faults.kill_after = None;
            }
            Ev::ExecFails => self.world.lock().faults.exec_fails += 1,
            Ev::ExecLost => self.world.lock().faults.exec_lost += 1,
            Ev::StatusConflict(i) => {
                *self
                    .world
                    .lock()
                    .faults
                    .status_conflicts
                    .entry(Self::dbu_name(*i).to_string())
                    .or_default() += 1;
            }
            Ev::RingConflict => self.world.lock().faults.ring_conflicts += 1,
            Ev::DirectorRestart(d) => {
                let mut st = self.world.lock();
                let d = *d as usize % st.directors.len();
                let from = (0..st.directors.len())
                    .find(|&o| o != d && st.directors[o].running && !st.directors[o].lagging);
                // re-learnt from the ring; with no other member to learn from it would start
                // from its configuration, which a restart of one director never meets here
                if let Some(o) = from {
                    let (hosts, map) = (st.directors[o].hosts.clone(), st.directors[o].map.clone());
                    let me = &mut st.directors[d];
                    me.hosts = hosts;
                    me.map = map;
                    me.lagging = false;
                    me.running = true;
                }
            }
            Ev::DirectorLags(d) => {
                let mut st = self.world.lock();
                let d = *d as usize % st.directors.len();
                // one member lags at a time: the other holds the ring's state
                if !st.directors.iter().any(|x| x.lagging) {
                    st.directors[d].lagging = true;
                }
            }
            Ev::CatchUp => catch_up(&mut self.world.lock()),
            Ev::PodDeleted(i) | Ev::PodMoved(i) | Ev::PodTakesOldIp(i) => {
                if let Some(name) = self.pod_name(*i) {
                    self.recreate(&name, ev);
                }
            }
            Ev::NodeCordoned(i) | Ev::NodeUncordoned(i) => {
                if let Some(name) = self.pod_name(*i) {
                    let mut st = self.world.lock();
                    st.pods.get_mut(&name).expect("pod").cordoned =
                        matches!(ev, Ev::NodeCordoned(_));
                }
            }
            Ev::NeverReady(i) => {
                if let Some(name) = self.pod_name(*i) {
                    self.world.lock().never_ready.insert(name);
                }
            }
            Ev::ScaleDown(i) => self
                .world
                .lock()
                .scale_down(DBUS[*i as usize % DBUS.len()].1),
            Ev::NewTemplate(t) => {
                let mut st = self.world.lock();
                let rev = format!("rev-{}", st.revisions.len() + 1);
                let r = Revision {
                    broken: *t == Template::Broken,
                    mail_in_cache: *t == Template::MailInCache,
                };
                st.revisions.insert(rev.clone(), r);
                st.update_revision = rev;
            }
            Ev::Fix => {
                let mut st = self.world.lock();
                st.never_ready.clear();
                let blocked: Vec<String> = st
                    .pods
                    .iter()
                    .filter(|(_, p)| p.blocked)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in blocked {
                    let p = st.pods.get_mut(&n).expect("pod");
                    p.blocked = false;
                    p.dovecot = true;
                    p.lmtp = true;
                }
                let cur = st
                    .revisions
                    .get(&st.update_revision)
                    .copied()
                    .unwrap_or_default();
                if cur != Revision::default() {
                    let rev = format!("rev-{}", st.revisions.len() + 1);
                    st.revisions.insert(rev.clone(), Revision::default());
                    st.update_revision = rev;
                }
            }
            Ev::Pause(i, p) => self.edit(*i, |d| d.spec["paused"] = serde_json::json!(p)),
            Ev::Abort(i) => self.edit(*i, |d| d.spec["abort"] = serde_json::json!(true)),
            Ev::Skip(i, p) => {
                let sts = DBUS[*i as usize % DBUS.len()].1;
                let pod = format!("{sts}-{}", p % 2);
                self.edit(*i, |d| d.spec["skip"] = serde_json::json!([pod]));
            }
            Ev::Retry(i) => {
                let token = format!("t{}", self.world.lock().judged.logins);
                self.edit(*i, |d| {
                    d.annotations.insert(RETRY_ANNOTATION.to_string(), token);
                });
            }
            Ev::MaxUnavailable(i, n) => {
                self.edit(*i, |d| d.spec["maxUnavailable"] = serde_json::json!(n))
            }
            Ev::DeleteDbu(i) => {
                let mut st = self.world.lock();
                if let Some(d) = st.dbus.get_mut(Self::dbu_name(*i)) {
                    d.deleting = true;
                }
            }
            Ev::CreateDbu(i) => {
                let (name, sts) = DBUS[*i as usize % DBUS.len()];
                let mut st = self.world.lock();
                st.dbus
                    .entry(name.to_string())
                    .or_insert_with(|| dbu(name, sts));
            }
            Ev::HumanDown(i) | Ev::HumanUp(i) | Ev::HumanUpdate(i, _) => {
                if let Some(name) = self.pod_name(*i) {
                    self.human(&name, ev);
                }
            }
            Ev::Login(u, d) => self
                .world
                .lock()
                .login(USERS[*u as usize % USERS.len()], *d as usize % 2),
            Ev::Logout(u) => self.world.lock().logout(USERS[*u as usize % USERS.len()]),
        }
        // the operator never takes the last serving host of a director out (a human may)
        if matches!(ev, Ev::Pass(_) | Ev::Kill(..) | Ev::RingPass) {
            self.judge_serving(&before);
        }
        self.judge();
    }

    /// Hosts that take users on each running director: up, vhosts > 0, and not a pod whose
    /// Dovecot is stopped (that serves nobody, whatever the ring says; an IP no pod has may be
    /// a host outside the cluster, as the operator must assume).
    fn serving(&self) -> Vec<(String, usize)> {
        let st = self.world.lock();
        st.directors
            .iter()
            .filter(|d| d.running)
            .map(|d| {
                let n = d
                    .hosts
                    .iter()
                    .filter(|(ip, h)| {
                        // every host of the model is a pod: an entry no pod has (its pod moved
                        // or was scaled away) serves nobody
                        h.up && h.vhosts > 0 && st.pod_at(ip).is_some_and(|(_, p)| p.dovecot)
                    })
                    .count();
                (d.name.clone(), n)
            })
            .collect()
    }

    fn judge_serving(&mut self, before: &[(String, usize)]) {
        for (d, n) in self.serving() {
            let had = before.iter().any(|(b, m)| *b == d && *m > 0);
            if had && n == 0 {
                self.world
                    .lock()
                    .violation(format!("the operator left {d} with no host serving"));
            }
        }
    }

    pub fn tick(&mut self, by: Duration) {
        let mut st = self.world.lock();
        st.now = dbu_core::time::after(st.now, by);
    }

    fn recreate(&mut self, name: &str, how: &Ev) {
        let mut st = self.world.lock();
        let old_ip = st.pods[name].ip.clone();
        let new_ip = match how {
            Ev::PodMoved(_) => st.fresh_ip(),
            Ev::PodTakesOldIp(_) => {
                // an IP some pod had before and no pod has now; not one whose last pod sits
                // at another pod's old IP itself, nor by a pod whose own old IP another pod
                // sits at: pods that take each other's entries (a swap, a chain) before any of
                // them rejoins keep the entries' counts, which the ring's record cannot tell
                // apart (a limit in docs/design.md)
                // (nor by a pod that sits at another pod's old IP itself: it hops on before it
                // rejoins, a chain; seed 7 drew one through an IP the ring no longer had)
                let chained = st.squatting.contains(name)
                    || st.squatting.iter().any(|q| {
                        st.pods.get(q).is_some_and(|p| {
                            st.left_by.get(&p.ip).map(String::as_str) == Some(name)
                        })
                    });
                let free: Vec<String> = st
                    .ip_owner
                    .iter()
                    .filter(|(ip, owner)| {
                        !chained
                            && st.pod_at(ip).is_none()
                            && !st.squatting.contains(*owner)
                            && !st.human_left.contains(*ip)
                    })
                    .map(|(ip, _)| ip.clone())
                    .collect();
                match free.first() {
                    Some(ip) => ip.clone(),
                    None => st.fresh_ip(),
                }
            }
            // a pod whose node is under maintenance comes back on another node
            _ if st.pods[name].cordoned => st.fresh_ip(),
            _ => old_ip.clone(),
        };
        st.recreate_at(name, &new_ip, matches!(how, Ev::PodTakesOldIp(_)));
    }

    fn human(&mut self, name: &str, ev: &Ev) {
        let mut st = self.world.lock();
        let ip = st.pods[name].ip.clone();
        let Some(d) =
            (0..st.directors.len()).find(|&d| st.directors[d].running && !st.directors[d].lagging)
        else {
            return;
        };
        if !st.directors[d].hosts.contains_key(&ip) {
            return;
        }
        let argv = |w: &[&str]| -> Vec<String> {
            ["doveadm", "director"]
                .iter()
                .chain(w.iter())
                .map(|s| s.to_string())
                .collect()
        };
        // ... also after a rewind (the record says the operator downed it: a pod recreated after
        // RingRemove goes back to StopLmtp with its host still down), and while the ring keeps a
        // left-out backend down for the DBU that finishes it
        let ours = st.dbus.values().any(|x| {
            x.status.backends.iter().any(|r| {
                r.pod == name
                    && dbu_core::machine::active(r)
                    && (r.downed
                        || (dbu_core::api::Step::RingRemove..=dbu_core::api::Step::RingRestore)
                            .contains(&r.step))
            })
        }) || st
            .ring_out
            .iter()
            .any(|h| h.pod == name && h.left_out.is_some())
            // an up in a soak is not taken for a human's (a restarted director shows one; the
            // record keeps the up/down it began with, as docs/design.md says)
            || (matches!(ev, Ev::HumanUp(_))
                && st.dbus.values().any(|x| {
                    x.status.backends.iter().any(|r| {
                        r.pod == name && r.step == dbu_core::api::Step::Soak && !r.failed
                    })
                }));
        // at another pod's old IP, not yet put back there by the operator: whose backend a
        // human means by that entry cannot be told (its state is the other pod's until that
        // one rejoins elsewhere, carrying it), so no command there is drawn (a limit in
        // docs/design.md)
        if st.squatting.contains(name) {
            return;
        }
        // a command the ring refuses (a member not synced) changes nothing: the human tries
        // again later, or not
        let verb = match ev {
            Ev::HumanDown(_) => vec!["down".to_string(), ip.clone()],
            Ev::HumanUp(_) if st.human_down.contains(&ip) => vec!["up".to_string(), ip.clone()],
            Ev::HumanUpdate(_, n) => {
                vec![
                    "update".to_string(),
                    ip.clone(),
                    (u32::from(*n) * 40).to_string(),
                ]
            }
            _ => return,
        };
        let words: Vec<&str> = verb.iter().map(String::as_str).collect();
        if !human_exec(&mut st, d, &argv(&words)) {
            return;
        }
        st.human_unread.insert(ip.clone());
        // a human who puts a pod the world made back (up, or a count on a host that is up)
        // lets it serve: the operator undoing its own drain there later (the count it took,
        // which is why an `up` counts at 0 vhosts) puts back what the human put in service,
        // not an unverified pod (a pod the operator stopped or made still waits for Verify)
        let up = st.directors[d].hosts.get(&ip).is_some_and(|h| h.up);
        let puts_back = match ev {
            Ev::HumanUp(_) => true,
            Ev::HumanUpdate(_, n) => up && *n > 0,
            _ => false,
        };
        if puts_back {
            let p = st.pods.get_mut(name).expect("pod");
            if !p.stopped_by_us && !p.made_by_operator && !p.blocked {
                p.trusted = true;
            }
        }
        if ours {
            st.ambiguous.insert(ip.clone());
        }
        match ev {
            // from RingRemove to RingRestore the operator takes the host down and puts it back
            // itself: a human's down then cannot be told from its own (the docs say to take a
            // backend down before or after its rollout, or to pause first)
            Ev::HumanDown(_) if !ours => {
                st.human_down.insert(ip.clone());
            }
            // a human takes back only their own down
            Ev::HumanUp(_) => {
                st.human_down.remove(&ip);
            }
            Ev::HumanUpdate(_, n) => {
                let n = u32::from(*n) * 40;
                st.human_vhosts.insert(ip.clone(), n);
                st.recorded.insert(name.to_string(), n);
                if st.pods[name].stopped_by_us {
                    st.human_opened.insert(ip.clone(), 0);
                }
            }
            _ => {}
        }
    }

    /// One reconcile of DBU `name` as the controller runs it (or its cleanup while deleting).
    /// One pass of a DBU. A write of the ring's record wakes the ring's own pass in the
    /// controller (its watch); here a claim or a release does (the writes whose pass the record
    /// of which pod a host stands for needs: a backend back at a new IP, or one at another
    /// pod's old IP seen before the operator changes that entry), not every status write, for
    /// speed.
    pub fn pass(&mut self, name: &str) {
        // a hand-over to the ring (a holder left out) is a write of the record too
        let held = |w: &World| -> Vec<(String, String, bool)> {
            w.lock()
                .ring_out
                .iter()
                .map(|h| (h.pod.clone(), h.ip.clone(), h.left_out.is_some()))
                .collect()
        };
        let before = held(&self.world);
        self.pass_once(name);
        let after = held(&self.world);
        if before != after {
            self.ring_pass();
        }
    }

    fn pass_once(&mut self, name: &str) {
        {
            // a host a human opened on a stopped backend is the operator's again after three
            // passes of the DBU that holds it that no fault cuts short
            let mut st = self.world.lock();
            let f = &st.faults;
            let faulty = f.exec_fails > 0
                || f.exec_lost > 0
                || f.kill_after.is_some()
                || f.status_conflicts.get(name).is_some_and(|n| *n > 0);
            let mine: Vec<String> = st
                .dbus
                .get(name)
                .map(|d| {
                    d.status
                        .backends
                        .iter()
                        .filter(|r| dbu_core::machine::active(r))
                        .map(|r| r.ip.clone())
                        .collect()
                })
                .unwrap_or_default();
            if !faulty {
                age_opened(&mut st, &mine);
            }
        }
        let (dbu, ring_spec) = {
            let st = self.world.lock();
            let Some(d) = st.dbus.get(name) else {
                return;
            };
            (d.clone(), st.ring_spec.clone())
        };
        let read = dbu.status.clone();
        let spec: dbu_core::api::DovecotBackendUpgradeSpec =
            serde_json::from_value(dbu.spec.clone()).expect("model spec");
        let in_flight = read.backends.iter().any(dbu_core::machine::active);
        let s = match settings::for_dbu(&spec, &Policy::default(), &dbu.annotations, in_flight)
            .and_then(|s| settings::with_ring(s, super::world::RING, &ring_spec))
        {
            Ok(s) => s,
            Err(e) => panic!("model spec refused: {e}"),
        };
        self.world.set_view(name, &dbu.sts);
        let w = &self.world;
        let clock = || w.lock().now;
        if dbu.deleting {
            let holds_nothing =
                read.ring_held.is_empty() && !read.backends.iter().any(dbu_core::machine::active);
            let done = if holds_nothing {
                Some(dbu_core::machine::Deletion::default())
            } else {
                engine::cleanup(&s, &read, w, w, &clock, false)
                    .now_or_never()
                    .map(|r| r.expect("cleanup"))
            };
            let mut st = w.lock();
            match done {
                Some(done) if done.finished() => {
                    st.note(|| format!("  {name} deleted: {}", done.pending_message()));
                    st.dbus.remove(name);
                }
                Some(done) => st.note(|| format!("  {name} not deleted yet: {done:?}")),
                None => st.note(|| format!("  {name}: the cleanup died")),
            }
            return;
        }
        let pass = engine::reconcile_once(&s, read, Some(dbu.generation), w, w, w, &clock);
        let Some(outcome) = pass.now_or_never() else {
            w.lock().note(|| format!("  {name}: the pass died"));
            return;
        };
        let outcome = outcome.expect("the model's cluster never errs");
        let mut st = w.lock();
        for d in outcome.decisions() {
            st.note(|| format!("  {name}: {d:?}"));
        }
        let conflict = st.faults.status_conflicts.get_mut(name).filter(|n| **n > 0);
        let lost = match conflict {
            Some(n) => {
                *n -= 1;
                true
            }
            None => false,
        };
        if lost {
            st.note(|| format!("  {name}: status write conflicted"));
            return;
        }
        let first = dbu.status == Default::default();
        let (write, _) = conditions::publish_plan((!first).then_some(&dbu.status), &outcome.status);
        let moved = outcome
            .notes
            .iter()
            .filter(|n| {
                matches!(
                    n.reason,
                    EventReason::BackendStarted | EventReason::StepSucceeded
                )
            })
            .count() as u64;
        st.writes.transitions += moved;
        if write {
            st.writes.status += 1;
            let drains = |s: &DovecotBackendUpgradeStatus| -> Vec<_> {
                s.backends.iter().map(|r| r.drain.clone()).collect()
            };
            if moved == 0 && drains(&dbu.status) != drains(&outcome.status) {
                st.writes.progress += 1;
            }
        }
        if let Some(d) = st.dbus.get_mut(name) {
            d.status = outcome.status;
        }
        // time the pass took
        st.now = dbu_core::time::after(st.now, Duration::from_millis(500));
    }

    /// The ring's own pass, as the controller runs it (its face written; `out` is the DBUs').
    pub fn ring_pass(&mut self) {
        let (ring, world) = {
            let st = self.world.lock();
            let mut ring: DovecotRing = DovecotRing::new(super::world::RING, st.ring_spec.clone());
            let mut status = st.ring_status.clone();
            status.out = st.ring_out.clone();
            ring.status = Some(status);
            ring.metadata.generation = Some(1);
            let world = RingWorld {
                directors: st
                    .directors
                    .iter()
                    .filter(|d| d.running)
                    .map(|d| (d.name.clone(), Some(d.ip.clone())))
                    .collect(),
                backends: st
                    .pods
                    .iter()
                    .map(|(n, p)| BackendPod {
                        name: n.clone(),
                        ip: Some(p.ip.clone()),
                        // as the DBUs see it (`Observed::ring_unready`)
                        ready: p.dovecot && !p.blocked,
                    })
                    .collect(),
                conflict: None,
            };
            (ring, world)
        };
        let (now, version) = {
            let mut st = self.world.lock();
            let left: Vec<String> = st
                .ring_out
                .iter()
                .filter_map(|h| h.left_out.as_ref().map(|l| l.record.ip.clone()))
                .collect();
            age_opened(&mut st, &left);
            (st.now, st.ring_version)
        };
        let Some(passed) = engine::ring_pass(&ring, &world, &self.world, now).now_or_never() else {
            return;
        };
        let mut st = self.world.lock();
        if let Some(kept) = passed.keep {
            // written under the version the pass read, as the controller's merge patch is
            if st.ring_version == version {
                st.ring_version += 1;
                st.ring_out = kept;
            }
            return;
        }
        let out = st.ring_out.clone();
        st.ring_status = passed.status;
        st.ring_status.out = out;
        let hosts = match st.log_on {
            true => st.ring_status.hosts.clone(),
            false => Vec::new(),
        };
        st.note(|| {
            let hosts: Vec<String> = hosts
                .iter()
                .map(|h| {
                    format!(
                        "{} for {} counts {}",
                        h.ip,
                        h.stood_for().unwrap_or("-"),
                        h.counts_for.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            format!("  ring pass: {}", hosts.join(", "))
        });
    }

    /// The invariants that hold after every event.
    pub fn judge(&mut self) {
        let mut st = self.world.lock();
        let max = usize::try_from(st.ring_spec.max_unavailable.max(1)).unwrap_or(1);
        let mut out_pods: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for (n, p) in &st.pods {
            if p.stopped_by_us {
                out_pods.insert(n.clone());
            }
        }
        // a lagging director's view is an old one (it refuses changes until it catches up)
        for d in st.directors.iter().filter(|d| d.running && !d.lagging) {
            for (ip, h) in &d.hosts {
                let human = st.human_down.contains(ip)
                    || st.human_vhosts.get(ip) == Some(&0)
                    || (st.ambiguous.contains(ip) && h.vhosts > 0);
                // an entry whose pod is at another IP now, or gone, serves nobody either way:
                // zeroing it moves users off a dead host and takes no capacity (the world took
                // it out)
                let dead = |owner: &String| st.pods.get(owner).is_none_or(|p| p.ip != *ip);
                if (h.vhosts == 0 || !h.up)
                    && !human
                    && let Some(owner) = st.ip_owner.get(ip)
                    && !dead(owner)
                    && !st.pods[owner].came_back_out
                    // a pod that never became Ready serves nobody: the world took it out
                    && !st.pods[owner].blocked
                {
                    out_pods.insert(owner.clone());
                }
            }
        }
        if out_pods.len() > max {
            let v = format!(
                "{} backends out of the ring at once (ring allows {max}): {out_pods:?}",
                out_pods.len()
            );
            st.violation(v);
        }
    }

    /// Stops the faults, resumes every rollout, and drives them to their end; then the state
    /// every host must be back at.
    pub fn settle(&mut self) -> u32 {
        {
            let mut st = self.world.lock();
            st.faults = Default::default();
            for d in st.directors.iter_mut() {
                d.running = true;
            }
            catch_up(&mut st);
            for d in st.dbus.values_mut() {
                if d.spec["paused"] == serde_json::json!(true) {
                    d.spec["paused"] = serde_json::json!(false);
                    d.generation += 1;
                }
            }
        }
        self.apply(&Ev::Fix);
        let mut passes = 0;
        for round in 0..400 {
            // a backend a deleted DBU left out waits for the next DBU of its StatefulSet (or a
            // human's release): the author applies it again, as the docs say
            let left: Vec<u8> = {
                let st = self.world.lock();
                // ... and so does a pod back at a new IP that its StatefulSet's DBU rejoins
                // (the ring's record names it; a rollout of the ring waits for it meanwhile)
                let moved = |sts: &str| moved_out(&st).contains(&sts.to_string());
                (0..DBUS.len() as u8)
                    .filter(|i| {
                        let (name, sts) = DBUS[*i as usize];
                        !st.dbus.contains_key(name)
                            && (moved(sts)
                                || st.ring_out.iter().any(|h| {
                                    h.left_out.as_ref().is_some_and(|l| l.stateful_set == sts)
                                }))
                    })
                    .collect()
            };
            for i in left {
                self.apply(&Ev::CreateDbu(i));
            }
            // the ring's pass before the DBUs': its record wakes them (as a watch event does)
            if round % 5 == 0 {
                self.ring_pass();
            }
            let names: Vec<String> = self.world.lock().dbus.keys().cloned().collect();
            for n in &names {
                self.pass(n);
                passes += 1;
                self.judge();
            }
            // users keep logging in and out while the rollouts finish
            if round % 3 == 0 {
                let mut st = self.world.lock();
                let u = USERS[round % USERS.len()];
                st.login(u, round % 2);
            }
            self.tick(Duration::from_secs(5));
            if self.finished() {
                break;
            }
        }
        passes
    }

    fn finished(&self) -> bool {
        let st = self.world.lock();
        // a backend left out waits for the DBU applied again (the next round applies it)
        let left_out = st.ring_out.iter().any(|h| h.left_out.is_some());
        !left_out
            && moved_out(&st).is_empty()
            && st.dbus.values().all(|d| {
                matches!(
                    d.status.phase,
                    Some(Phase::Completed | Phase::Aborted | Phase::Failed)
                ) || dovecot_upgrade_operator::engine::stalled(&d.status)
            })
    }

    /// Liveness: once the events stop and no backend has failed, every DBU completes with every
    /// host back at its recorded state.
    pub fn judge_end(&mut self) {
        let mut st = self.world.lock();
        let failed = st.dbus.values().any(|d| {
            d.status.backends.iter().any(|b| b.failed) || d.status.phase == Some(Phase::Failed)
        });
        let stalled: Vec<String> = st
            .dbus
            .values()
            .filter(|d| dovecot_upgrade_operator::engine::stalled(&d.status))
            .map(|d| {
                let c = d.status.conditions.iter().find(|c| c.type_ == "Stalled");
                format!(
                    "{}: {}",
                    d.name,
                    c.map(|c| format!("{} {}", c.reason, c.message))
                        .unwrap_or_default()
                )
            })
            .collect();
        if failed || !stalled.is_empty() {
            // a stall waits for a human: the promises still hold (judged all along)
            return;
        }
        let unfinished: Vec<String> = st
            .dbus
            .values()
            .filter(|d| !matches!(d.status.phase, Some(Phase::Completed | Phase::Aborted)))
            .map(|d| format!("{} {:?}", d.name, d.status.phase))
            .collect();
        // a rollout that waits for capacity a human took away waits for that human
        let waits_for_human = (!st.human_down.is_empty() || !st.ambiguous.is_empty())
            && st.dbus.values().any(|d| {
                d.status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Reconciling" && c.reason == "InsufficientRingCapacity")
            });
        if waits_for_human {
            return;
        }
        if !unfinished.is_empty() {
            // with the world as it ended, which says what they wait for
            let world = st.trace();
            st.violation(format!(
                "rollouts did not finish once the events stopped: {unfinished:?}\n{world}"
            ));
            return;
        }
        let aborted = st
            .dbus
            .values()
            .any(|d| d.status.phase == Some(Phase::Aborted));
        let mut problems = Vec::new();
        for d in &st.directors {
            for (name, p) in &st.pods {
                let want = st.recorded.get(name).copied().unwrap_or(100);
                match d.hosts.get(&p.ip) {
                    None => {
                        problems.push(format!("{}: {name} ({}) is not in the ring", d.name, p.ip))
                    }
                    Some(h) => {
                        let up = !st.human_down.contains(&p.ip);
                        let judged_up = !st.ambiguous.contains(&p.ip);
                        if h.vhosts != want || (judged_up && h.up != up) {
                            problems.push(format!(
                                "{}: {name} ({}) at {} vhosts {}, recorded {want} {}",
                                d.name,
                                p.ip,
                                h.vhosts,
                                if h.up { "up" } else { "down" },
                                if up { "up" } else { "down" }
                            ));
                        }
                    }
                }
                let skipped = st.dbus.values().any(|x| {
                    x.spec["skip"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == name.as_str()))
                });
                if !aborted
                    && !skipped
                    && p.revision != st.update_revision
                    && st.dbus.values().any(|x| x.sts == p.sts)
                {
                    problems.push(format!(
                        "{name} is at {}, not {}",
                        p.revision, st.update_revision
                    ));
                }
                // node maintenance: every pod a DBU looks after is off a cordoned node
                if !aborted && !skipped && p.cordoned && st.dbus.values().any(|x| x.sts == p.sts) {
                    problems.push(format!("{name} is still on a cordoned node"));
                }
            }
        }
        if !problems.is_empty() {
            st.violation(format!(
                "not every host is back at its recorded state: {problems:?}"
            ));
        }
    }
}

/// The StatefulSets of pods back at a new IP that the ring's record still names as a host's
/// former pod, or as the pod a host it left counts for (the ring does not have the new IP yet,
/// or has it for another pod that moved, or still has the old entry): their DBU rejoins them.
fn moved_out(st: &State) -> Vec<String> {
    st.ring_status
        .hosts
        .iter()
        .flat_map(|h| {
            let counted = h.counts_for.as_ref().filter(|_| h.counts_vhosts.is_some());
            [h.former_pod.as_ref(), counted]
        })
        .flatten()
        .filter_map(|name| st.pods.get(name))
        .map(|p| p.sts.clone())
        .collect()
}

/// A director that lagged takes the ring's state from the other one.
fn catch_up(st: &mut State) {
    let Some(src) = st.directors.iter().position(|d| d.running && !d.lagging) else {
        return;
    };
    let (hosts, map) = (
        st.directors[src].hosts.clone(),
        st.directors[src].map.clone(),
    );
    for d in st.directors.iter_mut() {
        if d.lagging {
            d.hosts = hosts.clone();
            d.map = map.clone();
            d.lagging = false;
        }
    }
}

/// A human's doveadm command on director `d` (judged by nobody: it is theirs).
fn human_exec(st: &mut State, d: usize, argv: &[String]) -> bool {
    let name = st.directors[d].name.clone();
    st.human_acting = true;
    let done = st.exec(&name, argv).is_ok_and(|o| o.exit_code == 0);
    st.human_acting = false;
    done
}

/// One more pass of the operator over the hosts `ips`: those a human opened on a stopped
/// backend are judged again after three (see `State::human_opened`). A pass while a director
/// lags does not count: the ring then refuses every change on every director (`Ring sync timed
/// out`), and the operator cannot close what the human opened.
fn age_opened(st: &mut State, ips: &[String]) {
    if st.directors.iter().any(|d| d.running && d.lagging) {
        return;
    }
    st.human_opened.retain(|ip, passes| {
        if ips.contains(ip) {
            *passes += 1;
        }
        *passes <= 3
    });
}

/// Runs one sequence to its verdict.
pub fn run(start: Start, events: &[Ev], log: bool) -> Verdict {
    let mut r = Run::new(start, log);
    // DBU_MODEL_TRACE=1: the world after every event, for reading a shrunk case
    let trace = log && std::env::var_os("DBU_MODEL_TRACE").is_some();
    for ev in events {
        r.apply(ev);
        if trace {
            let mut st = r.world.lock();
            let line = st.trace();
            st.note(|| line);
        }
    }
    r.world
        .lock()
        .note(|| "-- events stop; the rollouts are driven to their end".into());
    let passes = r.settle();
    r.judge_end();
    let st = r.world.lock();
    Verdict {
        violations: st.judged.violations.clone(),
        passes,
        completed: st
            .dbus
            .values()
            .filter(|d| d.status.phase == Some(Phase::Completed))
            .count() as u32,
        failed_logins: st.judged.failed_logins,
        writes: st.writes.clone(),
        log: st.log.clone(),
    }
}
