//! The model world: two directors that sync like a Dovecot director ring, backend pods whose
//! Dovecot answers the doveadm commands the steps run, users with sessions, a ring record and
//! DBUs as the API server keeps them. It answers the engine through its real edges (`PodExec`,
//! `Cluster`, `Probes`) and remembers what the promises are judged by.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dbu_core::api::{DovecotBackendUpgradeStatus, DovecotRingStatus};
use dbu_core::machine::{Observed, PodView, RingHolder, RingLock, StsView};
use dovecot_upgrade_operator::engine::{Cluster, ClusterError, Probes};
use dovecot_upgrade_operator::exec::{ExecError, ExecOutput, ExecRequest, PodExec};
use dovecot_upgrade_operator::settings::{ObjectKey, Settings};
use k8s_openapi::jiff::Timestamp;

pub const USERS: [&str; 5] = ["u1", "u2", "u3", "u4", "u5"];
/// The verify user: it has mail in every revision that is not broken.
pub const VERIFY_USER: &str = "u1";
pub const RING: &str = "mail";
pub const STATEFULSETS: [&str; 2] = ["backend", "mx"];
/// Where the shared store keeps mail: never on the pod's own volume.
const SHARED: &str = "/srv/mail";
/// The pod's own volume: cache only, unless a revision puts mail there.
const CACHE: &str = "/var/dovecot/vmail";
const METACACHE: &str = "/var/lib/dovecot/metacache/metacache-users.csv";

/// One host row of a director.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub vhosts: u32,
    pub up: bool,
}

/// A director pod: its host list and user mappings, as it knows them.
#[derive(Debug, Clone)]
pub struct Director {
    pub name: String,
    pub ip: String,
    pub running: bool,
    /// Receives nothing from the ring until it catches up (a slow or partitioned member).
    pub lagging: bool,
    pub hosts: BTreeMap<String, Host>,
    pub map: BTreeMap<String, String>,
}

/// A pod template revision of the StatefulSets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revision {
    /// Dovecot starts but serves nobody: mailbox commands and probes fail.
    pub broken: bool,
    /// The revision keeps mail in the pod's own volume, which the reset would wipe.
    pub mail_in_cache: bool,
}

/// One incarnation of a backend pod.
#[derive(Debug, Clone)]
pub struct Pod {
    pub sts: String,
    pub uid: u64,
    pub ip: String,
    pub revision: String,
    pub dovecot: bool,
    pub lmtp: bool,
    /// Dovecot does not come up until the world is fixed (an image that never becomes Ready).
    pub blocked: bool,
    /// May serve users: the world made it (first pods, recreated at the same IP) or Verify's
    /// checks passed on it. Nothing the operator made or stopped serves before that.
    pub trusted: bool,
    /// The operator stopped this incarnation's LMTP or Dovecot.
    pub stopped_by_us: bool,
    /// Paths on the pod's own volume, and whether each is mail.
    pub files: BTreeMap<String, bool>,
    /// IMAP sessions: user and pid.
    pub sessions: BTreeMap<String, u32>,
    pub checked: bool,
    pub probed: bool,
    /// Recreated at another pod's old IP that the ring had out already (at 0 vhosts or
    /// down): the world took it out, as it does a pod back at an IP the ring lacks, and it
    /// holds no slot until the operator puts it back (its rejoin is not counted as a drain).
    pub came_back_out: bool,
    /// Made by the operator's delete (Replace): it serves only once Verify passed on it.
    pub made_by_operator: bool,
    /// Its node is under maintenance (cordoned): the operator relocates it; recreated, it
    /// comes back on another node at a new IP.
    pub cordoned: bool,
}

/// A DBU as the API server keeps it.
#[derive(Debug, Clone)]
pub struct Dbu {
    pub name: String,
    pub sts: String,
    pub spec: serde_json::Value,
    pub annotations: BTreeMap<String, String>,
    pub status: DovecotBackendUpgradeStatus,
    pub deleting: bool,
    pub generation: i64,
}

/// Faults due at the next matching edge call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The next exec fails before it runs.
    pub exec_fails: u32,
    /// The next exec runs, but its answer is lost (a timeout after the command took effect).
    pub exec_lost: u32,
    /// The pass in progress dies after this many more execs (its status is never written).
    pub kill_after: Option<u32>,
    pub ring_conflicts: u32,
    pub status_conflicts: BTreeMap<String, u32>,
}

/// Status writes against step transitions (`State::writes`).
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub status: u64,
    pub transitions: u64,
    /// Writes of a drain's progress (users moved, sessions left) without a transition.
    pub progress: u64,
}

/// What the promises are judged by, collected as the world changes.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub violations: Vec<String>,
    pub failed_logins: u32,
    pub logins: u32,
}

