//! Runs the recorded step of one backend: the argv the step names, judged by `machine::judge`.

use dbu_core::api::{BackendStatus, DrainStrategy, Step};
use dbu_core::dovecot::{self, CommandKind};
use dbu_core::machine::drain::{self, DrainAct};
use dbu_core::machine::judge::{self, SoakMove, StopWait};
use dbu_core::machine::{DrainPoll, Observed, On, PodView, ReplaceMove, StepResult};
use dbu_core::reset_guard;
use dbu_core::settings::Settings;
use dbu_core::time::{after, elapsed};

use super::cluster::{Clock, Cluster};
use super::runner::Runner;
use crate::exec::{ExecOutput, PodExec};

/// Everything one step acts with.
pub(crate) struct StepContext<'a> {
    pub s: &'a Settings,
    pub exec: &'a dyn PodExec,
    pub cluster: &'a dyn Cluster,
    pub obs: &'a Observed,
    pub clock: Clock<'a>,
}

/// `who -1` on the backend; a failed one ends the poll as `judge::who_failed` says (a Dovecot
/// that died has no sessions to wait for; a running one that cannot answer is retried).
async fn read_who(r: &Runner<'_>) -> Result<Result<ExecOutput, StepResult>, StepResult> {
    let argv = r.s.backend.who();
    let who = r.raw(On::Backend, &argv).await?;
    if who.exit_code == 0 {
        return Ok(Ok(who));
    }
    let running = r.dovecot_running().await?;
    Ok(Err(judge::who_failed(
        running,
        r.error(&argv, Some(who.exit_code), &who.stderr),
    )))
}

/// Process titles read by one exec.
const TITLES_PER_EXEC: usize = 200;

/// One poll of a Move drain: look at the backend's sessions, processes and their titles, then
/// move what `drain::plan` says may move. Each move is idempotent (a user already moved is
/// "already there" for the director), so a crash between polls repeats nothing harmful.
async fn move_drain(
    cx: &StepContext<'_>,
    r: &Runner<'_>,
    rec: &BackendStatus,
    mapped: u64,
) -> Result<StepResult, StepResult> {
    let s = cx.s;
    let (d, b) = (&s.director, &s.backend);
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
    let who = match read_who(r).await? {
        Ok(who) => who,
        Err(done) => return Ok(done),
    };
    // a capture cut at its bound, or an answer we cannot read: move nobody, wait
    let Ok(sessions) = dovecot::parse_who_sessions(&who.stdout) else {
        return waiting(format!(
            "{mapped} users still mapped; who -1 could not be read in full, so nobody is moved"
        ));
    };
    let ps = r.raw(On::Backend, &b.process_status()).await?;
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
    let mut titles = std::collections::BTreeMap::new();
    // in chunks: an exec's argv travels in the request URL, which proxies bound
    for chunk in pids.chunks(TITLES_PER_EXEC) {
        // exit 1 when a process ended meanwhile; the others are still printed
        let out = r.raw(On::Backend, &dovecot::process_titles(chunk)).await?;
        titles.extend(dovecot::parse_process_titles(&out.stdout));
    }
    let plan = drain::plan(mapped, &sessions, &procs, &titles, s.drain_max_parallel);
    let (mut sessions_moved, mut users_moved, mut skipped) = (0u64, 0u64, 0u64);
    match &plan.act {
        DrainAct::Flush => {
            r.run(On::Director, &d.director_flush(ip), CommandKind::Plain)
                .await?;
            users_moved = mapped;
        }
        DrainAct::Move(users) => {
            for user in users {
                let st = r.raw(On::Director, &d.director_user_status(user)).await?;
                let placement = (st.exit_code == 0)
                    .then(|| dovecot::parse_user_placement(&st.stdout).ok())
                    .flatten();
                // only a user the director maps here, to a host its hash now names; a session
                // the director does not map here (a direct login) is not the director's to move
                let to = match placement {
                    Some((Some(cur), Some(hashed))) if cur == rec.ip && hashed != rec.ip => {
                        dovecot::validate_ip(&hashed).ok()
                    }
                    _ => None,
                };
                let Some(to) = to else {
                    skipped += 1;
                    continue;
                };
                let mv = r.raw(On::Director, &d.director_move(user, to)).await?;
                if mv.exit_code == 0 {
                    // the director closes every session of the user
                    sessions_moved += sessions.iter().filter(|x| &x.user == user).count() as u64;
                } else {
                    // e.g. the target left the ring meanwhile: the next poll asks again
                    tracing::warn!(pod = %rec.pod, exit_code = mv.exit_code, stderr = %dbu_core::text::bounded(&mv.stderr, 300), "director move failed");
                    skipped += 1;
                }
            }
        }
        DrainAct::Wait => {}
    }
    let now = (cx.clock)();
    let ceiling = after(rec.step_started.0, s.drain_timeout);
    let mut message = format!("{mapped} users still mapped: {}", plan.message);
    if skipped > 0 {
        message.push_str(&format!(
            "; {skipped} not moved (not mapped here, or the move failed)"
        ));
    }
    Ok(StepResult::Draining {
        requeue: drain::requeue(&plan, poll),
        message,
        poll: DrainPoll {
            users_left: mapped,
            sessions: plan.sessions,
            without_session: plan.without_session,
            sessions_moved,
            users_moved,
            predicted_end: Some(drain::predicted_end(
                &plan,
                s.drain_max_parallel,
                poll,
                now,
                ceiling,
            )),
        },
    })
}

