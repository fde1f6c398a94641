//! A real Dovecot director and backends on loopback, each a "pod" in its own mount namespace.
//!
//! The lab crate: used by the local demo and the tests, never shipped in the operator binary. Each pod sees its own /etc/dovecot, /run/dovecot,
//! /var/lib/dovecot, /var/dovecot/vmail and /var/log/dovecot (bind mounts inside a private mount
//! namespace held by a `sleep` process), and all backends share /srv/mail, as they would share
//! NFS or object storage. Exec enters the namespace with nsenter, so the operator runs exactly
//! the argv it would run through pods/exec.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use dbu_core::machine::{Observed, PodView, RingHolder, RingLock, StsView};
use dbu_core::settings::Settings;
use dovecot_upgrade_operator::engine::{Cluster, ClusterError};
use kube_core::labels::{Selector, SelectorExt};

pub mod faults;
mod local_exec;
pub mod traffic;
pub mod workload;
pub use local_exec::LocalExec;
pub use traffic::{ImapSession, LmtpError, lmtp_deliver, lmtp_deliver_with};

/// Password of every lab user; lab only.
pub const LAB_PASSWORD: &str = "lab-pass";

/// Paths every pod sees as its own, relative to the pod folder; the last is shared.
const MOUNTS: [(&str, &str); 5] = [
    ("etc", "/etc/dovecot"),
    ("run", "/run/dovecot"),
    ("lib", "/var/lib/dovecot"),
    ("vmail", "/var/dovecot/vmail"),
    ("log", "/var/log/dovecot"),
];
const SHARED_MAIL: &str = "/srv/mail";

#[derive(Debug, Clone)]
pub struct LabSpec {
    pub root: PathBuf,
    /// Third octet of the lab's addresses: director 127.0.N.10, backends 127.0.N.11 and up.
    pub net: u8,
    /// Vhost count of each backend (their number is the number of backends).
    pub vhosts: Vec<u32>,
    pub users: u32,
    /// `director_user_expire` (the director refuses less than 10s).
    pub user_expire: String,
    /// Directors in the ring (pods director-0, director-1, ...).
    pub directors: usize,
    /// How many of the last backends belong to a second StatefulSet, `POOL_B` (pods `mx-0`,
    /// `mx-1`, ...), whose pods are hosts of the same director ring.
    pub pool_b: usize,
    /// The old example's mail layout (CONTROL= and home on the per-pod volume the reset wipes).
    pub legacy_layout: bool,
    /// Backends park IDLE sessions in imap-hibernate after this long (`imap_hibernate_timeout`).
    pub hibernate_after: Option<String>,
    /// The first StatefulSet's `spec.ordinals.start`: its pods are `backend-<start>` on.
    pub ordinals_start: usize,
    /// A deleted pod is recreated this long after, and only after two observations saw it
    /// absent (as the StatefulSet controller takes a moment); None: at once.
    pub recreate_after: Option<Duration>,
    /// The directors have a userdb that lists its users (passwd-file), so that `director map`
    /// names them; false: the usual director with a static passdb only, where it cannot.
    pub director_userdb: bool,
}

impl LabSpec {
    pub fn new(root: impl Into<PathBuf>, net: u8, vhosts: Vec<u32>) -> Self {
        Self {
            root: root.into(),
            net,
            vhosts,
            users: 30,
            user_expire: "10s".into(),
            directors: 1,
            pool_b: 0,
            legacy_layout: false,
            hibernate_after: None,
            ordinals_start: 0,
            recreate_after: None,
            director_userdb: false,
        }
    }
    /// The first director's address (director-0).
    pub fn director_ip(&self) -> String {
        self.director_ip_of(0)
    }
    /// director-i listens on 127.0.N.(10 - i).
    pub fn director_ip_of(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, 10 - i)
    }
    /// Backend `i`'s pod name: `backend-i`, or `mx-j` for the second StatefulSet.
    pub fn backend_name(&self, i: usize) -> String {
        let first = self.vhosts.len() - self.pool_b.min(self.vhosts.len());
        if i < first {
            format!("{STATEFULSET}-{}", i + self.ordinals_start)
        } else {
            format!("{POOL_B}-{}", i - first)
        }
    }
    pub fn backend_ip(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, 11 + i)
    }
}

struct LabPod {
    ip: String,
    revision: String,
    conf: String,
    holder: Child,
    dir: PathBuf,
}

