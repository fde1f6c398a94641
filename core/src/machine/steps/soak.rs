//! Soak: the restored backend must get users within the soak's limit and its pod stay Ready;
//! else it is drained again and the backend fails.

use crate::api::{BackendStatus, Step};
use crate::dovecot::{self, CommandKind};
use crate::time::elapsed;

use super::super::judge::{SoakMove, SoakSeen};
use super::credentials::imap_inputs;
use super::{Cleanup, Cx, Intent, On, Reads, RingState, Run, StepResult, StepSpec, judge};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let s = cx.s;
    let rec = cx.rec;
    let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
    // a failure written by the last pass: drain again (every command idempotent), then fail
    if let Some(why) = &rec.failing {
        let (drain, failed) = judge::soak_failed(s, ip, why);
        for argv in drain {
            cx.run(On::Director, &argv, CommandKind::Plain)?;
        }
        return Err(failed.into());
    }
    // the pod put in must still be the one verified, also with no soak to watch (found by the
    // model: one recreated elsewhere right after RingRestore ended Done at an IP no pod has)
    let pod = cx.bound_pod()?;
    let Some(limit) = s.soak else {
        return Ok(StepResult::advanced(None));
    };
    let d = &s.director;
    let status = d.director_status();
    let (_, out) = cx.run(On::Director, &status, CommandKind::Plain)?;
    let ring = dovecot::parse_director_status(&out.stdout)
        .map_err(|e| StepResult::Failed(cx.error(&status, Some(0), &e.to_string())))?;
    let mut user_on = read_user(cx)?;
    let sessions = read_sessions(cx)?;
    let mut login: Option<Result<(), String>> = None;
    let waited = elapsed(&rec.step_started, cx.now);
    let mv = loop {
        let seen = SoakSeen {
            pod: pod.as_ref(),
            ip,
            ring: &ring,
            user: &s.user,
            user_on: user_on.as_deref(),
            login: login
                .as_ref()
                .map(|l| l.as_ref().map(|_| ()).map_err(String::as_str)),
            // settings give a director login only with an IMAP probe's credentials
            can_login: s.director_login.is_some(),
            sessions,
            waited,
        };
        match judge::soak(rec, &seen, limit, s.poll_interval) {
            SoakMove::TryLogin => {
                login = Some(director_login(cx, ip)?);
                user_on = read_user(cx)?;
            }
            other => break other,
        }
    };
    match mv {
        SoakMove::Pass(m) => Ok(StepResult::advanced(m)),
        SoakMove::Wait(requeue, message) => Ok(StepResult::Waiting { requeue, message }),
        // the intent first: the next pass drains and fails it
        SoakMove::Fail(why) => Ok(StepResult::Intend(Intent::Fail(why))),
        SoakMove::TryLogin => unreachable!("judged again after the login"),
    }
}

/// The login sessions the backend serves now: logins that landed and were served there.
fn read_sessions(cx: &mut Cx<'_>) -> Run<usize> {
    let who = cx.s.backend.who();
    let (_, out) = cx.run(On::Backend, &who, CommandKind::Plain)?;
    dovecot::parse_who_connections(&out.stdout)
        .map_err(|e| StepResult::Failed(cx.error(&who, Some(0), &e.to_string())).into())
}

/// Where the director maps the verify user now.
fn read_user(cx: &mut Cx<'_>) -> Run<Option<String>> {
    let lookup = cx.s.director.director_user_status(&cx.s.user);
    let (_, out) = cx.run(On::Director, &lookup, CommandKind::Plain)?;
    Ok(dovecot::parse_user_current(&out.stdout)
        .map_err(|e| StepResult::Failed(cx.error(&lookup, Some(0), &e.to_string())))?)
}

/// The soak's login through a director: the verify user is moved to the restored host
/// (`director move`), then logs in and out through the director this reconcile chose (at its
/// pod IP). `Ok(Err)`: why the login failed (the soak judges it).
fn director_login(cx: &mut Cx<'_>, ip: &str) -> Run<Result<(), String>> {
    let s = cx.s;
    let (Some(_), Some(l)) = (&s.imap_probe, &s.director_login) else {
        return Ok(Err("no IMAP probe credentials".into()));
    };
    let director = cx
        .obs
        .directors
        .iter()
        .find(|(n, _)| Some(n) == cx.obs.director.as_ref())
        .and_then(|(_, ip)| ip.clone());
    let Some(director) = director else {
        return Ok(Err("no Ready director with a pod IP".into()));
    };
    let addr = judge::record_ip(ip, Step::Soak)?;
    // a move the director refuses is a soak that did not land, judged as such (the backend is
    // then drained again), not a failed command that would leave it in the ring
    let out = cx.raw(On::Director, &s.director.director_move(&s.user, addr))?;
    if out.exit_code != 0 {
        return Ok(Err(format!(
            "director move exited {}: {}",
            out.exit_code,
            crate::text::bounded(out.stderr.trim(), 200)
        )));
    }
    let (target, mut input) = match imap_inputs(cx, &l.tls, &director, l.port, String::new(), None)?
    {
        Ok(x) => x,
        Err((what, _)) => return Ok(Err(what)),
    };
    input.login_only = true;
    Ok(cx
        .imap_probe(target, input)?
        .map_err(|f| format!("{director}:{} {}: {}", l.port, f.command, f.reply)))
}

/// Back in the ring and verified; a failed soak drained it again (failed: left out).
fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::Nothing
}

/// Back in the ring; a failed soak drained it again, and it stays out.
fn ring(rec: &BackendStatus) -> RingState {
    if rec.failed {
        RingState::DOWN
    } else {
        RingState::SERVING
    }
}

/// The pod its commands run in, for the plan.
const TARGET: &str = "director";

/// What the step does besides its commands, for the plan.
fn note(s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    Some(match s.soak {
        Some(limit) => format!(
            "until logins land on it (sessions it serves, or a login through a director), at most {}, pod Ready throughout; else drain it again and halt",
            crate::time::human(limit)
        ),
        None => "off (spec.verify.soak.enabled: false)".into(),
    })
}

/// The step as the machine sees it.
pub const STEP: StepSpec = StepSpec {
    run,
    gate: super::no_gate,
    reads: Reads::NONE,
    ring,
    undo,
    target: TARGET,
    note,
};
