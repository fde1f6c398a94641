//! How each step's outputs are judged: the pure half of every step the engine runs.
//!
//! The engine runs an argv and hands its output here; what the output means (done, wait, go
//! back, failed, retry) is decided only in this file.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::decision::{Command, On, StepResult};
use super::observed::PodView;
use crate::api::{BackendStatus, DrainTimeoutAction, MailLayout, Step, StepError};
use crate::dovecot::{self, CommandKind, RingHost, Verdict};
use crate::reason::StallReason;
use crate::reset_guard;
use crate::settings::Settings;
use crate::text::{STDERR_EXCERPT, bounded, was_cut};
use crate::time::{elapsed, human};

/// A step's failure as status records it: the command, its exit code, a bounded stderr excerpt.
pub fn step_error(step: Step, argv: &[String], exit_code: Option<i32>, stderr: &str) -> StepError {
    StepError {
        step,
        argv: argv.to_vec(),
        exit_code,
        stderr: bounded(stderr.trim(), STDERR_EXCERPT),
        reason: None,
    }
}

/// The record's IP as an address; a record with a bad IP fails its step (nothing to run against).
pub fn record_ip(ip: &str, step: Step) -> Result<IpAddr, StepResult> {
    dovecot::validate_ip(ip)
        .map_err(|e| StepResult::Failed(step_error(step, &[], None, &e.to_string())))
}

/// WaitSessions' outcome once the plan says to run it.
pub fn drain_outcome(
    ceiling_users: Option<u64>,
    live_sessions: usize,
    on_timeout: DrainTimeoutAction,
    poll: Duration,
    step_error: impl FnOnce(String) -> StepError,
) -> StepResult {
    // the ceiling holds whatever is counted: director mappings, or (with none mapped) live
    // sessions on the backend, e.g. clients that bypass the director
    let left = match ceiling_users {
        None | Some(0) if live_sessions == 0 => {
            return StepResult::advanced("no users left".to_string());
        }
        None => {
            return StepResult::Waiting {
                requeue: poll,
                message: format!(
                    "director shows no users, but {live_sessions} sessions still run on the backend"
                ),
            };
        }
        Some(0) => {
            format!("{live_sessions} sessions still on the backend (none mapped in the director)")
        }
        Some(n) => format!("{n} users still mapped"),
    };
    match on_timeout {
        DrainTimeoutAction::Proceed => StepResult::advanced(format!(
            "drain ceiling reached with {left}; the stop ends them (clients reconnect through a director)"
        )),
        DrainTimeoutAction::Fail => StepResult::Failed(step_error(format!(
            "drain ceiling reached with {left} (spec.drain.onTimeout=Fail)"
        ))),
    }
}

/// Replace's next move for the pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceMove {
    /// Still the old pod: delete it, by this UID (a precondition: a stale cache never deletes
    /// the pod that replaced it).
    Delete(String),
    /// Still the old pod, on a node under maintenance: release it (by this UID) to the node
    /// drain's eviction first.
    Release(String),
    /// Terminating, missing, or not Ready yet.
    Wait(String),
    /// Recreated at the target revision and Ready: its IP and UID (the pod the next steps act
    /// on).
    Done {
        ip: String,
        uid: Option<String>,
    },
    TimedOut(String),
}

/// `stopped_uid` is the pod whose Dovecot StopDovecot stopped: nothing will start it again, so it
/// is deleted even when it already runs the target revision (e.g. it was recreated behind our back).
pub fn replace_move(
    pod: Option<&PodView>,
    target: &str,
    stopped_uid: Option<&str>,
    waited: Duration,
    timeout: Duration,
) -> ReplaceMove {
    match pod {
        Some(PodView {
            terminating: false,
            uid: Some(uid),
            ..
        }) if Some(uid.as_str()) == stopped_uid => ReplaceMove::Delete(uid.clone()),
        Some(p) if p.revision.as_deref() == Some(target) && p.ready && !p.terminating => {
            match p
                .ip
                .as_deref()
                .filter(|ip| dovecot::validate_ip(ip).is_ok())
            {
                Some(ip) => ReplaceMove::Done {
                    ip: ip.to_string(),
                    uid: p.uid.clone(),
                },
                None => ReplaceMove::Wait(format!("{}: Ready but without an IP", p.name)),
            }
        }
        Some(PodView {
            terminating: false,
            uid: Some(uid),
            revision,
            ..
        }) if revision.as_deref() != Some(target) => ReplaceMove::Delete(uid.clone()),
        _ if waited >= timeout => ReplaceMove::TimedOut(format!(
            "pod not Ready at revision {target} within {timeout:?}"
        )),
        Some(p) if p.terminating => ReplaceMove::Wait(format!("{}: terminating", p.name)),
        Some(p) => ReplaceMove::Wait(format!(
            "{}: waiting for Ready at revision {target}",
            p.name
        )),
        None => ReplaceMove::Wait("waiting for the StatefulSet to recreate the pod".into()),
    }
}