struct State {
    /// The lab's stand-in for each DovecotRing's record (by the ring a DBU's settings are
    /// bound to; "" for settings bound to none): a version and the holders, changed by CAS.
    ring_locks: BTreeMap<String, (u64, Vec<RingHolder>)>,
    /// Writes of a ring's record still to be refused as conflicts (an injected 409).
    conflicts_due: u32,
    /// Deleted pods the StatefulSet controller recreates at a time: (due, observations still to
    /// see it absent, IP, revision, config).
    recreations: BTreeMap<String, (Instant, u32, String, String, String)>,
    /// Each DBU's status as last published (the API server's copy), for the ring's queue.
    statuses: BTreeMap<String, dbu_core::api::DovecotBackendUpgradeStatus>,
    /// Every write of the ring's record, in order: the holders after it.
    ring_writes: Vec<Vec<RingHolder>>,
    pods: BTreeMap<String, LabPod>,
    update_revision: String,
    /// Extra config lines of each revision.
    revisions: BTreeMap<String, String>,
    /// IP a pod gets when it is next recreated (to simulate a new pod IP).
    next_ip: BTreeMap<String, String>,
    /// How many times each pod was created.
    created: BTreeMap<String, u32>,
    /// Passwords a revision's passdb has for some users, unlike every other revision's.
    revision_passwords: BTreeMap<String, Vec<(String, String)>>,
    /// The lab's Secrets and ConfigMaps: (kind, name, key) to value.
    objects: BTreeMap<(String, String, String), Vec<u8>>,
}

/// The ring a DBU's settings are bound to ("" for none): the key of its record in the lab.
fn ring_of(s: &Settings) -> &str {
    s.ring.as_deref().unwrap_or("")
}

/// A lab pod's labels, as its StatefulSet's template would set them: directors `app=director`
/// and `zone=a`/`zone=b` by ordinal (two zones of one ring), backends `app=mail` and their
/// StatefulSet.
pub fn labels_of(pod: &str) -> BTreeMap<String, String> {
    let (set, ordinal) = pod.rsplit_once('-').unwrap_or((pod, "0"));
    if set == "director" {
        let zone = if ordinal.parse::<u32>().unwrap_or(0) % 2 == 0 {
            "a"
        } else {
            "b"
        };
        [("app", "director"), ("zone", zone)]
    } else {
        [("app", "mail"), ("statefulset", set)]
    }
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A pod's UID: its name and how many times it was created (a recreated pod is a new object).
fn uid_of(st: &State, pod: &str) -> String {
    format!("{pod}-{}", st.created.get(pod).copied().unwrap_or(0))
}

/// A running lab. Dropping it stops every Dovecot and namespace it started.
pub struct Lab {
    pub spec: LabSpec,
    exec: LocalExec,
    state: Mutex<State>,
    /// Signaled when a pod is (re)created: the lab's stand-in for the controller's pod watch.
    changed: tokio::sync::Notify,
}

/// Settings for a lab rollout: the fixtures' minimal spec, verified as user1 (who has mail in
/// every lab), with `patch` merged in (RFC 7386).
///
/// The soak is off unless a test turns it on: a lab ring has no traffic of its own, and a
/// soak without an IMAP probe waits for real users.
pub fn settings(patch: serde_json::Value) -> Settings {
    dbu_core::settings::validate(&spec(patch)).expect("lab spec validates")
}

/// The spec `settings` validates.
pub fn spec(patch: serde_json::Value) -> dbu_core::api::DovecotBackendUpgradeSpec {
    let mut p = serde_json::json!({"verify": {"user": "user1", "soak": {"enabled": false}}});
    dbu_core::fixtures::merge_patch(&mut p, patch);
    dbu_core::fixtures::spec(p)
}

pub const DIRECTOR_POD: &str = "director-0";
pub const STATEFULSET: &str = dbu_core::fixtures::STATEFULSET;
/// The second backend StatefulSet of a lab with `pool_b` backends.
pub const POOL_B: &str = "mx";

fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let end = Instant::now() + limit;
    while !f() {
        if Instant::now() > end {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Processes in the mount namespace of `holder`, other than the holder itself.
fn ns_members(holder: u32) -> Vec<u32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{holder}/ns/mnt")) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != holder)
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|n| n == ns))
        .collect()
}

