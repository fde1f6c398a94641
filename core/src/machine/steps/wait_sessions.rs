//! WaitSessions: until the director maps no user here and `who` shows no session (Wait), or
//! moving the users whose sessions may move (Move); at the ceiling, what `onDrainTimeout` says.

use std::collections::BTreeMap;

use crate::api::{BackendStatus, DrainStrategy};
use crate::dovecot::{self, CommandKind};
use crate::time::{after, elapsed};

use super::super::decision::DrainPoll;
use super::super::drain::{self, DrainAct};
use super::{
    Cleanup, Cx, Decision, ExecOutput, GateInput, Gated, Held, On, Reads, RingState, Run,
    StepResult, StepSpec, judge,
};

/// Process titles read by one exec.
pub const TITLES_PER_EXEC: usize = 200;

/// How long past the ceiling a Move drain may still move users one by one before the flush
/// moves whoever is left.
pub const CEILING_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    if let Some(back) = super::moved_before_stop(cx)? {
        return Ok(back);
    }
    let s = cx.s;
    // users mapped at the ceiling: no need to count sessions
    if let Some(n) = cx.ceiling_users.filter(|n| *n > 0) {
        return at_ceiling(cx, n);
    }
    let mapped = cx
        .obs
        .ring
        .iter()
        .flatten()
        .find(|h| h.ip == cx.rec.ip)
        .map_or(0, |h| h.users);
    if s.drain_strategy == DrainStrategy::Move && cx.ceiling_users.is_none() && mapped > 0 {
        return move_poll(cx, mapped);
    }
    // the director counts mappings; confirm on the backend that nobody is left
    let who = match read_who(cx)? {
        Ok(who) => who,
        Err(done) => return Ok(done),
    };
    let argv = s.backend.who();
    Ok(judge::sessions(
        &who.stdout,
        cx.ceiling_users,
        s.on_drain_timeout,
        s.poll_interval,
        |m| cx.error(&argv, Some(0), &m),
    ))
}

/// At the ceiling with `n` users still mapped: with `onTimeout: Proceed` they are moved
/// before anything stops, so no user stays mapped to a backend whose LMTP or Dovecot is
/// stopped (their logins would fail until RingRemove's flush).
fn at_ceiling(cx: &mut Cx<'_>, n: u64) -> Run<StepResult> {
    let s = cx.s;
    let outcome = {
        let cx = &*cx;
        judge::drain_outcome(
            cx.ceiling_users,
            0,
            s.on_drain_timeout,
            s.poll_interval,
            |m| cx.error(&[], None, &m),
        )
    };
    let StepResult::Advanced { .. } = outcome else {
        return Ok(outcome);
    };
    // with Move, what may move goes first, one user at a time (a drain the operator could
    // not look at, e.g. while it restarted, reaches its ceiling unpolled); a pass that moved
    // someone is a poll like any other, within a short grace
    if s.drain_strategy == DrainStrategy::Move
        && elapsed(&cx.rec.step_started, cx.now) < s.drain_timeout + CEILING_GRACE
    {
        let poll = move_poll(cx, n)?;
        if let StepResult::Draining { poll: p, .. } = &poll
            && p.sessions_moved + p.users_moved > 0
        {
            return Ok(poll);
        }
    }
    let ip = judge::record_ip(&cx.rec.ip, cx.rec.step)?;
    cx.run(
        On::Director,
        &s.director.director_flush(ip),
        CommandKind::Plain,
    )?;
    Ok(StepResult::advanced(format!(
        "drain ceiling reached with {n} users still mapped: moved them before anything stops (director flush closed their connections; their next logins go to other backends after the director's kick delay)"
    )))
}

/// `who -1` on the backend; a failed one ends the poll as `judge::who_failed` says (a Dovecot
/// that died has no sessions to wait for; a running one that cannot answer is retried).
fn read_who(cx: &mut Cx<'_>) -> Run<Result<ExecOutput, StepResult>> {
    let argv = cx.s.backend.who();
    let who = cx.raw(On::Backend, &argv)?;
    if who.exit_code == 0 {
        return Ok(Ok(who));
    }
    let running = cx.dovecot_running()?;
    Ok(Err(judge::who_failed(
        running,
        cx.error(&argv, Some(who.exit_code), &who.stderr),
    )))
}