/// The old pod on a node under maintenance is not deleted at once: a node drain (`kubectl drain`)
/// evicts by name, and after a refused eviction it reads the pod again by name, so a pod deleted
/// by someone else and recreated on another node is the next one it evicts, for ever (refused by
/// the ring's budget; seen on the two-node real-node test). So Replace first releases the pod (a
/// label the budget does not cover): the drain's next eviction deletes it, and the drain ends.
/// Only when no eviction came within `maintenance::EVICTION_GRACE` (cordoned, not drained) does
/// Replace delete the pod itself.
/// The grace runs from the release written on the pod (not from the step's start: a Replace
/// resumed late by a new leader once released and deleted in the same tenth of a second).
pub fn evict_first(mv: ReplaceMove, pod: Option<&PodView>, now: Timestamp) -> ReplaceMove {
    let ReplaceMove::Delete(uid) = mv else {
        return mv;
    };
    let Some(p) = pod.filter(|p| p.maintenance.is_some()) else {
        return ReplaceMove::Delete(uid);
    };
    match p.released {
        None => ReplaceMove::Release(uid),
        Some(at) if elapsed(&Time(at), now) < crate::maintenance::EVICTION_GRACE => {
            ReplaceMove::Wait(format!(
                "{}: stopped and released to the node's drain; waiting up to {:?} for its eviction",
                p.name,
                crate::maintenance::EVICTION_GRACE
            ))
        }
        Some(_) => ReplaceMove::Delete(uid),
    }
}

/// What Replace waits beyond `timeouts.replace`: the old pod's termination, which the kubelet
/// may stretch to its grace period (its `deletionGracePeriodSeconds` while it terminates, else
/// the pod template's `terminationGracePeriodSeconds`, the longer). A backend whose Dovecot
/// takes its whole grace to stop is not a failed Replace (seen on the real node: a 25 s
/// timeout against the backends' 30 s grace failed a rollout meant to pass).
pub fn replace_grace(template: Option<Duration>, pod: Option<&PodView>) -> Duration {
    let deleting = pod.filter(|p| p.terminating).and_then(|p| p.deletion_grace);
    template
        .into_iter()
        .chain(deleting)
        .max()
        .unwrap_or_default()
}

/// A relocation's Replace is done only once the new pod runs off every node under maintenance:
/// one the scheduler put back there (it tolerates the taint, or a volume pins it to the node)
/// is waited for, and at the timeout the relocation fails saying so (left out, like any failed
/// Replace), instead of being relocated again and again.
pub fn relocated_off(
    mv: ReplaceMove,
    pod: Option<&PodView>,
    relocating: bool,
    waited: Duration,
    timeout: Duration,
) -> ReplaceMove {
    let Some(why) = pod.and_then(|p| p.maintenance.as_deref()) else {
        return mv;
    };
    if !relocating || !matches!(mv, ReplaceMove::Done { .. } | ReplaceMove::Wait(_)) {
        return mv;
    }
    let name = pod.map(|p| p.name.as_str()).unwrap_or_default();
    let m = format!(
        "{name} was recreated on a node under maintenance ({why}); it must run on another node: does it tolerate the maintenance taint, or is a volume of it bound to that node (use a cache volume that is not node-local, or delete its claim)?"
    );
    if waited >= timeout {
        ReplaceMove::TimedOut(m)
    } else {
        ReplaceMove::Wait(m)
    }
}