fn master_pid(pod_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pod_dir.join("run/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("dovecot")
        .then_some(pid)
}

/// The shipped example's layout: mail, control files and home on the shared store, only the
/// index on the pod's own volume. `legacy`: the old example's, with CONTROL= and the home in
/// the pod's /var/dovecot/vmail, which the default reset wipes.
fn mail_layout(legacy: bool) -> (String, String) {
    if legacy {
        (
            format!(
                "maildir:{SHARED_MAIL}/%u/Maildir:INDEX=/var/dovecot/vmail/%u:CONTROL=/var/dovecot/vmail/%u"
            ),
            "/var/dovecot/vmail/%u".into(),
        )
    } else {
        (
            format!("maildir:{SHARED_MAIL}/%u/Maildir:INDEX=/var/dovecot/vmail/%u"),
            format!("{SHARED_MAIL}/%u"),
        )
    }
}

fn backend_conf(ip: &str, name: &str, extra: &str, spec: &LabSpec) -> String {
    let (mail_location, home) = mail_layout(spec.legacy_layout);
    let hibernate = spec.hibernate_after.as_ref().map_or(String::new(), |t| {
        format!(
            "imap_hibernate_timeout = {t}\nservice imap-hibernate {{\n  unix_listener imap-hibernate {{\n    mode = 0666\n  }}\n}}\nservice imap {{\n  unix_listener imap-master {{\n    mode = 0666\n  }}\n}}\n"
        )
    });
    format!(
        r#"# lab backend {name}
protocols = imap lmtp
listen = {ip}
base_dir = /run/dovecot
state_dir = /var/lib/dovecot
instance_name = {name}
log_path = /var/log/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
mail_location = {mail_location}
passdb {{
  driver = passwd-file
  args = /etc/dovecot/users
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={home}
}}
service imap-login {{
  inet_listener imap {{
    port = 143
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = 24
  }}
}}
service doveadm {{
  inet_listener {{
    port = 2425
  }}
}}
doveadm_password = lab-doveadm
# the Move drain tells IDLE from a command by the process title
verbose_proctitle = yes
{hibernate}{extra}
"#
    )
}

fn director_conf(spec: &LabSpec, i: usize) -> String {
    director_conf_at(spec, i, &spec.director_ip_of(i))
}

/// Director `i`'s config when its pod has address `ip` (a recreated pod's new IP: the ring it
/// names has the new address, as a headless Service would resolve it).
fn director_conf_at(spec: &LabSpec, i: usize, ip: &str) -> String {
    let ring: Vec<String> = (0..spec.directors)
        .map(|d| {
            if d == i {
                ip.to_string()
            } else {
                spec.director_ip_of(d)
            }
        })
        .collect();
    let backends: Vec<String> = (0..spec.vhosts.len()).map(|i| spec.backend_ip(i)).collect();
    format!(
        r#"# lab director
protocols = imap lmtp
listen = {ip}
base_dir = /run/dovecot
state_dir = /var/lib/dovecot
instance_name = director-{i}
log_path = /var/log/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
director_servers = {ring}
director_mail_servers = {backends}
director_user_expire = {expire}
lmtp_proxy = yes
doveadm_password = lab-doveadm
doveadm_port = 2425
passdb {{
  driver = static
  args = proxy=y nopassword=y
}}
{userdb}service director {{
  unix_listener login/director {{
    mode = 0666
  }}
  fifo_listener login/proxy-notify {{
    mode = 0666
  }}
  unix_listener director-userdb {{
    mode = 0600
  }}
  inet_listener {{
    port = 9090
  }}
}}
service imap-login {{
  executable = imap-login director
  inet_listener imap {{
    port = 143
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = 24
  }}
}}
protocol lmtp {{
  auth_socket_path = director-userdb
}}
protocol doveadm {{
  auth_socket_path = director-userdb
}}
"#,
        backends = backends.join(" "),
        ring = ring.join(" "),
        expire = spec.user_expire,
        userdb = if spec.director_userdb {
            "userdb {\n  driver = passwd-file\n  args = /etc/dovecot/users\n}\n"
        } else {
            ""
        },
    )
}

impl Lab {
    /// Starts the director and backends at revision `rev-1`, and sets each backend's vhost count.
    pub fn start(spec: LabSpec) -> Result<Lab, String> {
        for (_, target) in MOUNTS.iter().chain([&("", SHARED_MAIL)]) {
            std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
        }
        let shared = spec.root.join("shared-mail");
        std::fs::create_dir_all(&shared).map_err(|e| e.to_string())?;
        // dovecot's unprivileged processes must traverse the lab root
        run(Command::new("chmod").arg("0755").arg(&spec.root))?;
        run(Command::new("chown").arg("mail:mail").arg(&shared))?;
        let users: String = (1..=spec.users)
            .map(|i| format!("user{i}:{{PLAIN}}{LAB_PASSWORD}::::::\n"))
            .collect();
        std::fs::write(spec.root.join("users"), users).map_err(|e| e.to_string())?;
        let lab = Lab {
            exec: LocalExec::new(),
            state: Mutex::new(State {
                ring_locks: BTreeMap::new(),
                conflicts_due: 0,
                recreations: BTreeMap::new(),
                statuses: BTreeMap::new(),
                ring_writes: Vec::new(),
                pods: BTreeMap::new(),
                update_revision: "rev-1".into(),
                revisions: [("rev-1".to_string(), String::new())].into(),
                next_ip: BTreeMap::new(),
                created: BTreeMap::new(),
                revision_passwords: BTreeMap::new(),
                objects: BTreeMap::new(),
            }),
            spec,
            changed: tokio::sync::Notify::new(),
        };
        for d in 0..lab.spec.directors.max(1) {
            lab.start_director(d)?;
        }
        if lab.spec.directors > 1 {
            lab.wait_ring_synced()?;
        }
        for i in 0..lab.spec.vhosts.len() {
            let name = lab.spec.backend_name(i);
            let ip = lab.spec.backend_ip(i);
            lab.create_pod(
                &name,
                &ip,
                "rev-1",
                &backend_conf(&ip, &name, "", &lab.spec),
            )?;
        }
        for (i, v) in lab.spec.vhosts.clone().into_iter().enumerate() {
            lab.doveadm(
                DIRECTOR_POD,
                &[
                    "director",
                    "update",
                    &lab.spec.backend_ip(i),
                    &v.to_string(),
                ],
            )?;
        }
        Ok(lab)
    }

    pub fn exec(&self) -> LocalExec {
        self.exec.clone()
    }

    fn pod_dir(&self, name: &str) -> PathBuf {
        self.spec.root.join("pods").join(name)
    }

    fn create_pod(&self, name: &str, ip: &str, revision: &str, conf: &str) -> Result<(), String> {
        let dir = self.pod_dir(name);
        for (sub, _) in MOUNTS {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        // base_dir is per pod life, like an emptyDir; vmail persists like a PVC
        let _ = std::fs::remove_dir_all(dir.join("run"));
        std::fs::create_dir_all(dir.join("run")).map_err(|e| e.to_string())?;
        run(Command::new("chown")
            .arg("mail:mail")
            .arg(dir.join("vmail")))?;
        std::fs::write(dir.join("etc/dovecot.conf"), conf).map_err(|e| e.to_string())?;
        let mut users =
            std::fs::read_to_string(self.spec.root.join("users")).map_err(|e| e.to_string())?;
        let changed = self
            .state
            .lock()
            .expect("lab state")
            .revision_passwords
            .get(revision)
            .cloned()
            .unwrap_or_default();
        for (user, password) in changed {
            users = users
                .lines()
                .map(|l| match l.split_once(':') {
                    Some((u, _)) if u == user => format!("{u}:{{PLAIN}}{password}::::::\n"),
                    _ => format!("{l}\n"),
                })
                .collect();
        }
        std::fs::write(dir.join("etc/users"), users).map_err(|e| e.to_string())?;
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let pid = holder.id();
        let own_ns = std::fs::read_link("/proc/self/ns/mnt").map_err(|e| e.to_string())?;
        wait_until("pod mount namespace", Duration::from_secs(5), || {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns != own_ns)
        })?;
        let mut binds: Vec<(PathBuf, &str)> =
            MOUNTS.iter().map(|(s, t)| (dir.join(s), *t)).collect();
        binds.push((self.spec.root.join("shared-mail"), SHARED_MAIL));
        for (src, target) in binds {
            run(Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "--", "mount", "--bind"])
                .arg(&src)
                .arg(target))?;
        }
        // a daemonizing dovecot keeps its stderr open: send it to a file, never a pipe
        let log = std::fs::File::create(dir.join("log/start.log")).map_err(|e| e.to_string())?;
        let status = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--", "dovecot"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("dovecot: {e}"))?;
        // a Dovecot that refuses its config leaves the pod running without it, never Ready, as
        // the examples' supervisor does on a real node
        if status.success() {
            wait_until(
                &format!("{name} master.pid"),
                Duration::from_secs(10),
                || master_pid(&dir).is_some(),
            )?;
        }
        self.exec.set_pod(name, pid);
        let mut st = self.state.lock().expect("lab state");
        *st.created.entry(name.to_string()).or_insert(0) += 1;
        st.pods.insert(
            name.to_string(),
            LabPod {
                ip: ip.to_string(),
                revision: revision.to_string(),
                conf: conf.to_string(),
                holder,
                dir,
            },
        );
        Ok(())
    }

    /// Waits until director-0 reports the ring synced.
    pub fn wait_ring_synced(&self) -> Result<(), String> {
        wait_until("director ring synced", Duration::from_secs(30), || {
            self.doveadm(DIRECTOR_POD, &["-f", "json", "director", "ring", "status"])
                .is_ok_and(|o| o.contains("\"ring synced\""))
        })
    }

    /// Restarts a pod with the same address, revision and config (a container restart).
    pub fn restart_pod(&self, name: &str) -> Result<(), String> {
        let (ip, rev, conf) = {
            let st = self.state.lock().expect("lab state");
            let p = st.pods.get(name).ok_or_else(|| format!("no pod {name}"))?;
            (p.ip.clone(), p.revision.clone(), p.conf.clone())
        };
        self.kill_pod(name);
        self.create_pod(name, &ip, &rev, &conf)
    }

    /// Starts director `i` again after `stop_pod` (a ring member that comes back).
    pub fn start_director(&self, i: usize) -> Result<(), String> {
        let ip = self.spec.director_ip_of(i);
        self.create_pod(
            &format!("director-{i}"),
            &ip,
            "rev-1",
            &director_conf(&self.spec, i),
        )?;
        self.changed.notify_one();
        Ok(())
    }

    /// Starts director `i` again at another address (its pod recreated with a new IP): the
    /// other directors' rings still name its old one.
    pub fn start_director_at(&self, i: usize, ip: &str) -> Result<(), String> {
        self.create_pod(
            &format!("director-{i}"),
            ip,
            "rev-1",
            &director_conf_at(&self.spec, i, ip),
        )?;
        self.changed.notify_one();
        Ok(())
    }

    /// Stops a pod for good (a dead ring member, a lost node).
    pub fn stop_pod(&self, name: &str) {
        self.kill_pod(name);
    }

    /// Dovecot dies on its own: every process in the pod but the holder gets SIGKILL.
    pub fn crash_dovecot(&self, name: &str) {
        let st = self.state.lock().expect("lab state");
        let Some(pod) = st.pods.get(name) else { return };
        let holder = pod.holder.id();
        for pid in ns_members(holder) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // a crashed master leaves its pid file behind
    }

    /// How many times `pod` was created (1 + replacements + restarts).
    pub fn creations(&self, pod: &str) -> u32 {
        self.state
            .lock()
            .expect("lab state")
            .created
            .get(pod)
            .copied()
            .unwrap_or(0)
    }

    /// Stops every process in the pod's mount namespace, then its holder, as a runtime would.
    fn kill_pod(&self, name: &str) {
        let pod = self.state.lock().expect("lab state").pods.remove(name);
        let Some(mut pod) = pod else { return };
        self.exec.remove_pod(name);
        let holder = pod.holder.id();
        // SIGTERM lets the master stop its children; SIGKILL whatever is left
        if let Some(pid) = master_pid(&pod.dir) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = wait_until("pod processes to exit", Duration::from_secs(10), || {
            ns_members(holder).is_empty()
        });
        for pid in ns_members(holder) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = pod.holder.kill();
        let _ = pod.holder.wait();
    }

    /// A new StatefulSet revision, as if the pod template's config changed.
    pub fn new_revision(&self, rev: &str, extra_conf: &str) {
        let mut st = self.state.lock().expect("lab state");
        st.revisions.insert(rev.to_string(), extra_conf.to_string());
        st.update_revision = rev.to_string();
    }

    /// In revision `rev` the passdb has `password` for `user` (a revision whose auth rejects
    /// the password everyone else accepts).
    pub fn revision_password(&self, rev: &str, user: &str, password: &str) {
        self.state
            .lock()
            .expect("lab state")
            .revision_passwords
            .entry(rev.to_string())
            .or_default()
            .push((user.to_string(), password.to_string()));
    }

    /// A Secret's key (as `kubectl create secret generic --from-literal` would store it).
    pub fn put_secret(&self, name: &str, key: &str, value: &[u8]) {
        self.put_object("Secret", name, key, value);
    }

    pub fn put_config_map(&self, name: &str, key: &str, value: &[u8]) {
        self.put_object("ConfigMap", name, key, value);
    }

    fn put_object(&self, kind: &str, name: &str, key: &str, value: &[u8]) {
        self.state.lock().expect("lab state").objects.insert(
            (kind.to_string(), name.to_string(), key.to_string()),
            value.to_vec(),
        );
    }

    fn read_object(&self, key: &dbu_core::settings::ObjectKey) -> Option<Vec<u8>> {
        use dbu_core::settings::ObjectKey;
        let k = match key {
            ObjectKey::Secret { name, key } => ("Secret", name, key),
            ObjectKey::ConfigMap { name, key } => ("ConfigMap", name, key),
        };
        self.state
            .lock()
            .expect("lab state")
            .objects
            .get(&(k.0.to_string(), k.1.clone(), k.2.clone()))
            .cloned()
    }

    /// The next time `pod` is recreated it gets `ip` (its old address leaves the ring).
    pub fn move_on_recreate(&self, pod: &str, ip: &str) {
        self.state
            .lock()
            .expect("lab state")
            .next_ip
            .insert(pod.to_string(), ip.to_string());
    }

    /// Ready as the lab's pods are: a Dovecot master runs.
    pub fn pod_ready(&self, pod: &str) -> bool {
        let dir = self
            .state
            .lock()
            .expect("lab state")
            .pods
            .get(pod)
            .map(|p| p.dir.clone());
        dir.is_some_and(|d| master_pid(&d).is_some())
    }

    pub fn pod_ip(&self, pod: &str) -> Option<String> {
        self.state
            .lock()
            .expect("lab state")
            .pods
            .get(pod)
            .map(|p| p.ip.clone())
    }

    pub fn pod_revision(&self, pod: &str) -> Option<String> {
        self.state
            .lock()
            .expect("lab state")
            .pods
            .get(pod)
            .map(|p| p.revision.clone())
    }

    pub fn backend_names(&self) -> Vec<String> {
        (0..self.spec.vhosts.len())
            .map(|i| self.spec.backend_name(i))
            .collect()
    }

    /// Runs argv in a pod and returns stdout; for set-up and assertions.
    pub fn run_in(&self, pod: &str, argv: &[&str]) -> Result<String, String> {
        let pid = self
            .state
            .lock()
            .expect("lab state")
            .pods
            .get(pod)
            .map(|p| p.holder.id());
        let pid = pid.ok_or_else(|| format!("no pod {pod}"))?;
        let out = run(Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--"])
            .args(argv))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn doveadm(&self, pod: &str, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["doveadm"];
        argv.extend_from_slice(args);
        self.run_in(pod, &argv)
    }

    /// The director's ring as parsed by the operator's own parser.
    pub fn ring(&self) -> Result<Vec<dbu_core::dovecot::RingHost>, String> {
        dbu_core::dovecot::parse_director_status(
            &self.doveadm(DIRECTOR_POD, &["-f", "json", "director", "status"])?,
        )
        .map_err(|e| e.to_string())
    }

    /// The backend the director currently maps `user` to, if any.
    pub fn user_host(&self, user: &str) -> Result<Option<String>, String> {
        let out = self.doveadm(DIRECTOR_POD, &["-f", "json", "director", "status", user])?;
        let v: Vec<BTreeMap<String, String>> =
            serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(v.first()
            .and_then(|r| r.get("status"))
            .filter(|s| s.as_str() != "n/a")
            .cloned())
    }

    /// INBOX message count of `user`, read on a backend.
    pub fn inbox_count(&self, pod: &str, user: &str) -> Result<u64, String> {
        let out = self.doveadm(
            pod,
            &[
                "-f", "json", "mailbox", "status", "-u", user, "messages", "INBOX",
            ],
        )?;
        dbu_core::dovecot::parse_mailbox_messages(&out)
            .map_err(|e| e.to_string())?
            .first()
            .map(|(_, n)| *n)
            .ok_or_else(|| "no INBOX".to_string())
    }
}