/// One poll of a Move drain: look at the backend's sessions, processes and their titles, then
/// move what `drain::plan` says may move. Each move is idempotent (a user already moved is
/// "already there" for the director), so a crash between polls repeats nothing harmful.
fn move_poll(cx: &mut Cx<'_>, mapped: u64) -> Run<StepResult> {
    let s = cx.s;
    let (d, b) = (&s.director, &s.backend);
    let rec = cx.rec;
    let ip = judge::record_ip(&rec.ip, rec.step)?;
    let poll = s.poll_interval;
    let waiting = |message: String| {
        Ok(StepResult::Draining {
            requeue: poll,
            message,
            poll: DrainPoll {
                users_left: mapped,
                ..DrainPoll::default()
            },
        })
    };
    let who = match read_who(cx)? {
        Ok(who) => who,
        Err(done) => return Ok(done),
    };
    // a capture cut at its bound, or an answer we cannot read: move nobody, wait
    let Ok(sessions) = dovecot::parse_who_sessions(&who.stdout) else {
        return waiting(format!(
            "{mapped} users still mapped; who -1 could not be read in full, so nobody is moved"
        ));
    };
    let ps = cx.raw(On::Backend, &b.process_status())?;
    let procs = match (ps.exit_code, dovecot::parse_process_status(&ps.stdout)) {
        (0, Ok(p)) => p,
        // without the process list an LMTP delivery in flight would be invisible
        _ => {
            return waiting(format!(
                "{mapped} users still mapped; doveadm process status failed (exit {}), so nobody is moved",
                ps.exit_code
            ));
        }
    };
    let pids = drain::pids_to_read(&sessions, &procs);
    let mut titles = BTreeMap::new();
    // in chunks: an exec's argv travels in the request URL, which proxies bound
    for chunk in pids.chunks(TITLES_PER_EXEC) {
        // exit 1 when a process ended meanwhile; the others are still printed
        let out = cx.raw(On::Backend, &dovecot::process_titles(chunk))?;
        titles.extend(dovecot::parse_process_titles(&out.stdout));
    }
    let plan = drain::plan(mapped, &sessions, &procs, &titles, s.drain_max_parallel);
    let (mut sessions_moved, mut users_moved, mut skipped, mut busy_again) =
        (0u64, 0u64, 0u64, 0u64);
    match &plan.act {
        DrainAct::Flush => {
            cx.run(On::Director, &d.director_flush(ip), CommandKind::Plain)?;
            users_moved = mapped;
        }
        DrainAct::Move(users) => {
            for user in users {
                match move_user(cx, user, &procs)? {
                    // the director closes every session of the user
                    Moved::Yes => {
                        sessions_moved += sessions.iter().filter(|x| &x.user == user).count() as u64
                    }
                    Moved::BusyAgain => busy_again += 1,
                    Moved::NotHere => skipped += 1,
                }
            }
        }
        DrainAct::Wait => {}
    }
    // users without a session, one by one, while sessions that only their clients or the
    // ceiling end hold the flush (e.g. titles that do not show IDLE): they would otherwise
    // keep logging in here until then
    let tried = match &plan.act {
        DrainAct::Move(users) => users.len(),
        _ => 0,
    };
    let room = s.drain_max_parallel.saturating_sub(tried);
    let listed = plan.move_sessionless && room > 0 && list_due(rec, cx.now);
    let mut unnamed = false;
    if listed {
        let out = cx.raw(On::Director, &d.director_map(ip))?;
        match (out.exit_code, dovecot::parse_director_map(&out.stdout)) {
            (0, Ok(users)) => {
                unnamed = users.is_empty();
                let with_session: std::collections::BTreeSet<&str> =
                    sessions.iter().map(|x| x.user.as_str()).collect();
                let sessionless: Vec<String> = users
                    .into_iter()
                    .filter(|u| !with_session.contains(u.as_str()))
                    .take(room)
                    .collect();
                for user in &sessionless {
                    match move_user(cx, user, &procs)? {
                        Moved::Yes => users_moved += 1,
                        Moved::BusyAgain => busy_again += 1,
                        Moved::NotHere => skipped += 1,
                    }
                }
            }
            _ => unnamed = true,
        }
    }
    let ceiling = after(rec.step_started.0, s.drain_timeout);
    let mut message = format!("{mapped} users still mapped: {}", plan.message);
    if skipped > 0 {
        message.push_str(&format!(
            "; {skipped} not moved (not mapped here, or the move failed)"
        ));
    }
    if busy_again > 0 {
        message.push_str(&format!(
            "; {busy_again} not moved (in a command again when looked at right before the move)"
        ));
    }
    if users_moved > 0 {
        message.push_str(&format!("; {users_moved} users without a session moved"));
    } else if unnamed {
        message.push_str(
            "; users without a session wait too: director map names none (a userdb that cannot list its users)",
        );
    }
    let requeue = if users_moved > 0 {
        drain::MOVE_PACE.min(poll)
    } else {
        drain::requeue(&plan, poll)
    };
    Ok(StepResult::Draining {
        requeue,
        message,
        poll: DrainPoll {
            users_left: mapped,
            sessions: plan.sessions,
            without_session: plan.without_session,
            sessions_moved,
            users_moved,
            unknown: plan.unknown,
            listed,
            predicted_end: Some(drain::predicted_end(
                &plan,
                s.drain_max_parallel,
                poll,
                cx.now,
                ceiling,
            )),
        },
    })
}

