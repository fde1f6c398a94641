//! A realistic mail workload for drain tests and benchmarks: IDLE clients, pollers, recent logouts, LMTP.
//!
//! Every client goes through the director, as real ones do. What users would notice is counted:
//! IDLE sessions the server closed (kicks, each one a reconnect), logins that failed, and
//! deliveries that did not go through; each with its time, so a rollout's driver can charge them
//! to the backend that was draining then.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::traffic::{ImapSession, LmtpError, lmtp_deliver};

/// Who does what.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub director: String,
    /// Users that keep one session parked in IDLE, and reconnect when it is closed.
    pub idle: Vec<String>,
    /// Users that log in, SELECT INBOX and log out every `poll_every` (each with its own phase).
    pub pollers: Vec<String>,
    pub poll_every: Duration,
    /// Users that logged out just before: `prime` logs each in and out once.
    pub recent: Vec<String>,
    /// Recipients of a steady stream of LMTP deliveries through the director, in turn.
    pub recipients: Vec<String>,
    pub lmtp_every: Duration,
    /// Hard stop for every client, whatever happens.
    pub max_duration: Duration,
}

impl WorkloadSpec {
    /// `users` lab users (user2.. upwards; user1 is the verify user) split as a busy backend's
    /// mix: a fifth in IDLE, two fifths polling, the rest logged out minutes ago; mail for all.
    pub fn mix(director: &str, users: u32, poll_every: Duration) -> Self {
        let names: Vec<String> = (2..users + 2).map(|i| format!("user{i}")).collect();
        let n = names.len();
        let (idle, rest) = names.split_at(n / 5);
        let (pollers, recent) = rest.split_at(2 * n / 5);
        WorkloadSpec {
            director: director.to_string(),
            idle: idle.to_vec(),
            pollers: pollers.to_vec(),
            poll_every,
            recent: recent.to_vec(),
            recipients: names.clone(),
            lmtp_every: Duration::from_millis(200),
            max_duration: Duration::from_secs(3600),
        }
    }
}

/// Something a user would notice, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noticed {
    /// An IDLE session closed by the server (the client reconnects).
    Kick { user: String },
    /// A login that did not succeed (refused, or the connection failed).
    FailedLogin { user: String, why: String },
    /// A delivery answered 4xx or lost; the sender retries.
    DeliveryDeferred { user: String, why: String },
    /// A delivery answered 5xx: it bounced.
    DeliveryBounced { user: String, why: String },
}

#[derive(Debug, Clone, Default)]
pub struct WorkloadStats {
    /// What users noticed, with the time since the workload started.
    pub noticed: Vec<(Duration, Noticed)>,
    pub logins: u64,
    pub delivered: BTreeMap<String, u64>,
}

impl WorkloadStats {
    pub fn kicks(&self) -> usize {
        self.count(|n| matches!(n, Noticed::Kick { .. }))
    }
    pub fn failed_logins(&self) -> usize {
        self.count(|n| matches!(n, Noticed::FailedLogin { .. }))
    }
    pub fn bounced(&self) -> usize {
        self.count(|n| matches!(n, Noticed::DeliveryBounced { .. }))
    }
    fn count(&self, f: impl Fn(&Noticed) -> bool) -> usize {
        self.noticed.iter().filter(|(_, n)| f(n)).count()
    }
    /// What was noticed in [from, to) since the start.
    pub fn between(&self, from: Duration, to: Duration) -> Vec<&Noticed> {
        self.noticed
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| n)
            .collect()
    }
}

/// Running clients in threads; `stop` joins them.
pub struct Workload {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    stats: Arc<Mutex<WorkloadStats>>,
}

/// Logs each of `users` in and out once: their mappings now linger for the director's expiry.
pub fn prime(director: &str, users: &[String]) -> Result<(), String> {
    for u in users {
        ImapSession::login(director, u)
            .map_err(|e| format!("{u}: {e}"))?
            .logout();
    }
    Ok(())
}