impl Lab {
    /// Creates the deleted pods whose recreation is due (see `LabSpec::recreate_after`).
    fn recreate_due(&self) {
        type Due = (Instant, u32, String, String, String);
        let due: Vec<(String, Due)> = {
            let mut st = self.state.lock().expect("lab state");
            for r in st.recreations.values_mut() {
                r.1 = r.1.saturating_sub(1);
            }
            let names: Vec<String> = st
                .recreations
                .iter()
                .filter(|(_, r)| r.0 <= Instant::now() && r.1 == 0)
                .map(|(n, _)| n.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| st.recreations.remove_entry(&n))
                .collect()
        };
        for (pod, (_, _, ip, rev, conf)) in due {
            // starting dovecot blocks for a moment; keep it off the async workers
            let made = tokio::task::block_in_place(|| self.create_pod(&pod, &ip, &rev, &conf));
            made.expect("a recreated lab pod starts");
            self.changed.notify_one();
        }
    }

    /// The world as a DBU named `me` for StatefulSet `sts` sees it.
    fn observe_as(&self, sts: &str, me: &str, s: &Settings) -> Observed {
        self.recreate_due();
        // the directors the settings' selector picks by the pods' labels, as the controller's
        // pod store does (a selector the lab cannot read picks none)
        let picks = Selector::try_from(s.director_label_selector.clone()).ok();
        let st = self.state.lock().expect("lab state");
        let prefix = format!("{sts}-");
        let pods: Vec<PodView> = st
            .pods
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(name, p)| PodView {
                name: name.clone(),
                uid: Some(uid_of(&st, name)),
                ip: Some(p.ip.clone()),
                revision: Some(p.revision.clone()),
                ready: master_pid(&p.dir).is_some(),
                terminating: false,
                maintenance: None,
                released: None,
                deletion_grace: None,
            })
            .collect();
        let replicas = (0..self.spec.vhosts.len())
            .filter(|i| self.spec.backend_name(*i).starts_with(&prefix))
            .count();
        // every Ready director by name; the first gets the commands, as the controller picks
        let directors: Vec<(String, Option<String>)> = st
            .pods
            .iter()
            .filter(|(n, p)| {
                picks.as_ref().is_some_and(|sel| sel.matches(&labels_of(n)))
                    && master_pid(&p.dir).is_some()
            })
            .map(|(n, p)| (n.clone(), Some(p.ip.clone())))
            .collect();
        let director = directors.first().map(|(n, _)| n.clone());
        let ring_queue = st
            .statuses
            .iter()
            .filter(|(d, _)| d.as_str() != me)
            .filter_map(|(d, status)| dbu_core::machine::lock::waiter(d, status))
            .collect();
        // every backend pod of the lab's ring (both pools), for whose IP is whose
        let ring_pods = st
            .pods
            .iter()
            .filter(|(n, _)| !n.starts_with("director-"))
            .map(|(n, p)| (n.clone(), Some(p.ip.clone())))
            .collect();
        // Ready as the lab's pods are: a Dovecot master runs
        let ring_unready = st
            .pods
            .iter()
            .filter(|(n, p)| !n.starts_with("director-") && master_pid(&p.dir).is_none())
            .map(|(_, p)| p.ip.clone())
            .collect();
        Observed {
            ring_queue,
            ring_pods,
            // the lab keeps no DovecotRing status: its ring's pass is taken as just run, each
            // backend pod standing for the host at its IP now (its pods move only under a
            // record, so no host is one a pod left, and the state there is never read)
            ring_former: st
                .pods
                .iter()
                .filter(|(n, _)| !n.starts_with("director-"))
                .map(|(n, p)| dbu_core::api::StoodFor {
                    ip: p.ip.clone(),
                    pod: n.clone(),
                    vhosts: 0,
                    up: false,
                    counts_for: None,
                    taken_by: None,
                    counted: false,
                })
                .collect(),
            ring_unready,
            directors,
            unsynced: Vec::new(),
            ring_members: Vec::new(),
            other_rings: None,
            me: me.to_string(),
            ring_lock: None,
            ring_lock_cached: false,
            sts: Some(StsView {
                update_strategy: "OnDelete".into(),
                update_revision: Some(st.update_revision.clone()),
                replicas: replicas as i32,
                ordinals_start: if sts == STATEFULSET {
                    self.spec.ordinals_start as i32
                } else {
                    0
                },
                current: true,
                // each lab revision's pod template carries its own name as mailops.io/revision
                template_revision: Some(st.update_revision.clone()),
                termination_grace: None,
            }),
            pods,
            director,
            director_overlap: vec![],
            owned_by_other: None,
            ring: None,
            ring_synced: None,
            probe_credentials: None,
            // the lab's state is the source itself: there is no cache to lag
            fresh: true,
        }
    }

    fn read_lock(&self, ring: &str) -> RingLock {
        let st = self.state.lock().expect("lab state");
        let (v, holders) = st.ring_locks.get(ring).cloned().unwrap_or_default();
        RingLock {
            version: (v > 0).then(|| v.to_string()),
            holders,
        }
    }

    fn write_lock(
        &self,
        ring: &str,
        version: Option<&str>,
        holders: &[RingHolder],
    ) -> Result<(), ClusterError> {
        let mut st = self.state.lock().expect("lab state");
        if st.conflicts_due > 0 {
            st.conflicts_due -= 1;
            return Err(ClusterError::Conflict(
                "injected: the ring's record changed".into(),
            ));
        }
        let lock = st.ring_locks.entry(ring.to_string()).or_default();
        let now = (lock.0 > 0).then(|| lock.0.to_string());
        if now.as_deref() != version {
            return Err(ClusterError::Conflict("the lab's ring lock changed".into()));
        }
        *lock = (lock.0 + 1, holders.to_vec());
        st.ring_writes.push(holders.to_vec());
        Ok(())
    }

    /// The next `n` writes of any ring's record fail as a lost compare-and-swap (409).
    pub fn conflict_next_ring_writes(&self, n: u32) {
        self.state.lock().expect("lab state").conflicts_due = n;
    }

    /// Injected conflicts not yet met by a write.
    pub fn conflicts_due(&self) -> u32 {
        self.state.lock().expect("lab state").conflicts_due
    }

    /// The lab's pods as the API server lists them in namespace `lab` (name, UID, labels, IP),
    /// for the controller's stores.
    pub fn pod_objects(&self) -> Vec<serde_json::Value> {
        let st = self.state.lock().expect("lab state");
        st.pods
            .iter()
            .map(|(name, p)| {
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "lab", "uid": uid_of(&st, name),
                                 "labels": labels_of(name)},
                    "status": {"podIP": p.ip},
                })
            })
            .collect()
    }

    /// Every write of the ring's record so far: the holders after each.
    pub fn ring_writes(&self) -> Vec<Vec<RingHolder>> {
        self.state.lock().expect("lab state").ring_writes.clone()
    }

    /// The UID a pod has now (as observed).
    pub fn pod_uid(&self, pod: &str) -> Option<String> {
        let st = self.state.lock().expect("lab state");
        st.pods.contains_key(pod).then(|| uid_of(&st, pod))
    }

    /// The holders of the lab's ring lock now, for settings bound to no ring (for assertions).
    pub fn ring_holders(&self) -> Vec<RingHolder> {
        self.read_lock("").holders
    }

    /// The holders of DovecotRing `ring`'s record now (for assertions).
    pub fn ring_holders_of(&self, ring: &str) -> Vec<RingHolder> {
        self.read_lock(ring).holders
    }

    /// The cluster as the DBU `dbu` for StatefulSet `sts` sees it; every view of one lab shares
    /// its pods, directors and ring lock, as DBUs share one API server.
    pub fn view(&self, sts: &str, dbu: &str) -> LabView<'_> {
        LabView {
            lab: self,
            sts: sts.to_string(),
            me: dbu.to_string(),
        }
    }
}