#[derive(Debug, Clone)]
pub struct State {
    pub now: Timestamp,
    pub directors: Vec<Director>,
    pub pods: BTreeMap<String, Pod>,
    /// Every IP a pod ever had, to whose pod it belonged last.
    pub ip_owner: BTreeMap<String, String>,
    /// Pods recreated at an IP another pod had (`PodTakesOldIp`), until the operator puts
    /// them back there or they are recreated again: their own old IPs are not drawn for
    /// another pod that moved (see `recreate`), and a human's command on them is ambiguous.
    pub squatting: BTreeSet<String>,
    /// The pod that last left each IP (recreated elsewhere).
    pub left_by: BTreeMap<String, String>,
    /// IPs a pod left carrying a human's state (never drawn for `PodTakesOldIp`).
    pub human_left: BTreeSet<String>,
    /// IPs a human gave a command on since the operator's last pass: a pod that moves from
    /// one leaves it in `human_left` (whose command it was cannot be told once another pod sits
    /// at the entry, unless the operator read the ring in between; a limit in docs/design.md).
    pub human_unread: BTreeSet<String>,
    pub update_revision: String,
    pub revisions: BTreeMap<String, Revision>,
    pub replicas: BTreeMap<String, usize>,
    pub ring_spec: dbu_core::api::DovecotRingSpec,
    pub ring_version: u64,
    pub ring_out: Vec<RingHolder>,
    pub ring_status: DovecotRingStatus,
    pub dbus: BTreeMap<String, Dbu>,
    /// A human's ring state: hosts downed, and vhost counts set.
    pub human_down: BTreeSet<String>,
    pub human_vhosts: BTreeMap<String, u32>,
    /// The vhost count each pod's host was given before any rollout (and by a human since).
    pub recorded: BTreeMap<String, u32>,
    pub faults: Faults,
    pub judged: Judged,
    /// The DBUs' status writes (passes whose status is worth a patch) and their step
    /// transitions (BackendStarted and StepSucceeded notes), as the controller would count them.
    pub writes: Writes,
    pub next_uid: u64,
    pub next_ip: u32,
    pub next_pid: u32,
    /// Pods whose next incarnation will not become Ready until `fix`.
    pub never_ready: BTreeSet<String>,
    /// The log of the sequence (events and the operator's commands), for a counterexample.
    pub log: Vec<String>,
    pub log_on: bool,
    /// A human runs the next director command: it is theirs, never judged as the operator's.
    pub human_acting: bool,
    /// Hosts a human took down or up while the operator had them out itself (RingRemove to
    /// RingRestore): which state wins cannot be told, so their final up/down is not judged.
    pub ambiguous: BTreeSet<String>,
    /// Hosts a human gave vhosts while the operator had their Dovecot stopped, with the
    /// operator's passes since: a login sent there fails by the human's doing until the
    /// operator flushes the users mapped there meanwhile, which it must within three of its
    /// passes over the host (the count written to its record, the host zeroed, then taken down
    /// and flushed).
    pub human_opened: BTreeMap<String, u32>,
}

/// The world behind a mutex, as the edges need `Sync`.
pub struct World {
    pub st: Mutex<State>,
    /// Which DBU (`namespace/name`) and StatefulSet the cluster edge answers for.
    pub view: Mutex<(String, String)>,
    /// Whether the time the state is held is measured (off in the model tests).
    pub timed: bool,
    /// Nanoseconds the state was held while `timed`.
    pub held_ns: AtomicU64,
}

pub fn ip(n: u32) -> String {
    format!("10.0.{}.{}", n / 200, 10 + n % 200)
}

