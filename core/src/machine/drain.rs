//! The Move drain's decisions: which sessions on a drained backend may move now, and what to say.
//!
//! Everything a move does goes through the director (`director flush <ip>` without `-F`, or
//! `director move <user> <ip>`), which kills the user's proxied connections on every director
//! and holds the user's next logins until the kill is done plus `director_user_kick_delay`, so
//! the user is never served by two backends at once. What this file adds is the choice of whom
//! to move: nobody with a command in progress or a delivery in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::dovecot::{self, Process, Session};

/// How often a drain may list the users mapped to the backend (`director map` iterates the
/// whole userdb).
pub const LIST_EVERY: Duration = Duration::from_secs(30);

/// How soon the next poll comes after a move: each batch's reconnects land before the next
/// batch is kicked (the director holds a moved user's logins ~2 s, `director_user_kick_delay`).
pub const MOVE_PACE: Duration = Duration::from_secs(1);

/// What a session is doing, as its process title says (`verbose_proctitle = yes`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionState {
    /// Parked in imap-hibernate: the client sits in IDLE and reconnects by itself.
    Hibernated,
    /// `[user ip IDLE]`.
    Idle,
    /// `[user ip]`: connected, no command running. A poller between LOGIN and SELECT looks
    /// the same as a cached connection, so it is left alone too.
    Between,
    /// A command in progress (`[user ip FETCH]`), or a POP3 session (its title has no command
    /// to tell a download from a pause): left to finish.
    Command(String),
    /// The title says nothing (`verbose_proctitle = no`): cannot tell IDLE from a command.
    Unknown,
}

impl SessionState {
    fn movable(&self) -> bool {
        matches!(self, SessionState::Hibernated | SessionState::Idle)
    }
}

/// The bracketed part of a verbose process title, split in words: `imap [u 1.2.3.4 IDLE]`.
fn bracket(title: &str) -> Option<Vec<&str>> {
    let start = title.find('[')?;
    let end = title.rfind(']')?;
    (end > start).then(|| title[start + 1..end].split_whitespace().collect())
}

/// One session's state from its service, its process's service and title.
pub fn session_state(
    s: &Session,
    procs: &[Process],
    titles: &BTreeMap<u32, String>,
) -> SessionState {
    if procs
        .iter()
        .any(|p| p.pid == s.pid && p.service == "imap-hibernate")
    {
        return SessionState::Hibernated;
    }
    if s.service != "imap" {
        return SessionState::Command(format!("{} session", s.service));
    }
    let Some(words) = titles.get(&s.pid).and_then(|t| bracket(t)) else {
        return SessionState::Unknown;
    };
    // [user ip] or [user ip CMD ...]; anything shorter is not imap's title
    match words.as_slice() {
        [user, _ip] if *user == s.user => SessionState::Between,
        [user, _ip, "IDLE"] if *user == s.user => SessionState::Idle,
        [user, _ip, cmd @ ..] if *user == s.user && !cmd.is_empty() => {
            SessionState::Command(cmd.join(" "))
        }
        _ => SessionState::Unknown,
    }
}

/// A busy LMTP process: a delivery in flight, to this user when its title names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Connected but between transactions (`[ip READY]`): nothing in flight.
    Ready,
    /// A transaction (`MAIL FROM`, `RCPT TO user`, `DATA`); the user when the title names one.
    InFlight(Option<String>),
    /// The title says nothing: assume a delivery in flight, to anyone.
    Unknown,
}

pub fn delivery(p: &Process, titles: &BTreeMap<u32, String>) -> Delivery {
    let Some(words) = titles.get(&p.pid).and_then(|t| bracket(t)) else {
        return Delivery::Unknown;
    };
    match words.as_slice() {
        [_ip] | [_ip, "READY"] => Delivery::Ready,
        [_ip, "RCPT", "TO", user, ..] => Delivery::InFlight(Some(user.to_string())),
        _ => Delivery::InFlight(None),
    }
}

/// Services whose busy processes work for users of the backend outside any session: indexing,
/// doveadm and dsync (served by `doveadm`). No flush while one works: the user's state would be
/// written here after another backend began serving the user.
pub const WORKERS: [&str; 2] = ["indexer-worker", "doveadm"];

/// Pids whose titles the plan needs: every session's process and every busy LMTP process.
pub fn pids_to_read(sessions: &[Session], procs: &[Process]) -> Vec<u32> {
    let set: BTreeSet<u32> = sessions
        .iter()
        .map(|s| s.pid)
        .chain(
            procs
                .iter()
                .filter(|p| p.service == "lmtp" && p.busy)
                .map(|p| p.pid),
        )
        .collect();
    set.into_iter().collect()
}