/// WaitSessions once the director shows no users (or at the ceiling with none mapped): `who -1`
/// on the backend must be empty too.
pub fn sessions(
    who_stdout: &str,
    ceiling_users: Option<u64>,
    on_timeout: DrainTimeoutAction,
    poll: Duration,
    error: impl Fn(String) -> StepError,
) -> StepResult {
    match dovecot::parse_who_connections(who_stdout) {
        Ok(live) => drain_outcome(ceiling_users, live, on_timeout, poll, error),
        // more sessions than the capture holds: count those begun, and wait (or end at the ceiling)
        Err(_) if was_cut(who_stdout) => drain_outcome(
            ceiling_users,
            dovecot::count_cut_who(who_stdout),
            on_timeout,
            poll,
            error,
        ),
        Err(e) => StepResult::Failed(error(e.to_string())),
    }
}

/// `who` failed on the backend. A Dovecot that died on its own has no sessions to wait for (the
/// next steps take it out); a running one that cannot answer is retried.
pub fn who_failed(dovecot_running: bool, error: StepError) -> StepResult {
    if dovecot_running {
        StepResult::Transient { error }
    } else {
        StepResult::advanced(
            "Dovecot is not running on the backend; nothing to wait for".to_string(),
        )
    }
}

/// StopLmtp: `service stop` on a stopped Dovecot is done too. `layout` is the verify user's
/// mail layout as Dovecot said just before (None: it could not say; Reset asks doveconf).
pub fn lmtp_stopped(v: Verdict, layout: Option<MailLayout>) -> StepResult {
    StepResult::Advanced {
        message: (v == Verdict::AlreadyDone).then(|| "Dovecot was not running".to_string()),
        new_ip: None,
        pod_uid: None,
        layout: layout.map(Box::new),
    }
}

/// The verify user's layout from `doveadm -f json user`; a failed lookup (Dovecot dead, user
/// unknown) is no layout, not a failure: Reset then reads doveconf's templates.
pub fn layout_read(user: &str, exit_code: i32, stdout: &str) -> Option<MailLayout> {
    if exit_code != 0 {
        return None;
    }
    dovecot::parse_user_lookup(user, stdout)
        .ok()
        .filter(|l| l.home.is_some() || l.mail.is_some())
        .map(|l| MailLayout {
            home: l.home.map(|h| bounded(&h, STDERR_EXCERPT)),
            mail: l.mail.map(|m| bounded(&m, STDERR_EXCERPT)),
            ..l
        })
}

fn refusal(argv: &[String], message: &str) -> StepResult {
    StepResult::Failed(StepError {
        reason: Some(StallReason::ResetWouldDeleteMailData.as_str().to_string()),
        ..step_error(Step::Reset, argv, None, message)
    })
}

/// Reset's settings check, before anything is deleted.
pub fn reset_refused(s: &Settings, layout: &MailLayout) -> Option<StepResult> {
    reset_guard::check(layout, &s.reset).map(|r| refusal(&r.argv, &r.message(&layout.user)))
}

/// Reset's content check of one command (`probe` is its read-only twin): Err stops the step
/// before anything is deleted.
pub fn reset_probed(
    argv: &[String],
    probe: &[String],
    exit_code: i32,
    stdout: &str,
    stderr: &str,
) -> Result<(), StepResult> {
    match reset_guard::probed(exit_code, stdout, stderr) {
        reset_guard::Probed::Clean => Ok(()),
        reset_guard::Probed::Found(path) => Err(refusal(
            argv,
            &format!(
                "it would delete {}, which is mail or mail metadata (Maildir, uidlist, keywords, subscriptions, sieve or duplicate database); nothing was deleted",
                bounded(&path, 300)
            ),
        )),
        reset_guard::Probed::Unreadable => Err(StepResult::Failed(step_error(
            Step::Reset,
            probe,
            Some(exit_code),
            &format!("cannot tell what the reset would delete, so nothing was: {stderr}"),
        ))),
    }
}

/// How soon StopDovecot looks at master.pid again after `doveadm stop`, in the first
/// `STOP_POLL_FOR` of the step (doveadm stop returns after ~3 s even when the master still
/// runs); later once a second. Each look is a requeue, never a sleep inside a reconcile.
pub const STOP_POLL: Duration = Duration::from_millis(200);
pub const STOP_POLL_FOR: Duration = Duration::from_secs(15);