/// One DBU's view of a lab (see `Lab::view`).
pub struct LabView<'a> {
    lab: &'a Lab,
    sts: String,
    me: String,
}

impl LabView<'_> {
    /// Stores this DBU's status where the other DBUs of the ring see it (its status patch).
    pub fn publish(&self, status: &dbu_core::api::DovecotBackendUpgradeStatus) {
        let mut st = self.lab.state.lock().expect("lab state");
        st.statuses.insert(self.me.clone(), status.clone());
    }
}

#[async_trait]
impl Cluster for LabView<'_> {
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError> {
        Ok(self.lab.observe_as(&self.sts, &self.me, s))
    }
    async fn observe_fresh(&self, s: &Settings) -> Result<Observed, ClusterError> {
        self.observe(s).await
    }
    async fn fresh_pod(
        &self,
        s: &Settings,
        pod: &str,
    ) -> Result<Option<dbu_core::machine::PodView>, ClusterError> {
        // the lab has no cache: what it observes is the source
        Ok(self
            .observe(s)
            .await?
            .pods
            .into_iter()
            .find(|p| p.name == pod))
    }
    async fn fresh_update_revision(&self, s: &Settings) -> Result<Option<String>, ClusterError> {
        Ok(self.observe(s).await?.sts.and_then(|x| x.update_revision))
    }
    async fn read_key(
        &self,
        key: &dbu_core::settings::ObjectKey,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        Ok(self.lab.read_object(key))
    }
    async fn read_ring_lock(&self, s: &Settings) -> Result<RingLock, ClusterError> {
        Ok(self.lab.read_lock(ring_of(s)))
    }
    /// The lab's ring record has no watch copy that could lag: it is the source.
    async fn cached_ring_lock(&self, s: &Settings) -> Option<RingLock> {
        Some(self.lab.read_lock(ring_of(s)))
    }
    async fn write_ring_lock(
        &self,
        s: &Settings,
        version: Option<&str>,
        holders: &[RingHolder],
    ) -> Result<(), ClusterError> {
        self.lab.write_lock(ring_of(s), version, holders)
    }
    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError> {
        self.lab.delete_pod(pod, uid).await
    }
    async fn release_pod(
        &self,
        pod: &str,
        uid: &str,
        at: k8s_openapi::jiff::Timestamp,
    ) -> Result<(), ClusterError> {
        self.lab.release_pod(pod, uid, at).await
    }
    async fn changed(&self) {
        self.lab.changed().await
    }
}

