//! A simulated world where every command succeeds: the plan runs the step scripts against it.
//!
//! It is a small model, not a list of canned answers: Dovecot runs until `doveadm stop`, which
//! returns once the master has exited (as it does unless the master hangs); two users are mapped to the backend, one with an IDLE session
//! (moved by a Move drain, gone by itself by the next poll otherwise) and one without a session
//! (flushed by a Move drain, expired by the next poll otherwise); Replace's delete brings a new
//! pod (a new UID) at the target revision; `director up` brings users back.

use crate::api::{BackendStatus, MailLayout};
use crate::dovecot::RingHost;
use crate::settings::Settings;

use super::{Action, ExecOutput, On, Output, PodView};

/// The user the simulated drain finds in IDLE on the backend: a placeholder, as the plan
/// cannot know which users will be there.
pub const SIM_USER: &str = "<user>";
/// Its session's process.
const SIM_PID: u32 = 4242;
/// The master's PID while it runs.
const MASTER_PID: u32 = 4000;

/// The world one backend's plan runs in.
#[derive(Debug, Clone)]
pub struct SimWorld {
    pub ring: Vec<RingHost>,
    /// The backend's IP (the recorded one) and the host the director hashes its users to.
    ip: String,
    other: String,
    /// Dovecot's master runs (until `doveadm stop`; again in the pod that replaces it).
    running: bool,
    /// The IDLE session of [`SIM_USER`], until it is moved.
    session: bool,
    pod: PodView,
    target: String,
    layout: MailLayout,
}

impl SimWorld {
    /// `ring`: the director ring as last read (the backend is added at `vhosts` if missing).
    pub fn new(
        s: &Settings,
        rec: &BackendStatus,
        ring: &[RingHost],
        target: &str,
        vhosts: u32,
    ) -> Self {
        let mut ring = ring.to_vec();
        if !ring.iter().any(|h| h.ip == rec.ip) {
            ring.push(RingHost {
                ip: rec.ip.clone(),
                vhosts,
                up: true,
                users: 0,
            });
        }
        for h in ring.iter_mut().filter(|h| h.ip == rec.ip) {
            h.users = 2;
        }
        let other = ring
            .iter()
            .find(|h| h.ip != rec.ip)
            .map_or_else(|| "<another host>".to_string(), |h| h.ip.clone());
        let user = &s.user;
        // the layout StopLmtp records, or the shipped example's: mail outside the cache
        let layout = rec.mail_layout.clone().unwrap_or(MailLayout {
            user: user.clone(),
            home: Some(format!("/srv/mail/{user}")),
            mail: Some(format!(
                "maildir:/srv/mail/{user}/Maildir:INDEX=/var/dovecot/vmail/{user}"
            )),
            expanded: true,
        });
        SimWorld {
            ring,
            ip: rec.ip.clone(),
            other,
            running: true,
            session: true,
            pod: PodView {
                name: rec.pod.clone(),
                uid: Some("<pod uid>".into()),
                ip: Some(rec.ip.clone()),
                revision: rec.from_revision.clone(),
                ready: true,
                terminating: false,
                maintenance: None,
                released: None,
                deletion_grace: None,
            },
            target: target.to_string(),
            layout,
        }
    }

    /// The end of one run of a script: time passes until the next poll (a session that was
    /// not moved has ended by itself).
    pub fn tick(&mut self) {
        if self.session {
            self.session = false;
            self.set_users(0);
        }
    }

    /// The ring as the director shows it now.
    pub fn ring(&self) -> Vec<RingHost> {
        self.ring.clone()
    }

    fn set_users(&mut self, n: u64) {
        for h in self.ring.iter_mut().filter(|h| h.ip == self.ip) {
            h.users = n;
        }
    }

    /// What performing `action` gives in this world.
    pub fn answer(&mut self, s: &Settings, action: &Action) -> Output {
        match action {
            Action::Exec { on, argv } => Output::Exec(Ok(self.exec(s, *on, argv))),
            Action::ReadPod => Output::Pod(Ok(Some(self.pod.clone()))),
            Action::ReadRevision => Output::Revision(Ok(Some(self.target.clone()))),
            Action::DeletePod { .. } => {
                self.pod.uid = Some("<new pod uid>".into());
                self.pod.revision = Some(self.target.clone());
                self.running = true;
                Output::Deleted(Ok(()))
            }
            Action::ReleasePod { at, .. } => {
                self.pod.released = Some(*at);
                Output::Released(Ok(()))
            }
            Action::ReadKey(_) => Output::Key(Ok(Some(b"<value>".to_vec()))),
            Action::LmtpProbe { .. } | Action::ImapProbe { .. } => Output::Probe(Ok(())),
        }
    }