impl Workload {
    /// Starts every client; IDLE sessions are parked before this returns (so the rollout starts
    /// on a backend that really has them).
    pub fn start(spec: WorkloadSpec) -> Result<Workload, String> {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(WorkloadStats::default()));
        let end = started + spec.max_duration;
        let running = {
            let stop = stop.clone();
            move || !stop.load(Ordering::Relaxed) && Instant::now() < end
        };
        let note = {
            let stats = stats.clone();
            move |n: Noticed| stats.lock().unwrap().noticed.push((started.elapsed(), n))
        };
        let mut handles = Vec::new();
        let parked = Arc::new(std::sync::Barrier::new(spec.idle.len() + 1));
        for user in spec.idle.clone() {
            let (running, note, stats, parked) =
                (running.clone(), note.clone(), stats.clone(), parked.clone());
            let dir = spec.director.clone();
            handles.push(std::thread::spawn(move || {
                let mut first = true;
                while running() {
                    let session = ImapSession::login(&dir, &user).and_then(|mut s| {
                        s.command("SELECT INBOX")?;
                        s.idle()?;
                        Ok(s)
                    });
                    if first {
                        parked.wait();
                        first = false;
                    }
                    let mut s = match session {
                        Ok(s) => s,
                        Err(why) => {
                            note(Noticed::FailedLogin {
                                user: user.clone(),
                                why,
                            });
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    };
                    stats.lock().unwrap().logins += 1;
                    let kept = loop {
                        if !running() {
                            break true;
                        }
                        match s.listen(Duration::from_millis(500)) {
                            Ok(true) => continue,
                            _ => break false,
                        }
                    };
                    if !kept {
                        note(Noticed::Kick { user: user.clone() });
                    }
                }
            }));
        }
        let pollers = spec.pollers.len().max(1) as u32;
        for (i, user) in spec.pollers.clone().into_iter().enumerate() {
            let (running, note, stats) = (running.clone(), note.clone(), stats.clone());
            let (dir, every) = (spec.director.clone(), spec.poll_every);
            handles.push(std::thread::spawn(move || {
                // spread over the interval, so a moment without any poller session is rare
                let mut next = started + every * i as u32 / pollers;
                while running() {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(500)));
                        continue;
                    }
                    next += every;
                    match ImapSession::login(&dir, &user)
                        .and_then(|mut s| s.command("SELECT INBOX").map(|_| s))
                    {
                        Ok(s) => {
                            s.logout();
                            stats.lock().unwrap().logins += 1;
                        }
                        Err(why) => note(Noticed::FailedLogin {
                            user: user.clone(),
                            why,
                        }),
                    }
                }
            }));
        }
        if !spec.recipients.is_empty() {
            let (running, note, stats) = (running.clone(), note.clone(), stats.clone());
            let spec2 = spec.clone();
            handles.push(std::thread::spawn(move || {
                let mut seq = 0usize;
                while running() {
                    seq += 1;
                    let user = &spec2.recipients[seq % spec2.recipients.len()];
                    match lmtp_deliver(&spec2.director, user, &format!("load-{seq}")) {
                        Ok(()) => {
                            *stats
                                .lock()
                                .unwrap()
                                .delivered
                                .entry(user.clone())
                                .or_insert(0) += 1
                        }
                        Err(LmtpError::Perm(why)) => note(Noticed::DeliveryBounced {
                            user: user.clone(),
                            why,
                        }),
                        Err(e) => note(Noticed::DeliveryDeferred {
                            user: user.clone(),
                            why: e.to_string(),
                        }),
                    }
                    std::thread::sleep(spec2.lmtp_every);
                }
            }));
        }
        parked.wait();
        Ok(Workload {
            started,
            stop,
            handles,
            stats,
        })
    }

    pub fn stats(&self) -> WorkloadStats {
        self.stats.lock().unwrap().clone()
    }

    pub fn stop(self) -> WorkloadStats {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
        self.stats.lock().unwrap().clone()
    }
}