/// StopDovecot while the master still runs: look again soon, or fail once the step's timeout
/// has passed.
pub fn stop_wait(
    pod: &str,
    now: Timestamp,
    step_started: &Time,
    stop_timeout: Duration,
    stop_argv: &[String],
) -> StepResult {
    let waited = elapsed(step_started, now);
    if waited >= stop_timeout {
        return StepResult::Failed(step_error(
            Step::StopDovecot,
            stop_argv,
            None,
            &format!("Dovecot master still running {stop_timeout:?} after doveadm stop"),
        ));
    }
    StepResult::Waiting {
        requeue: if waited < STOP_POLL_FOR {
            STOP_POLL
        } else {
            Duration::from_secs(1)
        },
        message: format!("{pod}: waiting for the Dovecot master to exit"),
    }
}

/// StopDovecot done: remember which pod it stopped, so that Replace deletes exactly that one.
pub fn stopped(pod: Option<&PodView>) -> StepResult {
    StepResult::Advanced {
        message: None,
        new_ip: None,
        pod_uid: pod.and_then(|p| p.uid.clone()),
        layout: None,
    }
}

/// `spec.baseDir` against what `doveconf -h base_dir` printed (trailing slashes aside).
pub fn base_dir(setting: &str, doveconf_stdout: &str) -> Result<(), String> {
    let norm = |p: &str| p.trim().trim_end_matches('/').to_string();
    let dovecot = norm(doveconf_stdout);
    if norm(setting) == dovecot {
        return Ok(());
    }
    Err(format!(
        "spec.baseDir is {setting:?} but Dovecot's base_dir is {dovecot:?}: the operator would look for master.pid in the wrong place and could not tell a running Dovecot from a stopped one; nothing was stopped. Set spec.baseDir: {dovecot}"
    ))
}

/// The pod Replace verified (`want`) no longer runs under the name: back to Replace, which
/// takes the pod that runs now through Verify (or replaces it at the target revision).
pub fn unbound(want: &str, now: Option<&PodView>) -> StepResult {
    let what = match now {
        Some(p) => format!(
            "another pod runs under the name (UID {}, revision {})",
            p.uid.as_deref().unwrap_or("unknown"),
            p.revision.as_deref().unwrap_or("unknown")
        ),
        None => "no pod runs under the name".into(),
    };
    StepResult::Rewind {
        to: Step::Replace,
        message: format!(
            "the pod Replace found Ready at the target (UID {want}) is gone and {what}; it is verified again before it serves",
        ),
    }
}

/// Reset found Dovecot running again (restarted behind our back): stop it before wiping anything.
pub fn reset_found_running() -> StepResult {
    StepResult::Rewind {
        to: Step::StopLmtp,
        message: "Dovecot is running in the pod again; stopping it before the reset".into(),
    }
}

/// Replace, before deleting: the StatefulSet's revision read fresh must be the one the cached
/// view decided from. After an API outage a watch can lag: deleting then would kill the pod that
/// already replaced this one, again and again.
pub fn target_still(cached: &str, fresh: Option<&str>, pod: &str) -> Option<StepResult> {
    cache_lags(cached, fresh).map(|m| StepResult::Waiting {
        requeue: REPLACE_POLL,
        message: format!("{pod}: {m} before deleting anything"),
    })
}

/// Why the cached StatefulSet cannot be acted on: its revision is not the one read fresh.
fn cache_lags(cached: &str, fresh: Option<&str>) -> Option<String> {
    (fresh != Some(cached)).then(|| {
        format!(
            "the cached StatefulSet says revision {cached}, the API server says {}; waiting for the cache",
            fresh.unwrap_or("none")
        )
    })
}