/// Whether `user` may still move, from a fresh read of its sessions (`who -1 <user>` and their
/// titles) right before its move: every session IDLE or hibernated (a user that left has none).
/// `procs` is the poll's process list, which tells a hibernated session by its process.
pub fn still_movable(
    user: &str,
    sessions: &[Session],
    procs: &[Process],
    titles: &BTreeMap<u32, String>,
) -> bool {
    sessions
        .iter()
        .filter(|s| s.user == user)
        .all(|s| session_state(s, procs, titles).movable())
}

/// What one poll of a Move drain does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainAct {
    /// No session and no delivery: `director flush <ip>` moves every mapping at once; there is
    /// nothing to kick (a login that races in is kicked by the director before it moves).
    Flush,
    /// `director move` these users (sessions that only sit there), at most maxParallel.
    Move(Vec<String>),
    /// Nothing may move now.
    Wait,
}

/// The backend as one poll saw it, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPlan {
    pub act: DrainAct,
    pub sessions: u64,
    /// Mapped users with no session on the backend (about: a session of a user the director
    /// does not map here, e.g. a direct login, is counted against the mapped ones).
    pub without_session: u64,
    /// Sessions in a command (or POP3): they end within seconds, by themselves.
    pub commands: u64,
    /// Sessions connected between commands: a client that keeps its connection, which only
    /// it (or the ceiling) ends.
    pub between: u64,
    /// Busy indexer-worker and doveadm (dsync) processes: they hold the flush.
    pub workers: u64,
    /// Sessions whose state the title does not show.
    pub unknown: u64,
    pub deliveries: u64,
    /// Movable users not moved in this poll (they wait for the next batches).
    pub queued: u64,
    /// Users without a session should move one by one now (`director map` names them): the
    /// flush that would move them at once waits for sessions only their clients or the
    /// ceiling end.
    pub move_sessionless: bool,
    pub message: String,
}

/// One poll's plan for a backend `mapped` users are still mapped to.
pub fn plan(
    mapped: u64,
    sessions: &[Session],
    procs: &[Process],
    titles: &BTreeMap<u32, String>,
    max_parallel: usize,
) -> DrainPlan {
    let deliveries: Vec<Delivery> = procs
        .iter()
        .filter(|p| p.service == "lmtp" && p.busy)
        .map(|p| delivery(p, titles))
        .filter(|d| *d != Delivery::Ready)
        .collect();
    let blind_delivery = deliveries
        .iter()
        .any(|d| matches!(d, Delivery::Unknown | Delivery::InFlight(None)));
    let receiving: BTreeSet<&str> = deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::InFlight(Some(u)) => Some(u.as_str()),
            _ => None,
        })
        .collect();
    // a user moves only when every one of its sessions may
    let mut by_user: BTreeMap<&str, Vec<SessionState>> = BTreeMap::new();
    for s in sessions {
        by_user
            .entry(s.user.as_str())
            .or_default()
            .push(session_state(s, procs, titles));
    }
    let count = |f: fn(&SessionState) -> bool| -> u64 {
        by_user.values().flatten().filter(|st| f(st)).count() as u64
    };
    let commands = count(|s| matches!(s, SessionState::Command(_)));
    let between = count(|s| *s == SessionState::Between);
    let workers = procs
        .iter()
        .filter(|p| p.busy && WORKERS.contains(&p.service.as_str()))
        .count() as u64;
    let unknown = count(|s| *s == SessionState::Unknown);
    let mut movable: Vec<(SessionState, &str)> = by_user
        .iter()
        .filter(|(u, states)| {
            states.iter().all(SessionState::movable)
                && !receiving.contains(*u)
                && dovecot::validate_user(u).is_ok()
        })
        // the least noticed first: hibernated, then IDLE
        .map(|(u, states)| {
            (
                states.iter().max().cloned().unwrap_or(SessionState::Idle),
                *u,
            )
        })
        .collect();
    movable.sort();
    let without_session = mapped.saturating_sub(by_user.len() as u64);
    let base = DrainPlan {
        act: DrainAct::Wait,
        sessions: sessions.len() as u64,
        without_session,
        commands,
        between,
        workers,
        unknown,
        deliveries: deliveries.len() as u64,
        queued: 0,
        move_sessionless: without_session > 0 && (unknown > 0 || between > 0),
        message: String::new(),
    };
    if sessions.is_empty() && deliveries.is_empty() && workers == 0 {
        return DrainPlan {
            act: DrainAct::Flush,
            message: format!(
                "no session and no delivery on the backend: moving its {mapped} mapped users at once (director flush; nothing to kick)"
            ),
            ..base
        };
    }
    let left = left_to_finish(&base);
    if blind_delivery || movable.is_empty() {
        let why = if blind_delivery && !movable.is_empty() {
            " (a delivery in flight names no user: nobody moves until it ends)"
        } else {
            ""
        };
        return DrainPlan {
            message: format!(
                "{left}{why}; {without_session} users without a session wait for them"
            ),
            queued: movable.len() as u64,
            ..base
        };
    }
    let n = movable.len().min(max_parallel.max(1));
    let users: Vec<String> = movable[..n].iter().map(|(_, u)| u.to_string()).collect();
    let queued = (movable.len() - n) as u64;
    DrainPlan {
        message: format!("moving {n} idle users ({queued} more queued); {left}",),
        act: DrainAct::Move(users),
        queued,
        ..base
    }
}