fn out(code: i32, stdout: impl Into<String>, stderr: &str) -> ExecOutput {
    ExecOutput {
        exit_code: code,
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

fn ok(stdout: impl Into<String>) -> ExecOutput {
    out(0, stdout, "")
}

/// A stable hash of a user over the hosts that take new users (consistent enough for a model).
fn hash_to(user: &str, hosts: &BTreeMap<String, Host>) -> Option<String> {
    let live: Vec<(&String, &Host)> = hosts.iter().filter(|(_, h)| h.up && h.vhosts > 0).collect();
    let total: u32 = live.iter().map(|(_, h)| h.vhosts).sum();
    if total == 0 {
        return None;
    }
    let mut x: u32 = user.bytes().fold(2166136261u32, |a, b| {
        (a ^ u32::from(b)).wrapping_mul(16777619)
    }) % total;
    for (ip, h) in live {
        if x < h.vhosts {
            return Some(ip.clone());
        }
        x -= h.vhosts;
    }
    None
}

impl State {
    /// Two directors, `per_sts` pods in each StatefulSet, vhosts 100 or 50 by pod.
    pub fn new(per_sts: [usize; 2], lmtp_probe: bool) -> State {
        let _ = lmtp_probe;
        let mut st = State {
            now: "2026-12-01T10:00:00Z".parse().expect("time"),
            directors: Vec::new(),
            pods: BTreeMap::new(),
            ip_owner: BTreeMap::new(),
            squatting: BTreeSet::new(),
            left_by: BTreeMap::new(),
            human_left: BTreeSet::new(),
            update_revision: "rev-1".into(),
            revisions: BTreeMap::from([("rev-1".into(), Revision::default())]),
            replicas: BTreeMap::new(),
            ring_spec: serde_json::from_value(serde_json::json!({
                "directors": {"selector": {"matchLabels": {"app": "director"}}},
                "backends": [{"statefulSet": "backend"}, {"statefulSet": "mx"}],
                "maxUnavailable": 1,
            }))
            .expect("ring spec"),
            ring_version: 0,
            ring_out: Vec::new(),
            ring_status: DovecotRingStatus::default(),
            dbus: BTreeMap::new(),
            human_down: BTreeSet::new(),
            human_vhosts: BTreeMap::new(),
            recorded: BTreeMap::new(),
            faults: Faults::default(),
            judged: Judged::default(),
            writes: Writes::default(),
            next_uid: 1,
            next_ip: 0,
            next_pid: 1000,
            never_ready: BTreeSet::new(),
            log: Vec::new(),
            log_on: false,
            human_acting: false,
            ambiguous: BTreeSet::new(),
            human_unread: BTreeSet::new(),
            human_opened: BTreeMap::new(),
        };
        let mut hosts = BTreeMap::new();
        for (k, sts) in STATEFULSETS.iter().enumerate() {
            st.replicas.insert(sts.to_string(), per_sts[k]);
            for i in 0..per_sts[k] {
                let name = format!("{sts}-{i}");
                let vhosts = if (k + i) % 2 == 0 { 100 } else { 50 };
                let pip = st.fresh_ip();
                st.recorded.insert(name.clone(), vhosts);
                hosts.insert(pip.clone(), Host { vhosts, up: true });
                st.make_pod(&name, sts, &pip, "rev-1");
                let p = st.pods.get_mut(&name).expect("pod");
                p.trusted = true;
            }
        }
        for d in 0..2 {
            st.directors.push(Director {
                name: format!("director-{d}"),
                ip: format!("10.1.0.{}", 10 + d),
                running: true,
                lagging: false,
                hosts: hosts.clone(),
                map: BTreeMap::new(),
            });
        }
        st
    }

    /// The world recreates pod `name` at `new_ip` (its old IP: in place; `taking_old`: an IP
    /// another pod had), at the update revision, carrying what a human set on the backend.
    pub fn recreate_at(&mut self, name: &str, new_ip: &str, taking_old: bool) {
        let (sts, old_ip) = {
            let p = &self.pods[name];
            (p.sts.clone(), p.ip.clone())
        };
        let new_ip = new_ip.to_string();
        // the StatefulSet recreates at its update revision
        let rev = self.update_revision.clone();
        let serving = self.directors[0]
            .hosts
            .get(&new_ip)
            .is_some_and(|h| h.up && h.vhosts > 0);
        let same = new_ip == old_ip;
        // back at the entry it left last (moved and back before anything else sat there): the
        // same to the ring as recreated in place
        let back_home = self.left_by.get(&new_ip).map(String::as_str) == Some(name);
        // what a human set on the backend is the backend's: its rejoin carries it to the new IP
        // (moved, not copied: a pod that takes the old IP later is another backend, and never
        // one whose IP a human's state left: whose command it was cannot be told once another
        // pod sits at the entry, unless the operator read the ring in between; a limit in
        // docs/design.md)
        if !same {
            let mut carried = false;
            if self.human_down.remove(&old_ip) {
                self.human_down.insert(new_ip.clone());
                carried = true;
            }
            if self.ambiguous.remove(&old_ip) {
                self.ambiguous.insert(new_ip.clone());
                carried = true;
            }
            if let Some(n) = self.human_vhosts.remove(&old_ip) {
                self.human_vhosts.insert(new_ip.clone(), n);
                carried = true;
            }
            if carried || self.human_unread.remove(&old_ip) {
                self.human_left.insert(old_ip.clone());
            }
        }
        if !same {
            self.left_by.insert(old_ip.clone(), name.to_string());
        }
        // (recreated at the same IP, it still sits at the other pod's entry)
        if taking_old && self.ip_owner.contains_key(&new_ip) {
            self.squatting.insert(name.to_string());
        } else if !same {
            self.squatting.remove(name);
        }
        let out_already = if same {
            self.pods[name].came_back_out
        } else {
            self.directors[0]
                .hosts
                .get(&new_ip)
                .is_some_and(|h| h.vhosts == 0 || !h.up)
        };
        self.make_pod(name, &sts, &new_ip, &rev);
        self.pods.get_mut(name).expect("pod").came_back_out = out_already;
        // the world made it where it already served: the operator is not its gate
        if (same || back_home) && serving {
            self.pods.get_mut(name).expect("pod").trusted = true;
        }
    }

    pub fn fresh_ip(&mut self) -> String {
        self.next_ip += 1;
        ip(self.next_ip)
    }

    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if self.log_on {
            self.log.push(line());
        }
    }

    pub fn violation(&mut self, what: String) {
        self.note(|| format!("!! {what}"));
        if !self.judged.violations.contains(&what) {
            self.judged.violations.push(what);
        }
    }

    /// A new incarnation of `name` at `ip`, running the update revision's Dovecot (unless held).
    /// The StatefulSet keeps one pod fewer, never below one: its highest ordinal is deleted
    /// and not recreated. Its ring entry stays as it was (removing it is the admin's, as the
    /// docs say); its IP then belongs to no pod, so it is nobody's capacity and nobody's out.
    pub fn scale_down(&mut self, sts: &str) {
        let n = self.replicas.get(sts).copied().unwrap_or(0);
        if n <= 1 {
            return;
        }
        let name = format!("{sts}-{}", n - 1);
        self.replicas.insert(sts.to_string(), n - 1);
        if let Some(p) = self.pods.remove(&name) {
            self.ip_owner.remove(&p.ip);
            self.note(|| format!("  scaled down: {name} ({}) is gone", p.ip));
        }
    }

    pub fn make_pod(&mut self, name: &str, sts: &str, pip: &str, rev: &str) {
        let r = self.revisions.get(rev).copied().unwrap_or_default();
        let mut files = BTreeMap::new();
        for u in USERS {
            files.insert(format!("{CACHE}/{u}/dovecot.index.cache"), false);
            if r.mail_in_cache {
                files.insert(format!("{CACHE}/{u}/Maildir/cur/1.mail"), true);
            }
        }
        files.insert(METACACHE.to_string(), false);
        self.next_uid += 1;
        let blocked = self.never_ready.remove(name);
        self.pods.insert(
            name.to_string(),
            Pod {
                sts: sts.to_string(),
                uid: self.next_uid,
                ip: pip.to_string(),
                revision: rev.to_string(),
                dovecot: !blocked,
                lmtp: !blocked,
                blocked,
                trusted: false,
                stopped_by_us: false,
                files,
                sessions: BTreeMap::new(),
                checked: false,
                probed: false,
                came_back_out: false,
                made_by_operator: false,
                cordoned: false,
            },
        );
        self.ip_owner.insert(pip.to_string(), name.to_string());
    }

    pub fn pod_at(&self, ip: &str) -> Option<(&String, &Pod)> {
        self.pods.iter().find(|(_, p)| p.ip == ip)
    }

    fn revision_of(&self, pod: &Pod) -> Revision {
        self.revisions
            .get(&pod.revision)
            .copied()
            .unwrap_or_default()
    }

    /// A state change sent to director `d`: applied there and, through the ring, on every
    /// running director that is not lagging.
    fn ring_change(&mut self, d: usize, f: &dyn Fn(&mut Director)) {
        let reach: Vec<usize> = if self.directors[d].lagging {
            vec![d]
        } else {
            (0..self.directors.len())
                .filter(|&i| self.directors[i].running && !self.directors[i].lagging)
                .collect()
        };
        for i in reach {
            f(&mut self.directors[i]);
        }
    }

    /// Kicks the sessions of users whose mapping moved off `ip`.
    fn kick_moved(&mut self, users: &[String], from: &str) {
        if let Some(name) = self.pod_at(from).map(|(n, _)| n.clone()) {
            let p = self.pods.get_mut(&name).expect("pod");
            for u in users {
                p.sessions.remove(u);
            }
        }
    }

    /// A director command from the operator (argv after `doveadm [-c f] [-f json] director`).
    fn director(&mut self, d: usize, words: &[&str]) -> ExecOutput {
        let dir = &self.directors[d];
        let changes = matches!(
            words.first(),
            Some(&("update" | "add" | "up" | "down" | "remove" | "flush" | "move"))
        );
        // while a member is not synced with the ring, changes block until the ring's limit
        // (findings: `Error: <ip>: Ring sync timed out`, exit 75), and nothing changes
        let unsynced = self.directors.iter().any(|x| x.running && x.lagging);
        if changes && unsynced {
            let ip = words.get(1).copied().unwrap_or_default();
            return out(75, "", &format!("Error: {ip}: Ring sync timed out"));
        }
        match words {
            ["status"] => {
                let rows: Vec<serde_json::Value> = dir
                    .hosts
                    .iter()
                    .map(|(ip, h)| {
                        let users = dir.map.values().filter(|v| *v == ip).count();
                        serde_json::json!({"mail server ip": ip, "tag": "", "vhosts": h.vhosts.to_string(),
                            "state": if h.up { "up" } else { "down" }, "state-changed": "-",
                            "users": users.to_string()})
                    })
                    .collect();
                ok(serde_json::Value::Array(rows).to_string())
            }
            ["status", user] => {
                let cur = dir.map.get(*user).cloned().unwrap_or_default();
                let hashed = hash_to(user, &dir.hosts).unwrap_or_default();
                ok(
                    serde_json::json!([{"status": cur, "hashed": hashed, "initial config": ""}])
                        .to_string(),
                )
            }
            ["ring", "status"] => {
                let mut rows = Vec::new();
                for (i, other) in self.directors.iter().enumerate() {
                    if i == d {
                        continue;
                    }
                    let connected = other.running && !other.lagging && !dir.lagging;
                    rows.push(serde_json::json!({"director ip": other.ip, "port": "9090",
                        "type": if connected { "right" } else { "" }, "status": if connected { "synced" } else { "" }}));
                }
                let me = if dir.lagging {
                    "ring syncing - last sync 9 secs ago"
                } else {
                    "ring synced"
                };
                rows.push(serde_json::json!({"director ip": dir.ip, "port": "9090", "type": "self", "status": me}));
                ok(serde_json::Value::Array(rows).to_string())
            }
            ["map", ip] => {
                let users: Vec<serde_json::Value> = dir
                    .map
                    .iter()
                    .filter(|(_, v)| v == ip)
                    .map(|(u, _)| serde_json::json!({"user": u, "hash": "0", "mail server ip": ip, "expire time": "-"}))
                    .collect();
                ok(serde_json::Value::Array(users).to_string())
            }
            ["move", user, ip] => {
                if !dir.hosts.contains_key(*ip) {
                    return out(68, "", &format!("Error: Host '{ip}' doesn't exist"));
                }
                let (user, ip) = (user.to_string(), ip.to_string());
                let from = dir.map.get(&user).cloned();
                self.ring_change(d, &|x| {
                    x.map.insert(user.clone(), ip.clone());
                });
                if let Some(f) = from.filter(|f| *f != ip) {
                    // the director kicks the session; the client logs in again at the new host
                    let had = self
                        .pod_at(&f)
                        .is_some_and(|(_, p)| p.sessions.contains_key(&user));
                    self.kick_moved(std::slice::from_ref(&user), &f);
                    if had {
                        self.session_at(&user, &ip);
                    }
                }
                ok("")
            }
            ["update", ip, n] | ["add", ip, n] => {
                let n: u32 = n.parse().unwrap_or(0);
                let adding = words[0] == "add";
                if !adding && !dir.hosts.contains_key(*ip) {
                    return out(75, "", &format!("Error: {ip}: Host doesn't exist"));
                }
                let ip = ip.to_string();
                self.ring_change(d, &|x| {
                    let h = x.hosts.entry(ip.clone()).or_insert(Host {
                        vhosts: n,
                        up: true,
                    });
                    h.vhosts = n;
                });
                ok("")
            }
            ["up", ip] | ["down", ip] => {
                if !dir.hosts.contains_key(*ip) {
                    return out(68, "", &format!("Error: Host '{ip}' doesn't exist"));
                }
                let up = words[0] == "up";
                let ip = ip.to_string();
                self.ring_change(d, &|x| {
                    if let Some(h) = x.hosts.get_mut(&ip) {
                        h.up = up;
                    }
                });
                ok("")
            }
            ["remove", ip] => {
                if !dir.hosts.contains_key(*ip) {
                    return out(68, "", &format!("Error: Host '{ip}' doesn't exist"));
                }
                let ip = ip.to_string();
                self.ring_change(d, &|x| {
                    x.hosts.remove(&ip);
                    x.map.retain(|_, v| *v != ip);
                });
                ok("")
            }
            ["flush", ip] => {
                if !dir.hosts.contains_key(*ip) {
                    return out(68, "", &format!("Error: Host '{ip}' doesn't exist"));
                }
                // users whose hash now points elsewhere are re-assigned, their sessions kicked
                let moved: Vec<String> = dir
                    .map
                    .iter()
                    .filter(|(u, v)| *v == ip && hash_to(u, &dir.hosts).as_deref() != Some(ip))
                    .map(|(u, _)| u.clone())
                    .collect();
                let ipx = ip.to_string();
                let gone = moved.clone();
                self.ring_change(d, &|x| {
                    for u in &gone {
                        if x.map.get(u) == Some(&ipx) {
                            x.map.remove(u);
                        }
                    }
                });
                self.kick_moved(&moved, ip);
                ok("")
            }
            _ => out(
                64,
                "",
                &format!("model: unknown director command {words:?}"),
            ),
        }
    }

    /// A session for `user` on the backend at `ip`, if that backend serves; else a failed login.
    fn session_at(&mut self, user: &str, ip: &str) {
        self.next_pid += 1;
        let pid = self.next_pid;
        let serves = self.pod_at(ip).map(|(n, p)| {
            (
                n.clone(),
                p.dovecot && !self.revision_of(p).broken,
                p.stopped_by_us,
            )
        });
        match serves {
            Some((name, true, _)) => {
                self.pods
                    .get_mut(&name)
                    .expect("pod")
                    .sessions
                    .insert(user.to_string(), pid);
            }
            other => {
                self.judged.failed_logins += 1;
                // a backend the operator stopped, or a host nobody serves that it left up
                if let Some((name, _, true)) = other
                    && !self.human_opened.contains_key(ip)
                {
                    self.violation(format!("login of {user} failed: mapped to {name} ({ip}), whose Dovecot the operator stopped"));
                }
            }
        }
    }

    /// A user logs in through director `d` (IMAP, staying in IDLE).
    pub fn login(&mut self, user: &str, d: usize) {
        if !self.directors[d].running {
            return;
        }
        self.judged.logins += 1;
        if self.pods.values().any(|p| p.sessions.contains_key(user)) {
            return;
        }
        let mapped = self.directors[d].map.get(user).cloned();
        let to = match mapped {
            Some(ip) => ip,
            None => {
                let Some(ip) = hash_to(user, &self.directors[d].hosts) else {
                    self.judged.failed_logins += 1;
                    return;
                };
                let (u, i) = (user.to_string(), ip.clone());
                self.ring_change(d, &|x| {
                    x.map.insert(u.clone(), i.clone());
                });
                ip
            }
        };
        self.session_at(user, &to);
    }

    pub fn logout(&mut self, user: &str) {
        for p in self.pods.values_mut() {
            p.sessions.remove(user);
        }
    }

    /// One line on the world: each pod (IP, Ready, LMTP, stopped by us) and what every
    /// director shows for each host, for `DBU_MODEL_TRACE`.
    pub fn trace(&self) -> String {
        let pods: Vec<String> = self
            .pods
            .iter()
            .map(|(n, p)| {
                format!(
                    "{n}@{}{}{}{}",
                    p.ip,
                    if p.dovecot && !p.blocked {
                        ""
                    } else {
                        " unready"
                    },
                    if p.lmtp { "" } else { " nolmtp" },
                    if p.stopped_by_us { " stopped" } else { "" }
                )
            })
            .collect();
        let dirs: Vec<String> = self
            .directors
            .iter()
            .map(|d| {
                let hosts: Vec<String> = d
                    .hosts
                    .iter()
                    .map(|(ip, h)| format!("{ip}={}{}", h.vhosts, if h.up { "" } else { "d" }))
                    .collect();
                format!("{}: {}", d.name, hosts.join(" "))
            })
            .collect();
        let recs: Vec<String> = self
            .dbus
            .values()
            .flat_map(|d| {
                d.status.backends.iter().map(|r| {
                    format!(
                        "{}:{}@{}{} {:?}{}",
                        d.name,
                        r.pod,
                        r.step,
                        if r.failed { " failed" } else { "" },
                        r.message.as_deref().unwrap_or(""),
                        r.last_error
                            .as_ref()
                            .map(|e| format!(" err {e:?}"))
                            .unwrap_or_default()
                    )
                })
            })
            .collect();
        format!(
            "   ~ pods [{}] | {} | records [{}] | human down {:?} vhosts {:?} | out {:?}",
            pods.join(", "),
            dirs.join(" | "),
            recs.join("; "),
            self.human_down,
            self.human_vhosts,
            self.ring_out
                .iter()
                .map(|h| format!("{}@{}", h.pod, h.ip))
                .collect::<Vec<_>>()
        )
    }

    /// A command in backend pod `name`.
    fn backend(&mut self, name: &str, argv: &[String]) -> Result<ExecOutput, ExecError> {
        let Some(p) = self.pods.get(name) else {
            return Err(ExecError::Transport(format!("pods \"{name}\" not found")));
        };
        let rev = self.revision_of(p);
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut w: &[&str] = &words;
        if let ["doveadm", rest @ ..] = w {
            w = rest;
            while let ["-c" | "-f", _, tail @ ..] = w {
                w = tail;
            }
            let running = p.dovecot;
            if !running && !matches!(w, ["stop"]) {
                return Ok(out(
                    75,
                    "",
                    "Fatal: Dovecot is not running (read from /run/dovecot/master.pid)",
                ));
            }
            return Ok(match w {
                ["stop"] => {
                    if !running {
                        return Ok(out(
                            75,
                            "",
                            "Fatal: Dovecot is not running (read from /run/dovecot/master.pid)",
                        ));
                    }
                    let p = self.pods.get_mut(name).expect("pod");
                    p.dovecot = false;
                    p.lmtp = false;
                    p.stopped_by_us = true;
                    p.trusted = false;
                    p.sessions.clear();
                    ok("")
                }
                ["service", "stop", "lmtp"] => {
                    let p = self.pods.get_mut(name).expect("pod");
                    p.lmtp = false;
                    p.stopped_by_us = true;
                    ok("")
                }
                // re-opens the listeners a stop closed (abort's undo before StopDovecot)
                ["reload"] => {
                    let p = self.pods.get_mut(name).expect("pod");
                    p.lmtp = true;
                    p.stopped_by_us = false;
                    ok("")
                }
                ["who", "-1"] => {
                    let rows: Vec<serde_json::Value> = p
                        .sessions
                        .iter()
                        .map(|(u, pid)| serde_json::json!({"username": u, "service": "imap", "pid": pid.to_string(), "ip": "10.9.0.1"}))
                        .collect();
                    ok(if rows.is_empty() {
                        String::new()
                    } else {
                        serde_json::Value::Array(rows).to_string()
                    })
                }
                ["who", "-1", user] => {
                    let rows: Vec<serde_json::Value> = p
                        .sessions
                        .iter()
                        .filter(|(u, _)| u == user)
                        .map(|(u, pid)| serde_json::json!({"username": u, "service": "imap", "pid": pid.to_string(), "ip": "10.9.0.1"}))
                        .collect();
                    ok(if rows.is_empty() {
                        String::new()
                    } else {
                        serde_json::Value::Array(rows).to_string()
                    })
                }
                ["process", "status"] => {
                    let rows: Vec<serde_json::Value> = p
                        .sessions
                        .values()
                        .map(|pid| serde_json::json!({"name": "imap", "pid": pid.to_string(), "idle_start": "0"}))
                        .collect();
                    ok(serde_json::Value::Array(rows).to_string())
                }
                ["user", user] => {
                    let mail = if rev.mail_in_cache {
                        format!("maildir:{CACHE}/{user}/Maildir")
                    } else {
                        format!("maildir:{SHARED}/{user}/Maildir:INDEX={CACHE}/{user}")
                    };
                    ok(serde_json::json!([{"field": "home", "value": format!("{SHARED}/{user}")}, {"field": "mail", "value": mail}]).to_string())
                }
                ["mailbox", "list", "-u", _] if rev.broken => out(
                    75,
                    "",
                    "Error: auth-master: userdb lookup(u1): Internal error",
                ),
                ["mailbox", "status", ..] if rev.broken => out(
                    75,
                    "",
                    "Error: auth-master: userdb lookup(u1): Internal error",
                ),
                ["mailbox", "list", "-u", _] => ok(r#"[{"mailbox":"INBOX"}]"#),
                ["mailbox", "status", "-u", _, "messages", mb] => {
                    self.pods.get_mut(name).expect("pod").checked = true;
                    ok(serde_json::json!([{"mailbox": mb, "messages": "3"}]).to_string())
                }
                ["fetch", ..] | ["expunge", ..] => ok(""),
                _ => out(64, "", &format!("model: unknown doveadm command {w:?}")),
            });
        }
        Ok(match w {
            ["cat", path] if path.ends_with("/master.pid") => {
                if p.dovecot {
                    ok("4000\n")
                } else {
                    out(1, "", &format!("cat: {path}: No such file or directory"))
                }
            }
            ["test", "-e", _] => out(if p.dovecot { 0 } else { 1 }, "", ""),
            ["head", "-v", "-c", "512", procs @ ..] => {
                let mut s = String::new();
                for path in procs {
                    let pid = path
                        .trim_start_matches("/proc/")
                        .trim_end_matches("/cmdline");
                    if let Some((u, _)) = p.sessions.iter().find(|(_, x)| x.to_string() == pid) {
                        s.push_str(&format!("==> {path} <==\nimap [{u} 10.9.0.1 IDLE]\n"));
                    }
                }
                ok(s)
            }
            ["doveconf", .., "-h", "base_dir"] => ok("/run/dovecot\n"),
            ["doveconf", .., "-h", "mail_location", "mail_home"] => {
                if rev.mail_in_cache {
                    ok(format!("maildir:{CACHE}/%u/Maildir\n{SHARED}/%u\n"))
                } else {
                    ok(format!(
                        "maildir:{SHARED}/%u/Maildir:INDEX={CACHE}/%u\n{SHARED}/%u\n"
                    ))
                }
            }
            ["find", rest @ ..] => self.find(name, rest),
            _ => out(127, "", &format!("model: unknown command {w:?}")),
        })
    }

    /// `find ROOT... [-mindepth 1] [-path PAT] (-delete | <markers> -print -quit)`.
    fn find(&mut self, name: &str, rest: &[&str]) -> ExecOutput {
        let roots: Vec<&str> = rest
            .iter()
            .take_while(|a| !a.starts_with('-') && **a != "(" && **a != "!")
            .copied()
            .collect();
        let pat = rest
            .iter()
            .position(|a| *a == "-path")
            .and_then(|i| rest.get(i + 1))
            .map(|p| p.trim_end_matches('*').to_string());
        let under = |path: &str| {
            roots
                .iter()
                .any(|r| path.starts_with(&format!("{}/", r.trim_end_matches('/'))))
                && pat.as_ref().is_none_or(|p| path.starts_with(p.as_str()))
        };
        let p = self.pods.get_mut(name).expect("pod");
        if rest.contains(&"-print") && !rest.contains(&"-delete") {
            let first = p
                .files
                .iter()
                .find(|(f, mail)| **mail && under(f))
                .map(|(f, _)| f.clone());
            return ok(first.map(|f| format!("{f}\n")).unwrap_or_default());
        }
        let doomed: Vec<(String, bool)> = p
            .files
            .iter()
            .filter(|(f, _)| under(f))
            .map(|(f, m)| (f.clone(), *m))
            .collect();
        let running = p.dovecot;
        for (f, _) in &doomed {
            p.files.remove(f);
        }
        for (f, mail) in doomed {
            if mail {
                self.violation(format!("the reset on {name} deleted mail: {f}"));
            }
            if running {
                self.violation(format!("the reset on {name} deleted {f} while Dovecot ran"));
            }
        }
        ok("")
    }

    /// What the operator's exec into `pod` does.
    pub fn exec(&mut self, pod: &str, argv: &[String]) -> Result<ExecOutput, ExecError> {
        if let Some(d) = self.directors.iter().position(|d| d.name == pod) {
            if !self.directors[d].running {
                return Err(ExecError::Transport(format!(
                    "container not running in {pod}"
                )));
            }
            let words: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut w: &[&str] = &words;
            if let ["doveadm", rest @ ..] = w {
                w = rest;
                while let ["-c" | "-f", _, tail @ ..] = w {
                    w = tail;
                }
            }
            let Some(("director", rest)) = w.split_first().map(|(a, b)| (*a, b)) else {
                return Ok(out(64, "", "model: not a director command"));
            };
            let serving = |st: &State, ip: &str| {
                st.directors[d]
                    .hosts
                    .get(ip)
                    .is_some_and(|h| h.up && h.vhosts > 0)
            };
            let ip = rest.get(1).copied().unwrap_or_default().to_string();
            let before = serving(self, &ip);
            let res = self.director(d, rest);
            // put back: a host that did not take users takes them after this command
            let put_back = !before && serving(self, &ip);
            // a command the ring refused (a director lags: exit 75) did nothing to judge, and
            // a flush refused moved nobody off a host a human opened
            if res.exit_code == 0 {
                self.judge_director_command(rest, put_back);
            }
            return Ok(res);
        }
        self.backend(pod, argv)
    }

    /// The operator's director commands judged by what they did: a host is put back (it takes
    /// users again) only when its pod may serve; a human's down or vhost count is never undone.
    fn judge_director_command(&mut self, w: &[&str], put_back: bool) {
        if self.human_acting {
            return;
        }
        // users the human's window mapped there stay mapped at 0 vhosts: closed once flushed
        if let ["flush", ip] = w {
            self.human_opened.remove(*ip);
        }
        // a pod that never became Ready serves nobody: taking its entry out takes nothing the
        // world had not taken already, until it is put back
        if let ["update", ip, "0"] | ["down", ip] = w
            && let Some(p) = self.pods.values_mut().find(|p| p.ip == *ip && p.blocked)
        {
            p.came_back_out = true;
        }
        let (verb, ip, n) = match w {
            ["update" | "add", ip, n] => (w[0], *ip, n.parse::<u32>().unwrap_or(0)),
            ["up", ip] => ("up", *ip, 1),
            _ => return,
        };
        if n == 0 {
            return;
        }
        if verb == "up" && self.human_down.contains(ip) {
            self.violation(format!(
                "the operator ran director up {ip}, which a human took down"
            ));
        }
        if verb != "up"
            && let Some(h) = self.human_vhosts.get(ip)
            && *h != n
        {
            self.violation(format!(
                "the operator set {ip} to {n} vhosts, where a human had set {h}"
            ));
        }
        if !put_back {
            return;
        }
        if let Some((name, p)) = self.pods.iter_mut().find(|(_, p)| p.ip == ip) {
            p.came_back_out = false;
            self.squatting.remove(name);
        }
        match self.pod_at(ip) {
            None => self.violation(format!(
                "the operator put {ip} back ({verb}), an IP no pod has"
            )),
            Some((name, p)) if !p.trusted => {
                let name = name.clone();
                self.violation(format!(
                    "the operator put {name} ({ip}) back ({verb}) unverified"
                ));
            }
            Some(_) => {}
        }
    }
}

/// The state, held. With `World::timed` on, the time it is held is added to `World::held_ns`:
/// the world's own cost, apart from the engine's (`benches/scale.rs`).
pub struct Held<'a> {
    guard: std::sync::MutexGuard<'a, State>,
    since: Option<std::time::Instant>,
    total: &'a AtomicU64,
}

impl std::ops::Deref for Held<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.since {
            self.total
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

impl World {
    pub fn new(st: State) -> World {
        World {
            st: Mutex::new(st),
            view: Mutex::new((String::new(), String::new())),
            timed: false,
            held_ns: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> Held<'_> {
        Held {
            guard: self.st.lock().expect("model state"),
            since: self.timed.then(std::time::Instant::now),
            total: &self.held_ns,
        }
    }

    pub fn set_view(&self, dbu: &str, sts: &str) {
        *self.view.lock().expect("view") = (dbu.to_string(), sts.to_string());
    }

    fn observe_now(&self) -> Observed {
        let (me, sts) = self.view.lock().expect("view").clone();
        let st = self.lock();
        let prefix = format!("{sts}-");
        let pods: Vec<PodView> = st
            .pods
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, p)| PodView {
                name: n.clone(),
                uid: Some(format!("uid-{}", p.uid)),
                ip: Some(p.ip.clone()),
                revision: Some(p.revision.clone()),
                ready: p.dovecot && !p.blocked,
                terminating: false,
                maintenance: p.cordoned.then(|| format!("the node of {n} is cordoned")),
                // released pods are evicted at once (release_pod): none is ever seen released
                released: None,
                deletion_grace: None,
            })
            .collect();
        let directors: Vec<(String, Option<String>)> = st
            .directors
            .iter()
            .filter(|d| d.running)
            .map(|d| (d.name.clone(), Some(d.ip.clone())))
            .collect();
        let ring_queue = st
            .dbus
            .values()
            .filter(|d| d.name != me)
            .filter_map(|d| dbu_core::machine::lock::waiter(&d.name, &d.status))
            .collect();
        let ring_pods = st
            .pods
            .iter()
            .map(|(n, p)| (n.clone(), Some(p.ip.clone())))
            .collect();
        let ring_unready = st
            .pods
            .values()
            .filter(|p| !p.dovecot || p.blocked)
            .map(|p| p.ip.clone())
            .collect();
        let ring_former = st.ring_status.stood_for();
        Observed {
            me,
            ring_queue,
            ring_pods,
            ring_former,
            ring_unready,
            sts: Some(StsView {
                update_strategy: "OnDelete".into(),
                update_revision: Some(st.update_revision.clone()),
                replicas: st.replicas.get(&sts).copied().unwrap_or(0) as i32,
                ordinals_start: 0,
                current: true,
                template_revision: Some(st.update_revision.clone()),
                termination_grace: None,
            }),
            pods,
            director: directors.first().map(|(n, _)| n.clone()),
            directors,
            fresh: true,
            ..Observed::default()
        }
    }
}

#[async_trait]
impl PodExec for World {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let dies = {
            let mut st = self.lock();
            match st.faults.kill_after {
                Some(0) => true,
                Some(n) => {
                    st.faults.kill_after = Some(n - 1);
                    false
                }
                None => false,
            }
        };
        if dies {
            // the operator dies here: this exec never returns and the pass is dropped
            std::future::pending::<()>().await;
        }
        let mut st = self.lock();
        if st.faults.exec_fails > 0 {
            st.faults.exec_fails -= 1;
            st.note(|| format!("  exec {} {:?}: fails before it runs", req.pod, req.argv));
            return Err(ExecError::Transport("injected: connection reset".into()));
        }
        let res = st.exec(req.pod, req.argv);
        st.note(|| {
            format!(
                "  exec {} {}: {:?}",
                req.pod,
                req.argv.join(" "),
                res.as_ref().map(|o| o.exit_code)
            )
        });
        if st.faults.exec_lost > 0 {
            st.faults.exec_lost -= 1;
            return Err(ExecError::Timeout(Duration::from_secs(40)));
        }
        res
    }
}