/// Begin, before the record is written: the candidate read fresh must still be outdated
/// against the StatefulSet's revision read fresh, and that must be the cached one; a relocation
/// stands while the pod read fresh is still on a node under maintenance.
pub fn begin_still(
    rec: &BackendStatus,
    cached_target: &str,
    fresh_target: Option<&str>,
    pod: Option<&PodView>,
) -> Result<(), String> {
    // a pod back at a new IP (begun at Verify) is at the target already: its IP is the check
    if rec.step == Step::Verify {
        return rejoin_still(rec, pod);
    }
    if let Some(m) = cache_lags(cached_target, fresh_target) {
        return Err(m);
    }
    match pod {
        None => Err("the pod is gone; waiting for the cache".into()),
        // a relocation stands while the pod's node is still under maintenance
        Some(p) if rec.relocation.is_some() && p.maintenance.is_some() => Ok(()),
        Some(p) if rec.relocation.is_some() && p.revision.as_deref() == Some(cached_target) => {
            Err(format!(
                "{}'s node is no longer under maintenance (as the API server has it); nothing to relocate",
                p.name
            ))
        }
        Some(p) if p.revision.as_deref() == Some(cached_target) => Err(format!(
            "{} already runs revision {cached_target}; the pod cache lags, waiting for it",
            p.name
        )),
        Some(_) => Ok(()),
    }
}

/// A rejoin (a pod back at a new IP, begun at Verify) stands only if the API server shows the
/// pod at that IP too: a cache that lags must not start one.
fn rejoin_still(rec: &BackendStatus, pod: Option<&PodView>) -> Result<(), String> {
    match pod {
        Some(p) if p.ip.is_some() && p.ip == rec.new_ip => Ok(()),
        Some(p) => Err(format!(
            "{} is at {} now, not {}; the pod cache lags, waiting for it",
            p.name,
            p.ip.as_deref().unwrap_or("no IP"),
            rec.new_ip.as_deref().unwrap_or("?")
        )),
        None => Err("the pod is gone; waiting for the cache".into()),
    }
}

/// Replace: how long to wait before looking at the pod again.
pub const REPLACE_POLL: Duration = Duration::from_secs(2);

/// Replace's result for a move that needs no API call (the engine deletes on `Delete`).
pub fn replace_result(mv: ReplaceMove, pod: &str, target: &str) -> StepResult {
    match mv {
        ReplaceMove::Delete(_) => StepResult::Waiting {
            requeue: REPLACE_POLL,
            message: format!("{pod}: deleted; waiting for revision {target}"),
        },
        ReplaceMove::Release(_) => StepResult::Waiting {
            requeue: REPLACE_POLL,
            message: format!("{pod}: released to the node's drain; waiting for its eviction"),
        },
        ReplaceMove::Wait(message) => StepResult::Waiting {
            requeue: REPLACE_POLL,
            message,
        },
        ReplaceMove::Done { ip, uid } => StepResult::Advanced {
            message: None,
            new_ip: Some(ip),
            pod_uid: uid,
            layout: None,
        },
        ReplaceMove::TimedOut(m) => StepResult::Failed(step_error(Step::Replace, &[], None, &m)),
    }
}

/// Verify, first command: the verify mailbox must be listed for the user.
pub fn verify_listed(user: &str, mailbox: &str, stdout: &str) -> Result<(), String> {
    let boxes = dovecot::parse_mailbox_list(stdout).map_err(|e| e.to_string())?;
    if boxes.iter().any(|x| x == mailbox) {
        Ok(())
    } else {
        Err(format!(
            "mailbox {mailbox:?} not listed for {user} (got {boxes:?})"
        ))
    }
}

/// Verify, second command: the mailbox's message count.
pub fn verify_count(mailbox: &str, stdout: &str) -> Result<u64, String> {
    let counts = dovecot::parse_mailbox_messages(stdout).map_err(|e| e.to_string())?;
    counts
        .iter()
        .find(|(m, _)| m == mailbox)
        .map(|(_, n)| *n)
        .ok_or_else(|| "no status returned for the mailbox".to_string())
}

/// Verify done: every message was fetched (and a probe delivered over LMTP and removed).
pub fn verified(user: &str, mailbox: &str, messages: u64, probes: &[String]) -> StepResult {
    let probes: String = probes.iter().map(|p| format!("; {p}")).collect();
    StepResult::advanced(format!(
        "{user}: {mailbox} has {messages} messages, all fetched{probes}"
    ))
}

/// A refused or unreachable protocol probe as Verify's error: the argv names the protocol,
/// the address and the command, the reply stands where stderr would. Unreachable is retried.
pub fn probe_failed(
    protocol: &str,
    addr: &str,
    command: &str,
    reply: &str,
    transient: bool,
) -> StepResult {
    let mut error = step_error(
        Step::Verify,
        &[protocol.to_string(), addr.to_string(), command.to_string()],
        None,
        reply,
    );
    if transient {
        return StepResult::Transient { error };
    }
    error.reason = Some(StallReason::ProbeFailed.as_str().to_string());
    StepResult::Failed(error)
}