fn left_to_finish(p: &DrainPlan) -> String {
    let mut parts = Vec::new();
    if p.commands > 0 {
        parts.push(format!("{} sessions in a command", p.commands));
    }
    if p.between > 0 {
        parts.push(format!(
            "{} sessions connected between commands (they end when their clients leave)",
            p.between
        ));
    }
    if p.deliveries > 0 {
        parts.push(format!("{} deliveries in flight", p.deliveries));
    }
    if p.workers > 0 {
        parts.push(format!(
            "{} indexer or doveadm processes working for users here",
            p.workers
        ));
    }
    let unknown = p.unknown;
    if unknown > 0 {
        parts.push(format!(
            "{unknown} sessions whose state Dovecot's process titles do not show (set verbose_proctitle = yes)"
        ));
    }
    if parts.is_empty() {
        "nothing left to finish".to_string()
    } else {
        format!("left to finish: {}", parts.join(", "))
    }
}

/// Whether only the ceiling can end the drain as things stand: sessions nobody may move whose
/// end nothing predicts (state unknown, or connected between commands).
fn held_to_ceiling(plan: &DrainPlan) -> bool {
    plan.unknown > 0 || plan.between > 0
}

/// Whether something ends within seconds or moves: commands, deliveries, workers, batches.
fn soon(plan: &DrainPlan) -> bool {
    !matches!(plan.act, DrainAct::Wait)
        || plan.commands > 0
        || plan.deliveries > 0
        || plan.workers > 0
        || plan.queued > 0
}

/// When the drain should end: the ceiling while sessions whose end nothing predicts remain
/// (only the ceiling can end them); else commands, deliveries and workers end in seconds, and
/// movable users go in batches.
pub fn predicted_end(
    plan: &DrainPlan,
    max_parallel: usize,
    poll: Duration,
    now: Timestamp,
    ceiling: Timestamp,
) -> Timestamp {
    if held_to_ceiling(plan) {
        return ceiling;
    }
    let batches = plan.queued.div_ceil(max_parallel.max(1) as u64) + 1;
    let mut d = MOVE_PACE * batches as u32;
    if plan.commands > 0 || plan.deliveries > 0 || plan.workers > 0 {
        d += poll.min(Duration::from_secs(5));
    }
    let end = now
        .checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO))
        .unwrap_or(now);
    end.min(ceiling)
}