/// The lab as the one DBU of most tests sees it: StatefulSet `backend`, DBU `lab/rollout`.
#[async_trait]
impl Cluster for Lab {
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError> {
        Ok(self.observe_as(STATEFULSET, "lab/rollout", s))
    }

    async fn observe_fresh(&self, s: &Settings) -> Result<Observed, ClusterError> {
        self.observe(s).await
    }

    async fn fresh_pod(
        &self,
        s: &Settings,
        pod: &str,
    ) -> Result<Option<dbu_core::machine::PodView>, ClusterError> {
        self.view(STATEFULSET, "lab/rollout")
            .fresh_pod(s, pod)
            .await
    }
    async fn fresh_update_revision(&self, s: &Settings) -> Result<Option<String>, ClusterError> {
        self.view(STATEFULSET, "lab/rollout")
            .fresh_update_revision(s)
            .await
    }

    async fn read_key(
        &self,
        key: &dbu_core::settings::ObjectKey,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        Ok(self.read_object(key))
    }

    async fn read_ring_lock(&self, s: &Settings) -> Result<RingLock, ClusterError> {
        Ok(self.read_lock(ring_of(s)))
    }
    /// The lab's ring record has no watch copy that could lag: it is the source.
    async fn cached_ring_lock(&self, s: &Settings) -> Option<RingLock> {
        Some(self.read_lock(ring_of(s)))
    }