/// Runs the recorded step of one backend. Every step is safe to run again after a crash.
pub(crate) async fn run_step(
    cx: &StepContext<'_>,
    rec: &BackendStatus,
    ceiling_users: Option<u64>,
) -> StepResult {
    let r = Runner::for_record(cx.s, cx.exec, cx.obs.director.as_deref(), rec);
    act(cx, &r, rec, ceiling_users).await.unwrap_or_else(|e| e)
}

/// `Err` carries the result of a command that ended the step early (failed or transient).
async fn act(
    cx: &StepContext<'_>,
    r: &Runner<'_>,
    rec: &BackendStatus,
    ceiling_users: Option<u64>,
) -> Result<StepResult, StepResult> {
    let s = cx.s;
    let (d, b) = (&s.director, &s.backend);
    match rec.step {
        Step::Drain => {
            let ip = judge::record_ip(&rec.ip, rec.step)?;
            r.run(On::Director, &d.director_update(ip, 0), CommandKind::Plain)
                .await?;
            Ok(StepResult::advanced(None))
        }
        Step::WaitSessions => {
            let error = |m: String| r.error(&[], None, &m);
            // users mapped at the ceiling: no need to count sessions
            if ceiling_users.is_some_and(|n| n > 0) {
                return Ok(judge::drain_outcome(
                    ceiling_users,
                    0,
                    s.on_drain_timeout,
                    s.poll_interval,
                    error,
                ));
            }
            let mapped = cx
                .obs
                .ring
                .iter()
                .flatten()
                .find(|h| h.ip == rec.ip)
                .map_or(0, |h| h.users);
            if s.drain_strategy == DrainStrategy::Move && ceiling_users.is_none() && mapped > 0 {
                return move_drain(cx, r, rec, mapped).await;
            }
            // the director counts mappings; confirm on the backend that nobody is left
            let who = match read_who(r).await? {
                Ok(who) => who,
                Err(done) => return Ok(done),
            };
            Ok(judge::sessions(
                &who.stdout,
                ceiling_users,
                s.on_drain_timeout,
                s.poll_interval,
                |m| r.error(&b.who(), Some(0), &m),
            ))
        }
        Step::StopLmtp => {
            // the last moment the auth service can say where mail lives (Reset's guard)
            let lookup = r.raw(On::Backend, &b.user_lookup(&s.user)).await?;
            let layout = judge::layout_read(&s.user, lookup.exit_code, &lookup.stdout);
            let (v, _) = r
                .run(
                    On::Backend,
                    &b.service_stop_lmtp(),
                    CommandKind::ServiceStop,
                )
                .await?;
            Ok(judge::lmtp_stopped(v, layout))
        }
        Step::StopDovecot => {
            r.run(On::Backend, &b.stop(), CommandKind::Stop).await?;
            let polling_since = (cx.clock)();
            while r.dovecot_running().await? {
                match judge::stop_wait(
                    &rec.pod,
                    polling_since,
                    (cx.clock)(),
                    &rec.step_started,
                    s.stop_timeout,
                    &b.stop(),
                ) {
                    StopWait::PollAgain(d) => tokio::time::sleep(d).await,
                    StopWait::Result(res) => return Ok(res),
                }
            }
            // the UID of the pod just stopped, as the API server has it (a lagging cache may
            // still show its predecessor): Replace deletes exactly that one
            let pod = pod_now(cx, r, &rec.pod).await?;
            Ok(judge::stopped(pod.as_ref()))
        }
        Step::RingRemove => {
            let ip = judge::record_ip(&rec.ip, rec.step)?;
            r.run(On::Director, &d.director_down(ip), CommandKind::Plain)
                .await?;
            r.run(On::Director, &d.director_flush(ip), CommandKind::Plain)
                .await?;
            Ok(StepResult::advanced(None))
        }
        Step::Reset => {
            if r.dovecot_running().await? {
                return Ok(judge::reset_found_running());
            }
            if s.reset.is_empty() {
                return Ok(StepResult::advanced("reset disabled".to_string()));
            }
            // nothing is deleted before every command passed both checks
            let layout = match &rec.mail_layout {
                Some(l) => l.clone(),
                None => {
                    let argv = b.doveconf_mail();
                    let (_, out) = r.run(On::Backend, &argv, CommandKind::Plain).await?;
                    dovecot::parse_doveconf_mail(&s.user, &out.stdout)
                }
            };
            if let Some(refused) = judge::reset_refused(s, &layout) {
                return Ok(refused);
            }
            for argv in &s.reset {
                if let Some(probe) = reset_guard::probe(argv) {
                    let out = r.raw(On::Backend, &probe).await?;
                    judge::reset_probed(argv, &probe, out.exit_code, &out.stdout, &out.stderr)?;
                }
            }
            for argv in &s.reset {
                r.run(On::Backend, argv, CommandKind::Reset).await?;
            }
            Ok(StepResult::advanced(None))
        }
        Step::Replace => {
            let target = cx
                .obs
                .sts
                .as_ref()
                .and_then(|x| x.update_revision.as_deref())
                .unwrap_or("");
            // the pod as the API server has it now: a pod cache lagging after an outage still
            // shows the stopped pod, and Replace would delete its successor
            let transient = |what: &str, e: super::cluster::ClusterError| StepResult::Transient {
                error: r.error(&[], None, &format!("{what}: {e}")),
            };
            let pod = pod_now(cx, r, &rec.pod).await?;
            let mv = judge::replace_move(
                pod.as_ref(),
                target,
                rec.stopped_pod_uid.as_deref(),
                elapsed(&rec.step_started, (cx.clock)()),
                s.replace_timeout,
            );
            if let ReplaceMove::Delete(uid) = &mv {
                let fresh = cx
                    .cluster
                    .fresh_update_revision(s)
                    .await
                    .map_err(|e| transient("read the StatefulSet", e))?;
                if let Some(wait) = judge::target_still(target, fresh.as_deref(), &rec.pod) {
                    return Ok(wait);
                }
                cx.cluster
                    .delete_pod(&rec.pod, uid)
                    .await
                    .map_err(|e| transient("delete pod", e))?;
            }
            Ok(judge::replace_result(mv, &rec.pod, target))
        }
        Step::Verify => {
            let (user, mb) = (&s.user, &s.mailbox);
            let probing = s.lmtp_probe.is_some() || s.imap_probe.is_some();
            // leftovers of a probe that was interrupted go first, so none is ever counted
            let expunge = b.expunge_probes(user);
            if probing {
                r.run(On::Backend, &expunge, CommandKind::Plain).await?;
            }
            let list = b.mailbox_list(user);
            let (_, out) = r.run(On::Backend, &list, CommandKind::Plain).await?;
            judge::verify_listed(user, mb, &out.stdout)
                .map_err(|m| StepResult::Failed(r.error(&list, Some(0), &m)))?;
            let status = b.mailbox_status(user, mb);
            let (_, out) = r.run(On::Backend, &status, CommandKind::Plain).await?;
            let n = judge::verify_count(mb, &out.stdout)
                .map_err(|m| StepResult::Failed(r.error(&status, Some(0), &m)))?;
            r.run(On::Backend, &b.fetch_text(user, mb), CommandKind::Plain)
                .await?;
            if !probing {
                return Ok(judge::verified(user, mb, n, &[]));
            }
            let probed = probes(cx, rec).await;
            // the probe mail goes also when a probe failed halfway (best effort then: the
            // failure is what the record must say, and the next Verify expunges first)
            let cleanup = r.run(On::Backend, &expunge, CommandKind::Plain).await;
            let done = probed?;
            cleanup?;
            Ok(judge::verified(user, mb, n, &done))
        }
        Step::Soak => {
            let Some(limit) = s.soak else {
                return Ok(StepResult::advanced(None));
            };
            let pod = pod_now(cx, r, &rec.pod).await?;
            let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
            let d = &s.director;
            let status = d.director_status();
            let (_, out) = r.run(On::Director, &status, CommandKind::Plain).await?;
            let ring = dovecot::parse_director_status(&out.stdout)
                .map_err(|e| StepResult::Failed(r.error(&status, Some(0), &e.to_string())))?;
            let lookup = d.director_user_status(&s.user);
            let read_user = || async {
                let (_, out) = r.run(On::Director, &lookup, CommandKind::Plain).await?;
                dovecot::parse_user_current(&out.stdout)
                    .map_err(|e| StepResult::Failed(r.error(&lookup, Some(0), &e.to_string())))
            };
            let mut user_on = read_user().await?;
            let mut login: Option<Result<(), String>> = None;
            let director = cx
                .obs
                .directors
                .iter()
                .find(|(n, _)| Some(n) == cx.obs.director.as_ref())
                .and_then(|(_, ip)| ip.clone());
            let waited = elapsed(&rec.step_started, (cx.clock)());
            let mv = loop {
                let seen = judge::SoakSeen {
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
                    waited,
                };
                match judge::soak(rec, &seen, limit, s.poll_interval) {
                    SoakMove::TryLogin => {
                        login = Some(director_login(cx, r, ip, director.as_deref()).await?);
                        user_on = read_user().await?;
                    }
                    other => break other,
                }
            };
            match mv {
                SoakMove::Pass(m) => Ok(StepResult::advanced(m)),
                SoakMove::Wait(requeue, message) => Ok(StepResult::Waiting { requeue, message }),
                SoakMove::Fail(why) => {
                    let (drain, failed) = judge::soak_failed(s, ip, &why);
                    for argv in drain {
                        r.run(On::Director, &argv, CommandKind::Plain).await?;
                    }
                    Err(failed)
                }
                SoakMove::TryLogin => unreachable!("judged again after the login"),
            }
        }
        Step::RingRestore => {
            // the pod's IP as the API server has it: a lagging cache may show its predecessor's
            let pod = pod_now(cx, r, &rec.pod).await?;
            let (old, new, now_ip) = judge::restore_ips(rec, pod.as_ref())?;
            for c in judge::ring_restore_commands(s, rec, old, new) {
                r.run(c.on, &c.argv, c.kind).await?;
            }
            Ok(judge::restored(rec, new, now_ip))
        }
        Step::Done => Ok(StepResult::advanced(None)),
    }
}