/// How soon to look again: at the move pace while anything moves or is about to (a command,
/// a delivery or a worker ends within seconds, and its user may move then), else at the poll
/// interval (only sessions that end when their clients leave remain).
pub fn requeue(plan: &DrainPlan, poll: Duration) -> Duration {
    if soon(plan) {
        MOVE_PACE.min(poll)
    } else {
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dovecot::{parse_process_status, parse_process_titles, parse_who_sessions};

    const WHO: &str = include_str!("../../testdata/drain/who-mixed.json");
    const PS: &str = include_str!("../../testdata/drain/process-status-mixed.json");
    const TITLES: &str = include_str!("../../testdata/drain/titles-mixed.txt");

    fn real() -> (Vec<Session>, Vec<Process>, BTreeMap<u32, String>) {
        (
            parse_who_sessions(WHO).unwrap(),
            parse_process_status(PS).unwrap(),
            parse_process_titles(TITLES),
        )
    }

    fn sess(user: &str, service: &str, pid: u32) -> Session {
        Session {
            user: user.into(),
            service: service.into(),
            pid,
        }
    }

    fn proc_(service: &str, pid: u32, busy: bool) -> Process {
        Process {
            service: service.into(),
            pid,
            busy,
        }
    }

    fn titles(t: &[(u32, &str)]) -> BTreeMap<u32, String> {
        t.iter().map(|(p, s)| (*p, s.to_string())).collect()
    }

    #[test]
    fn real_titles_parse_to_pid_and_title() {
        let t = parse_process_titles(TITLES);
        assert_eq!(t.len(), 4);
        assert_eq!(t[&18927], "dovecot-backend-0/imap [user11 127.0.0.1]");
        assert_eq!(
            t[&18910],
            "dovecot-backend-0/lmtp [127.0.0.1 RCPT TO user16]"
        );
    }

    #[test]
    fn real_sessions_are_classified_as_their_titles_say() {
        let (s, p, t) = real();
        let state = |u: &str| {
            let x = s.iter().find(|x| x.user == u).unwrap();
            session_state(x, &p, &t)
        };
        assert_eq!(state("user11"), SessionState::Between);
        assert_eq!(state("user12"), SessionState::Hibernated);
        assert_eq!(state("user13"), SessionState::Hibernated);
        assert_eq!(state("user15"), SessionState::Command("APPEND".into()));
        let lmtp = p.iter().find(|x| x.service == "lmtp").unwrap();
        assert_eq!(
            delivery(lmtp, &t),
            Delivery::InFlight(Some("user16".into()))
        );
    }

    #[test]
    fn the_real_mix_moves_the_hibernated_and_leaves_the_rest() {
        let (s, p, t) = real();
        let plan = plan(6, &s, &p, &t, 10);
        assert_eq!(
            plan.act,
            DrainAct::Move(vec!["user12".into(), "user13".into()])
        );
        assert_eq!(
            (plan.sessions, plan.commands, plan.between, plan.unknown),
            (4, 1, 1, 0)
        );
        assert_eq!(plan.deliveries, 1);
        // six mapped, four distinct users in sessions
        assert_eq!(plan.without_session, 2);
        assert!(
            plan.message.contains("1 deliveries in flight"),
            "{}",
            plan.message
        );
    }

    #[test]
    fn plans() {
        let idle = |u: &str, pid: u32| {
            (
                sess(u, "imap", pid),
                (pid, format!("imap [{u} 10.0.0.1 IDLE]")),
            )
        };
        struct Case {
            name: &'static str,
            sessions: Vec<Session>,
            procs: Vec<Process>,
            titles: Vec<(u32, String)>,
            max: usize,
            want: DrainAct,
        }
        let (a, ta) = idle("a", 1);
        let (b, tb) = idle("b", 2);
        let (c, tc) = idle("c", 3);
        let cases = vec![
            Case {
                name: "nothing on the backend: flush",
                sessions: vec![],
                procs: vec![proc_("lmtp", 9, false)],
                titles: vec![],
                max: 5,
                want: DrainAct::Flush,
            },
            Case {
                name: "an LMTP connection between transactions does not hold the flush",
                sessions: vec![],
                procs: vec![proc_("lmtp", 9, true)],
                titles: vec![(9, "lmtp [10.0.0.9 READY]".into())],
                max: 5,
                want: DrainAct::Flush,
            },
            Case {
                name: "an indexer-worker at work holds the flush",
                sessions: vec![],
                procs: vec![proc_("indexer-worker", 8, true)],
                titles: vec![],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "a dsync or doveadm process at work holds the flush",
                sessions: vec![],
                procs: vec![proc_("doveadm", 8, true), proc_("indexer-worker", 7, false)],
                titles: vec![],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "an idle indexer-worker does not",
                sessions: vec![],
                procs: vec![proc_("indexer-worker", 7, false)],
                titles: vec![],
                max: 5,
                want: DrainAct::Flush,
            },
            Case {
                name: "a delivery in flight holds the flush",
                sessions: vec![],
                procs: vec![proc_("lmtp", 9, true)],
                titles: vec![(9, "lmtp [10.0.0.9 RCPT TO a]".into())],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "a busy LMTP process without a title holds everything",
                sessions: vec![a.clone()],
                procs: vec![proc_("imap", 1, true), proc_("lmtp", 9, true)],
                titles: vec![ta.clone()],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "a user receiving mail is not moved, the others are",
                sessions: vec![a.clone(), b.clone()],
                procs: vec![proc_("lmtp", 9, true)],
                titles: vec![
                    ta.clone(),
                    tb.clone(),
                    (9, "lmtp [10.0.0.9 RCPT TO a]".into()),
                ],
                max: 5,
                want: DrainAct::Move(vec!["b".into()]),
            },
            Case {
                name: "paced: at most max per poll, in name order",
                sessions: vec![c.clone(), b.clone(), a.clone()],
                procs: vec![],
                titles: vec![ta.clone(), tb.clone(), tc.clone()],
                max: 2,
                want: DrainAct::Move(vec!["a".into(), "b".into()]),
            },
            Case {
                name: "a user with one IDLE and one busy session stays",
                sessions: vec![a.clone(), sess("a", "imap", 7), b.clone()],
                procs: vec![],
                titles: vec![
                    ta.clone(),
                    (7, "imap [a 10.0.0.1 FETCH]".into()),
                    tb.clone(),
                ],
                max: 5,
                want: DrainAct::Move(vec!["b".into()]),
            },
            Case {
                name: "no verbose_proctitle: nobody moves",
                sessions: vec![a.clone(), b.clone()],
                procs: vec![],
                titles: vec![(1, "dovecot/imap".into()), (2, "dovecot/imap".into())],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "pop3 is left to finish",
                sessions: vec![sess("p", "pop3", 4)],
                procs: vec![],
                titles: vec![(4, "pop3 [p 10.0.0.1]".into())],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "a title of another user (a reused pid) is not trusted",
                sessions: vec![sess("a", "imap", 1)],
                procs: vec![],
                titles: vec![(1, "imap [zed 10.0.0.1 IDLE]".into())],
                max: 5,
                want: DrainAct::Wait,
            },
            Case {
                name: "a user name doveadm would read as an option is never moved",
                sessions: vec![sess("-A", "imap", 1)],
                procs: vec![],
                titles: vec![(1, "imap [-A 10.0.0.1 IDLE]".into())],
                max: 5,
                want: DrainAct::Wait,
            },
        ];
        for c in cases {
            let t: BTreeMap<u32, String> = c.titles.into_iter().collect();
            let p = plan(5, &c.sessions, &c.procs, &t, c.max);
            assert_eq!(p.act, c.want, "{}: {}", c.name, p.message);
        }
    }

    #[test]
    fn predicted_end_and_requeue() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ceiling = Timestamp::from_second(1_800_000_900).unwrap();
        let t = titles(&[
            (1, "imap [a 1.1.1.1 IDLE]"),
            (2, "imap [b 1.1.1.1 IDLE]"),
            (3, "imap [c 1.1.1.1 IDLE]"),
        ]);
        let s = vec![
            sess("a", "imap", 1),
            sess("b", "imap", 2),
            sess("c", "imap", 3),
        ];
        let p = plan(3, &s, &[], &t, 1);
        // this batch and two more
        assert_eq!(p.queued, 2);
        let end = predicted_end(&p, 1, Duration::from_secs(5), now, ceiling);
        assert_eq!(end.as_second() - now.as_second(), 3);
        assert_eq!(requeue(&p, Duration::from_secs(5)), MOVE_PACE);
        let blind = titles(&[(1, "dovecot/imap")]);
        let p = plan(3, &s[..1], &[], &blind, 1);
        assert_eq!(
            predicted_end(&p, 1, Duration::from_secs(5), now, ceiling),
            ceiling
        );
        assert_eq!(requeue(&p, Duration::from_secs(5)), Duration::from_secs(5));
        // a command ends in seconds: fast, predicted soon
        let t = titles(&[(1, "imap [a 1.1.1.1 FETCH]")]);
        let p = plan(3, &s[..1], &[], &t, 1);
        assert_eq!(requeue(&p, Duration::from_secs(5)), MOVE_PACE);
        let end = predicted_end(&p, 1, Duration::from_secs(5), now, ceiling);
        assert_eq!(end.as_second() - now.as_second(), 6);
        // only a client connected between commands: nothing predicts its end but the ceiling,
        // so it is looked at the poll interval, not every second
        let t = titles(&[(1, "imap [a 1.1.1.1]")]);
        let p = plan(3, &s[..1], &[], &t, 1);
        assert_eq!(requeue(&p, Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(
            predicted_end(&p, 1, Duration::from_secs(5), now, ceiling),
            ceiling
        );
        // ... unless something else moves meanwhile
        let t = titles(&[(1, "imap [a 1.1.1.1]"), (2, "imap [b 1.1.1.1 IDLE]")]);
        let p = plan(3, &s[..2], &[], &t, 1);
        assert_eq!(p.act, DrainAct::Move(vec!["b".into()]));
        assert_eq!(requeue(&p, Duration::from_secs(5)), MOVE_PACE);
        assert_eq!(
            predicted_end(&p, 1, Duration::from_secs(5), now, ceiling),
            ceiling
        );
    }
}