    async fn write_ring_lock(
        &self,
        s: &Settings,
        version: Option<&str>,
        holders: &[RingHolder],
    ) -> Result<(), ClusterError> {
        self.write_lock(ring_of(s), version, holders)
    }

    /// The lab's pods sit on no node under maintenance, so Replace never releases one.
    async fn release_pod(
        &self,
        pod: &str,
        _: &str,
        _: k8s_openapi::jiff::Timestamp,
    ) -> Result<(), ClusterError> {
        Err(ClusterError::Invalid(format!(
            "{pod}: the lab has no node under maintenance, so no pod to release"
        )))
    }

    /// Like the StatefulSet controller: the pod is recreated at the update revision. Like the
    /// API server's UID precondition: a pod with another UID is left alone.
    async fn delete_pod(&self, pod: &str, uid: &str) -> Result<(), ClusterError> {
        if self.pod_uid(pod).as_deref() != Some(uid) {
            return Ok(());
        }
        let (ip, rev, extra) = {
            let mut st = self.state.lock().expect("lab state");
            let old_ip = st
                .pods
                .get(pod)
                .map(|p| p.ip.clone())
                .ok_or_else(|| ClusterError::NotFound(format!("no pod {pod}")))?;
            let ip = st.next_ip.remove(pod).unwrap_or(old_ip);
            let rev = st.update_revision.clone();
            let extra = st.revisions.get(&rev).cloned().unwrap_or_default();
            (ip, rev, extra)
        };
        self.kill_pod(pod);
        let conf = backend_conf(&ip, pod, &extra, &self.spec);
        if let Some(after) = self.spec.recreate_after {
            self.state
                .lock()
                .expect("lab state")
                .recreations
                .insert(pod.to_string(), (Instant::now() + after, 2, ip, rev, conf));
            return Ok(());
        }
        let pod = pod.to_string();
        // starting dovecot blocks for a moment; keep it off the async workers
        let res = tokio::task::block_in_place(|| self.create_pod(&pod, &ip, &rev, &conf))
            .map_err(ClusterError::Transient);
        self.changed.notify_one();
        res
    }

    async fn changed(&self) {
        self.changed.notified().await
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let names: Vec<String> = self
            .state
            .lock()
            .map(|s| s.pods.keys().cloned().collect())
            .unwrap_or_default();
        for n in names {
            self.kill_pod(&n);
        }
    }
}