/// What the soak sees and decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoakMove {
    Pass(String),
    Wait(Duration, String),
    /// Drain it again and fail the backend.
    Fail(String),
    /// Quiet so far: move the verify user to it and log in through a director, then judge
    /// again with the login's result.
    TryLogin,
}

/// What the soak has seen of the restored host.
#[derive(Debug, Clone, Copy)]
pub struct SoakSeen<'a> {
    pub pod: Option<&'a PodView>,
    pub ip: &'a str,
    pub ring: &'a [RingHost],
    pub user: &'a str,
    /// Where `director status <user>` says the verify user is mapped now.
    pub user_on: Option<&'a str>,
    /// None: no login through a director tried in this poll; Some(Err): why it failed.
    pub login: Option<Result<(), &'a str>>,
    /// Whether a login through a director is possible (an IMAP probe with credentials).
    pub can_login: bool,
    /// Login sessions the backend itself serves now (`doveadm who -1`).
    pub sessions: usize,
    pub waited: Duration,
}

/// The soak after RingRestore: logins must land on the restored backend within `limit`
/// (sessions the backend itself serves, or a login through a director that landed there), and
/// its pod must stay Ready all the while. Director mappings alone prove nothing: the director
/// maps a user before it proxies, so a backend on which every login fails gets mappings too.
pub fn soak(rec: &BackendStatus, seen: &SoakSeen, limit: Duration, poll: Duration) -> SoakMove {
    let ip = seen.ip;
    if !rec.restores_up() || rec.original_vhosts == 0 {
        return SoakMove::Pass(format!(
            "{ip} was restored {} as before the rollout: no traffic to wait for",
            if rec.restores_up() {
                "at 0 vhosts"
            } else {
                "down"
            }
        ));
    }
    if !seen.pod.is_some_and(|p| p.ready && !p.terminating) {
        return SoakMove::Fail(format!("{}: pod not Ready during the soak", rec.pod));
    }
    let Some(host) = seen.ring.iter().find(|h| h.ip == ip) else {
        return SoakMove::Fail(format!("{ip} is not in the director ring"));
    };
    if !host.up || host.vhosts == 0 {
        // someone took it out meanwhile: theirs to decide, not the soak's to undo or judge
        return SoakMove::Pass(format!(
            "{ip} was set to {} vhosts, {} by someone else during the soak; left so",
            host.vhosts,
            if host.up { "up" } else { "down" }
        ));
    }
    let after = human(seen.waited);
    if seen.sessions > 0 {
        return SoakMove::Pass(format!(
            "{ip} serves {} login sessions after {after}",
            seen.sessions
        ));
    }
    if seen.user_on == Some(ip) && seen.login == Some(Ok(())) {
        return SoakMove::Pass(format!(
            "a login as {} through the director landed on {ip} after {after}",
            seen.user
        ));
    }
    if seen.can_login && seen.login.is_none() {
        return SoakMove::TryLogin;
    }
    let login = match seen.login {
        Some(Err(e)) => format!("; the login as {} through the director: {e}", seen.user),
        Some(Ok(())) => format!(
            "; a login as {} through the director went to {}",
            seen.user,
            seen.user_on.unwrap_or("no backend")
        ),
        None => String::new(),
    };
    // the verify user's own mapping is not traffic: the soak's `director move` makes one
    let mapped = host
        .users
        .saturating_sub(u64::from(seen.user_on == Some(ip)));
    if seen.waited >= limit {
        return SoakMove::Fail(format!(
            "no user logged in on {ip} within {} (the director maps {mapped} users to it; the backend serves no session){login}",
            human(limit)
        ));
    }
    SoakMove::Wait(
        poll.min(limit - seen.waited),
        format!(
            "{}: soaking, waiting for a login to land on {ip} ({} left; the director maps {mapped} users to it){login}",
            rec.pod,
            human(limit - seen.waited)
        ),
    )
}