/// Verify's protocol probes at the replaced pod's own IP, never through the director: LMTP
/// delivers one probe message, IMAP logs in, finds, fetches and expunges it (or appends its
/// own when LMTP is off). What each proved, for the step's message.
async fn probes(cx: &StepContext<'_>, rec: &BackendStatus) -> Result<Vec<String>, StepResult> {
    let s = cx.s;
    let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
    let now = (cx.clock)();
    let token = dbu_core::probe::token(&rec.pod, now.as_millisecond());
    let date = now.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string();
    let message = dbu_core::probe::message(&s.user, &token, &date);
    let mut done = Vec::new();
    if let Some(port) = s.lmtp_probe {
        cx.cluster
            .lmtp_probe(ip, port, s.probe_timeout, &s.user, &message)
            .await
            .map_err(|f| {
                judge::probe_failed(
                    "LMTP",
                    &format!("{ip}:{port}"),
                    &f.command,
                    &f.reply,
                    f.transient,
                )
            })?;
        done.push(format!("LMTP on port {port} accepted a probe message"));
    }
    if let Some(p) = &s.imap_probe {
        let addr = format!("{ip}:{}", p.port);
        let fail = |command: &str, reply: &str, transient| {
            judge::probe_failed("IMAP", &addr, command, reply, transient)
        };
        let append = s.lmtp_probe.is_none().then_some(message);
        let (target, input) = imap_inputs(cx.cluster, s, &p.tls, ip, p.port, token, append)
            .await
            .map_err(|(what, transient)| fail("credentials", &what, transient))?;
        cx.cluster
            .imap_probe(&target, input)
            .await
            .map_err(|f| fail(&f.command, &f.reply, f.transient))?;
        done.push(format!(
            "IMAP on port {} ({:?}) logged in and found, fetched and expunged the probe message",
            p.port, p.tls.mode
        ));
    }
    Ok(done)
}

