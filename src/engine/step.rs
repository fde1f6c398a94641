//! Runs the recorded step of one backend: the argv the step names, judged by `machine::judge`.

use dbu_core::api::{BackendStatus, Step};
use dbu_core::dovecot::{self, CommandKind};
use dbu_core::machine::judge::{self, StopWait};
use dbu_core::machine::{Observed, On, PodView, ReplaceMove, StepResult};
use dbu_core::reset_guard;
use dbu_core::settings::Settings;
use dbu_core::time::elapsed;

use super::cluster::{Clock, Cluster};
use super::runner::Runner;
use crate::exec::PodExec;

/// Everything one step acts with.
pub(crate) struct StepContext<'a> {
    pub s: &'a Settings,
    pub exec: &'a dyn PodExec,
    pub cluster: &'a dyn Cluster,
    pub obs: &'a Observed,
    pub clock: Clock<'a>,
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
            // the director counts mappings; confirm on the backend that nobody is left
            let who = r.raw(On::Backend, &b.who()).await?;
            if who.exit_code != 0 {
                let running = r.dovecot_running().await?;
                return Ok(judge::who_failed(
                    running,
                    r.error(&b.who(), Some(who.exit_code), &who.stderr),
                ));
            }
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
            // leftovers of a probe that was interrupted go first, so none is ever counted
            let expunge = b.expunge_probes(user);
            if s.lmtp_probe.is_some() {
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
            let Some(port) = s.lmtp_probe else {
                return Ok(judge::verified(user, mb, n, None));
            };
            // LMTP at the replaced pod's own IP, never through the director
            let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
            let now = (cx.clock)();
            let token = dbu_core::probe::token(&rec.pod, now.as_millisecond());
            let date = now.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string();
            let message = dbu_core::probe::message(user, &token, &date);
            if let Err(f) = cx
                .cluster
                .lmtp_probe(ip, port, s.probe_timeout, user, &message)
                .await
            {
                let error = judge::step_error(
                    Step::Verify,
                    &[
                        "LMTP".to_string(),
                        format!("{ip}:{port}"),
                        f.command.clone(),
                    ],
                    None,
                    &f.reply,
                );
                return Err(if f.transient {
                    StepResult::Transient { error }
                } else {
                    StepResult::Failed(error)
                });
            }
            r.run(On::Backend, &expunge, CommandKind::Plain).await?;
            Ok(judge::verified(user, mb, n, Some(port)))
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