/// A failed soak drains the host again (vhost 0 so no user is sent to it, down, and flush
/// to move any that were) and fails the backend: it is never put back by the operator.
pub fn soak_failed(s: &Settings, ip: &str, why: &str) -> (Vec<Vec<String>>, StepResult) {
    let Ok(addr) = dovecot::validate_ip(ip) else {
        return (
            Vec::new(),
            StepResult::Failed(step_error(Step::Soak, &[], None, why)),
        );
    };
    let cmds = vec![
        s.director.director_update(addr, 0),
        s.director.director_down(addr),
        s.director.director_flush(addr),
    ];
    let mut error = step_error(Step::Soak, &[], None, &format!("{why}; drained again"));
    error.reason = Some(StallReason::SoakFailed.as_str().to_string());
    (cmds, StepResult::Failed(error))
}

/// RingRestore's addresses: the recorded (old) IP and the pod's IP now. They differ when
/// Replace gave the pod a new IP: then the new host is added and the old one removed first.
pub fn restore_ips(
    rec: &BackendStatus,
    pod: Option<&PodView>,
) -> Result<(IpAddr, IpAddr, String), StepResult> {
    let old = record_ip(&rec.ip, rec.step)?;
    let now_ip = pod
        .and_then(|p| p.ip.clone())
        .unwrap_or_else(|| rec.ip.clone());
    let new = record_ip(&now_ip, rec.step)?;
    Ok((old, new, now_ip))
}

/// RingRestore's commands, in order: with a new IP, add it and remove the old host first
/// (unless the old entry is another backend's, `old_reused`: that pod is at it, or the ring's
/// pass counts it for that pod); then
/// the recorded vhost count, and `up` only if the backend was up before the rollout. A host a
/// human took down stays down, never taking users between two commands: `add` makes a new
/// host up, so it is added at 0 vhosts and put down before it gets its count (found by the
/// model: a restore cut short after its `add` left the host serving, against the human's
/// `down`, and the restore run again then left no host serving).
pub fn ring_restore_commands(
    s: &Settings,
    rec: &BackendStatus,
    old: IpAddr,
    new: IpAddr,
    old_reused: bool,
) -> Vec<Command> {
    let d = &s.director;
    let n = rec.original_vhosts;
    let on_director = |argv, kind| Command {
        on: On::Director,
        argv,
        kind,
    };
    let mut cmds = Vec::new();
    let up = rec.restores_up();
    if new != old {
        let at = if up { n } else { 0 };
        cmds.push(on_director(d.director_add(new, at), CommandKind::Plain));
        // the old entry is another backend's now: it stays, for that backend
        if !old_reused {
            cmds.push(on_director(
                d.director_remove(old),
                CommandKind::DirectorRemove,
            ));
        }
    }
    if up {
        cmds.push(on_director(d.director_update(new, n), CommandKind::Plain));
        cmds.push(on_director(d.director_up(new), CommandKind::Plain));
    } else {
        cmds.push(on_director(d.director_down(new), CommandKind::Plain));
        cmds.push(on_director(d.director_update(new, n), CommandKind::Plain));
    }
    cmds
}

/// RingRestore done.
pub fn restored(rec: &BackendStatus, new: IpAddr, now_ip: String) -> StepResult {
    let vhosts = rec.original_vhosts;
    let message = if rec.restores_up() {
        format!("back in the ring at {new} with {vhosts} vhosts")
    } else {
        format!(
            "in the ring at {new} with {vhosts} vhosts and left down, as it was before the rollout (doveadm director up {new} puts it back)"
        )
    };
    StepResult::Advanced {
        message: Some(message),
        new_ip: Some(now_ip),
        pod_uid: None,
        layout: None,
    }
}

/// Whether RingRestore writes what it sees at the pod's new IP (`Intent::RestoreSeen`) before
/// its first command: the entry is another pod's by the ring's record, so a count seen there
/// later is a human's only if it differs from the one there now.
pub fn restore_must_see(
    stood_for: &[crate::api::StoodFor],
    rec: &BackendStatus,
    new_ip: &str,
) -> bool {
    rec.step == Step::RingRestore
        && rec.restore_seen.is_none()
        && new_ip != rec.ip
        && stood_for.iter().any(|f| f.ip == new_ip && f.pod != rec.pod)
}