/// The soak's login through a director: the verify user is moved to the restored host
/// (`director move`), then logs in and out through the director at `director` (its pod IP).
/// Err: why the login failed (the soak judges it); a move that cannot run ends the step.
async fn director_login(
    cx: &StepContext<'_>,
    r: &Runner<'_>,
    ip: &str,
    director: Option<&str>,
) -> Result<Result<(), String>, StepResult> {
    let s = cx.s;
    let (Some(_), Some(l)) = (&s.imap_probe, &s.director_login) else {
        return Ok(Err("no IMAP probe credentials".into()));
    };
    let Some(director) = director else {
        return Ok(Err("no Ready director with a pod IP".into()));
    };
    let addr = judge::record_ip(ip, Step::Soak)?;
    // a move the director refuses is a soak that did not land, judged as such (the backend is
    // then drained again), not a failed command that would leave it in the ring
    let out = r
        .raw(On::Director, &s.director.director_move(&s.user, addr))
        .await?;
    if out.exit_code != 0 {
        return Ok(Err(format!(
            "director move exited {}: {}",
            out.exit_code,
            dbu_core::text::bounded(out.stderr.trim(), 200)
        )));
    }
    let (target, input) =
        match imap_inputs(cx.cluster, s, &l.tls, director, l.port, String::new(), None).await {
            Ok((t, mut i)) => {
                i.login_only = true;
                (t, i)
            }
            Err((what, _)) => return Ok(Err(what)),
        };
    Ok(cx
        .cluster
        .imap_probe(&target, input)
        .await
        .map_err(|f| format!("{director}:{} {}: {}", l.port, f.command, f.reply)))
}