#[async_trait]
impl Cluster for World {
    async fn observe(&self, _: &Settings) -> Result<Observed, ClusterError> {
        Ok(self.observe_now())
    }
    async fn observe_fresh(&self, _: &Settings) -> Result<Observed, ClusterError> {
        Ok(self.observe_now())
    }
    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError> {
        let mut st = self.lock();
        let Some(p) = st.pods.get(pod) else {
            return Err(ClusterError::NotFound(pod.to_string()));
        };
        if format!("uid-{}", p.uid) != uid {
            return Ok(());
        }
        let (sts, pip, out) = (p.sts.clone(), p.ip.clone(), p.came_back_out);
        let rev = st.update_revision.clone();
        if p.cordoned {
            // relocated: the StatefulSet brings it back on another node, at a new IP
            let new_ip = st.fresh_ip();
            st.note(|| format!("  delete pod {pod}: recreated at {rev} on another node, {new_ip}"));
            st.recreate_at(pod, &new_ip, false);
            let p = st.pods.get_mut(pod).expect("pod");
            p.made_by_operator = true;
            p.trusted = false;
            return Ok(());
        }
        st.note(|| format!("  delete pod {pod}: recreated at {rev}"));
        st.make_pod(pod, &sts, &pip, &rev);
        // at the same IP: still the world's out, until the operator puts it back
        let p = st.pods.get_mut(pod).expect("pod");
        p.came_back_out = out;
        p.made_by_operator = true;
        Ok(())
    }
    /// A node drain runs wherever a node is cordoned here, and its next eviction deletes a pod
    /// the operator released (as `kubectl drain`'s does): the pod goes as a delete would take it.
    async fn release_pod(&self, pod: &str, uid: &str, _: Timestamp) -> Result<(), ClusterError> {
        self.lock()
            .note(|| format!("  release pod {pod}: the node's drain evicts it"));
        self.delete_pod(pod, uid).await
    }
    async fn fresh_pod(&self, s: &Settings, pod: &str) -> Result<Option<PodView>, ClusterError> {
        Ok(self
            .observe(s)
            .await?
            .pods
            .into_iter()
            .find(|p| p.name == pod))
    }
    async fn read_key(&self, _: &ObjectKey) -> Result<Option<Vec<u8>>, ClusterError> {
        Ok(None)
    }
    async fn fresh_update_revision(&self, _: &Settings) -> Result<Option<String>, ClusterError> {
        Ok(Some(self.lock().update_revision.clone()))
    }
    async fn read_ring_lock(&self, _: &Settings) -> Result<RingLock, ClusterError> {
        let st = self.lock();
        // as the controller reads it: a DBU that no longer exists holds nothing but what its
        // cleanup left out
        Ok(RingLock {
            version: (st.ring_version > 0).then(|| st.ring_version.to_string()),
            holders: st
                .ring_out
                .iter()
                .filter(|h| h.left_out.is_some() || st.dbus.contains_key(&h.dbu))
                .cloned()
                .collect(),
        })
    }
    /// The model's record has no watch copy that could lag: the copy is the record.
    async fn cached_ring_lock(&self, s: &Settings) -> Option<RingLock> {
        self.read_ring_lock(s).await.ok()
    }
    async fn write_ring_lock(
        &self,
        _: &Settings,
        version: Option<&str>,
        holders: &[RingHolder],
    ) -> Result<(), ClusterError> {
        let mut st = self.lock();
        if st.faults.ring_conflicts > 0 {
            st.faults.ring_conflicts -= 1;
            return Err(ClusterError::Conflict(
                "injected: the ring's record changed".into(),
            ));
        }
        let now = (st.ring_version > 0).then(|| st.ring_version.to_string());
        if now.as_deref() != version {
            return Err(ClusterError::Conflict("the ring's record changed".into()));
        }
        st.ring_version += 1;
        st.ring_out = holders.to_vec();
        st.note(|| {
            format!(
                "  ring record: {:?}",
                holders
                    .iter()
                    .map(|h| format!(
                        "{}:{}{}",
                        h.dbu,
                        h.pod,
                        if h.left_out.is_some() {
                            " (left out)"
                        } else {
                            ""
                        }
                    ))
                    .collect::<Vec<_>>()
            )
        });
        Ok(())
    }
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

#[async_trait]
impl Probes for World {
    async fn lmtp(
        &self,
        ip: &str,
        _: u16,
        _: Duration,
        _: &str,
        _: &str,
    ) -> Result<(), dbu_core::probe::ProbeFailure> {
        let mut st = self.lock();
        let serving = st
            .pods
            .iter()
            .find(|(_, p)| p.ip == ip)
            .map(|(n, p)| (n.clone(), p.lmtp && !st.revision_of(p).broken));
        match serving {
            Some((name, true)) => {
                let p = st.pods.get_mut(&name).expect("pod");
                p.probed = true;
                // Verify's checks passed on this incarnation: it may serve
                if p.checked {
                    p.trusted = true;
                }
                Ok(())
            }
            _ => Err(dbu_core::probe::ProbeFailure {
                command: "connect".into(),
                reply: "connection refused".into(),
                transient: true,
            }),
        }
    }
    async fn imap(
        &self,
        _: &dbu_core::imap::ImapTarget,
        _: dbu_core::imap::ProbeInput,
    ) -> Result<(), dbu_core::probe::ProbeFailure> {
        Err(dbu_core::probe::ProbeFailure {
            command: "probe".into(),
            reply: "the model has no IMAP probe".into(),
            transient: false,
        })
    }
}