    fn exec(&mut self, s: &Settings, on: On, argv: &[String]) -> ExecOutput {
        let ok = |stdout: String| ExecOutput {
            exit_code: 0,
            stdout,
            stderr: String::new(),
        };
        let (d, b) = (&s.director, &s.backend);
        let json = |v: serde_json::Value| v.to_string();
        if on == On::Backend {
            if *argv == crate::dovecot::read_master_pid(&s.base_dir) {
                if self.running {
                    return ok(format!("{MASTER_PID}\n"));
                }
                return ExecOutput {
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: format!(
                        "cat: {}/master.pid: No such file or directory",
                        s.base_dir.trim_end_matches('/')
                    ),
                };
            }
            if *argv == b.stop() {
                self.running = false;
                return ok(String::new());
            }
            if *argv == b.who() || *argv == b.who_user(SIM_USER) {
                let sessions = if self.session {
                    json(serde_json::json!([{"username": SIM_USER, "service": "imap",
                        "pid": SIM_PID.to_string(), "ip": "<client-ip>"}]))
                } else {
                    String::new()
                };
                return ok(sessions);
            }
            if *argv == b.process_status() {
                let procs = if self.session {
                    json(serde_json::json!([{"name": "imap",
                        "pid": SIM_PID.to_string(), "idle_start": "0"}]))
                } else {
                    "[]".to_string()
                };
                return ok(procs);
            }
            if *argv == crate::dovecot::process_titles(&[SIM_PID]) {
                return ok(format!(
                    "==> /proc/{SIM_PID}/cmdline <==\nimap [{SIM_USER} <client-ip> IDLE]\n"
                ));
            }
            if *argv == b.user_lookup(&s.user) {
                let l = &self.layout;
                return ok(json(serde_json::json!([
                    {"field": "home", "value": l.home.clone().unwrap_or_default()},
                    {"field": "mail", "value": l.mail.clone().unwrap_or_default()}])));
            }
            if *argv == b.doveconf_base_dir() {
                return ok(format!("{}\n", s.base_dir));
            }
            if *argv == b.doveconf_mail() {
                let l = &self.layout;
                return ok(format!(
                    "{}\n{}\n",
                    l.mail.clone().unwrap_or_default(),
                    l.home.clone().unwrap_or_default()
                ));
            }
            if *argv == b.mailbox_list(&s.user) {
                return ok(json(serde_json::json!([{"mailbox": s.mailbox}])));
            }
            if *argv == b.mailbox_status(&s.user, &s.mailbox) {
                return ok(json(
                    serde_json::json!([{"mailbox": s.mailbox, "messages": "1"}]),
                ));
            }
            // stop LMTP, the reset and its read-only probes (nothing found), fetch, expunge
            return ok(String::new());
        }
        if *argv == d.director_status() {
            let rows: Vec<serde_json::Value> = self
                .ring
                .iter()
                .map(|h| {
                    serde_json::json!({"mail server ip": h.ip, "vhosts": h.vhosts.to_string(),
                    "state": if h.up { "up" } else { "down" }, "users": h.users.to_string()})
                })
                .collect();
            return ok(json(serde_json::Value::Array(rows)));
        }
        if *argv == d.director_user_status(SIM_USER) {
            return ok(json(
                serde_json::json!([{"status": self.ip, "hashed": self.other}]),
            ));
        }
        if *argv == d.director_user_status(&s.user) {
            return ok(json(
                serde_json::json!([{"status": self.ip, "hashed": self.ip}]),
            ));
        }
        let ip = crate::dovecot::validate_ip(&self.ip).ok();
        if argv.iter().any(|a| a == "move") && argv.iter().any(|a| a == SIM_USER) {
            self.session = false;
            self.set_users(1);
        }
        if ip.is_some_and(|ip| *argv == d.director_flush(ip)) {
            self.set_users(0);
        }
        // back up in the ring: the director maps users to it again
        if ip.is_some_and(|ip| *argv == d.director_up(ip)) {
            self.set_users(1);
        }
        // update, up, down, flush, add, remove, move: done
        ok(String::new())
    }
}