/// What became of one user a Move drain meant to move.
enum Moved {
    Yes,
    /// In a command again when looked at right before the move.
    BusyAgain,
    /// Not mapped here to a host its hash now names (a direct login), or the move failed.
    NotHere,
}

/// Moves one user the poll found movable: looked at once more right before its move (an IDLE
/// client woken by new mail may be mid-FETCH, APPEND or EXPUNGE by now), then only if the
/// director maps it here and hashes it elsewhere; a session the director does not map here
/// (a direct login) is not the director's to move.
fn move_user(cx: &mut Cx<'_>, user: &str, procs: &[dovecot::Process]) -> Run<Moved> {
    if !fresh_look(cx, user, procs)? {
        return Ok(Moved::BusyAgain);
    }
    let d = &cx.s.director;
    let st = cx.raw(On::Director, &d.director_user_status(user))?;
    let placement = (st.exit_code == 0)
        .then(|| dovecot::parse_user_placement(&st.stdout).ok())
        .flatten();
    let here = &cx.rec.ip;
    let to = match placement {
        Some((Some(cur), Some(hashed))) if &cur == here && &hashed != here => {
            dovecot::validate_ip(&hashed).ok()
        }
        _ => None,
    };
    let Some(to) = to else {
        return Ok(Moved::NotHere);
    };
    let mv = cx.raw(On::Director, &cx.s.director.director_move(user, to))?;
    // a failed move (e.g. the target left the ring meanwhile): the next poll asks again
    Ok(if mv.exit_code == 0 {
        Moved::Yes
    } else {
        Moved::NotHere
    })
}

/// Whether the users mapped here may be listed again (`director map` iterates the userdb).
fn list_due(rec: &BackendStatus, now: k8s_openapi::jiff::Timestamp) -> bool {
    rec.drain
        .as_ref()
        .and_then(|d| d.users_listed.as_ref())
        .is_none_or(|at| elapsed(at, now) >= drain::LIST_EVERY)
}

/// Whether `user` may still move, read right before its move: `who -1 <user>` and the titles of
/// its sessions. A read that fails or cannot be parsed in full moves nobody.
fn fresh_look(cx: &mut Cx<'_>, user: &str, procs: &[dovecot::Process]) -> Run<bool> {
    let who = cx.raw(On::Backend, &cx.s.backend.who_user(user))?;
    if who.exit_code != 0 {
        return Ok(false);
    }
    let Ok(sessions) = dovecot::parse_who_sessions(&who.stdout) else {
        return Ok(false);
    };
    let pids: Vec<u32> = sessions.iter().map(|s| s.pid).collect();
    let titles = if pids.is_empty() {
        BTreeMap::new()
    } else {
        let out = cx.raw(On::Backend, &dovecot::process_titles(&pids))?;
        dovecot::parse_process_titles(&out.stdout)
    };
    Ok(drain::still_movable(user, &sessions, procs, &titles))
}

/// Nothing stopped yet: the recorded vhost count goes back.
fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::Restore
}

/// While users are mapped: run a poll (Move looks at every poll; Wait only once the director
/// maps nobody), wait for the next one, or run at the ceiling with the users left.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    let (s, rec) = (g.s, g.rec);
    let run = |ceiling_users| {
        Some(Ok(Decision::Run {
            pod: rec.pod.clone(),
            step: rec.step,
            ceiling_users,
        }))
    };
    let users = g
        .ring
        .iter()
        .find(|h| h.ip == rec.ip)
        .map_or(0, |h| h.users);
    let waited = elapsed(&rec.step_started, g.now);
    if waited >= s.drain_timeout {
        // also with 0 users mapped: sessions on the backend must not hold it forever
        run(Some(users))
    } else if users == 0 || s.drain_strategy == DrainStrategy::Move {
        // Move looks at the backend's sessions on every poll and moves what it may
        run(None)
    } else {
        let left = s.drain_timeout - waited;
        Some(Err(Held::step(
            s.poll_interval.min(left),
            format!("{}: {users} users still mapped to {}", rec.pod, rec.ip),
        )))
    }
}

/// Drained from the start: the director sends it no new user.
const RING: RingState = RingState::DRAINED;

/// The pod its commands run in, for the plan.
const TARGET: &str = "director";

/// What the step does besides its commands, for the plan.
fn note(s: &crate::settings::Settings, pod: &str, ip: &str) -> Option<String> {
    Some(format!(
        "poll every {:?} until the director maps no users to {ip} and who shows no sessions on {pod} (who runs on the backend); with strategy Move, users whose sessions only sit in IDLE are moved (director move) a batch at a time; at most {:?}, then {:?}",
        s.poll_interval, s.drain_timeout, s.on_drain_timeout
    ))
}

/// The step as the machine sees it.
pub const STEP: StepSpec = StepSpec {
    run,
    gate,
    reads: Reads::NONE,
    ring: |_| RING,
    undo,
    target: TARGET,
    note,
};