/// An IMAP connection's target and input: the password (and login, CA bundle) read by name
/// from the DBU's namespace now, held only for this connection. Err: what is missing, and
/// whether a retry may help (the API unreachable) rather than a human (a missing key).
async fn imap_inputs(
    cluster: &dyn Cluster,
    s: &Settings,
    tls: &dbu_core::settings::Tls,
    ip: &str,
    port: u16,
    token: String,
    append: Option<String>,
) -> Result<(crate::probe::ImapTarget, dbu_core::imap::ProbeInput), (String, bool)> {
    use dbu_core::settings::ObjectKey;
    let Some(p) = &s.imap_probe else {
        return Err(("no IMAP probe".into(), false));
    };
    let read = |key: ObjectKey| async move {
        match cluster.read_key(&key).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err((format!("{} not found", describe(&key)), false)),
            Err(e) => Err((format!("reading {}: {e}", describe(&key)), true)),
        }
    };
    let text = |key: ObjectKey, v: Vec<u8>| {
        String::from_utf8(v)
            .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|_| (format!("{} is not UTF-8 text", describe(&key)), false))
    };
    let secret = |key: &str| ObjectKey::Secret {
        name: p.secret.clone(),
        key: key.to_string(),
    };
    let password = text(
        secret(&p.password_key),
        read(secret(&p.password_key)).await?,
    )?;
    let login = match &p.username_key {
        Some(k) => text(secret(k), read(secret(k)).await?)?,
        None => s.user.clone(),
    };
    // a CA bundle matters only where a certificate is checked
    let ca_pem = match &tls.ca {
        Some(k) if tls.mode != dbu_core::imap::Tls::None && !tls.insecure_skip_verify => {
            Some(read(k.clone()).await?)
        }
        _ => None,
    };
    Ok((
        crate::probe::ImapTarget {
            ip: ip.to_string(),
            port,
            tls: tls.mode,
            server_name: tls.server_name.clone(),
            ca_pem,
            insecure_skip_verify: tls.insecure_skip_verify,
            timeout: p.timeout,
        },
        dbu_core::imap::ProbeInput {
            tls: tls.mode,
            login,
            password: dbu_core::imap::Secret(password),
            verify_mailbox: s.mailbox.clone(),
            token,
            append,
            login_only: false,
        },
    ))
}

/// Before a backend is drained: whether Verify's IMAP probe (and the soak's login) will find
/// what they read (the password, the login, the CA bundles). Draining a backend whose Verify
/// cannot pass would leave it out of the ring.
pub(crate) async fn probe_credentials(cluster: &dyn Cluster, s: &Settings) -> Result<(), String> {
    let Some(p) = &s.imap_probe else {
        return Ok(());
    };
    imap_inputs(cluster, s, &p.tls, "", p.port, String::new(), None)
        .await
        .map_err(|(m, _)| m)?;
    if let Some(l) = &s.director_login {
        imap_inputs(cluster, s, &l.tls, "", l.port, String::new(), None)
            .await
            .map_err(|(m, _)| m)?;
    }
    Ok(())
}

/// A key as it is named in a failure (the value never is).
fn describe(key: &dbu_core::settings::ObjectKey) -> String {
    use dbu_core::settings::ObjectKey;
    match key {
        ObjectKey::Secret { name, key } => format!("key {key:?} of Secret {name:?}"),
        ObjectKey::ConfigMap { name, key } => format!("key {key:?} of ConfigMap {name:?}"),
    }
}

/// One backend pod as the API server has it now, not as a cache does: the steps that act on
/// "the pod" (which one was stopped, which one to delete, which IP goes into the ring) read it.
async fn pod_now(
    cx: &StepContext<'_>,
    r: &Runner<'_>,
    pod: &str,
) -> Result<Option<PodView>, StepResult> {
    cx.cluster
        .fresh_pod(cx.s, pod)
        .await
        .map_err(|e| StepResult::Transient {
            error: r.error(&[], None, &format!("read the pod: {e}")),
        })
}
