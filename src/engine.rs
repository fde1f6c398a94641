//! One reconcile of a rollout: observe, decide (pure), act once through exec and the cluster, record.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use tracing::Instrument;

use crate::api::{BackendStatus, DovecotBackendUpgradeStatus, Step, StepError};
use crate::dovecot::{self, CommandKind, Verdict};
use crate::exec::{ExecError, ExecOutput, PodExec};
use crate::plan::{self, Cleanup, Decision, Note, Observed, StepResult};
use crate::settings::Settings;

/// stderr kept in status and events.
pub const STDERR_EXCERPT: usize = 512;

/// Failure to read or change the cluster (not a step failure).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubernetes API: {0}")]
    Api(String),
    #[error("{0}")]
    Other(String),
}

impl ClusterError {
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Api(_) => "kube_api",
            ClusterError::Other(_) => "cluster",
        }
    }
}

/// The Kubernetes side of a rollout: what is there, and replacing a pod.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// StatefulSet, backend pods and director pods (the ring is read by the engine).
    async fn observe(&self, s: &Settings) -> Result<Observed, ClusterError>;
    /// Deletes a backend pod so that its StatefulSet recreates it at the update revision.
    async fn delete_pod(&self, pod: &str) -> Result<(), ClusterError>;
    /// Resolves when the observed world may have changed (the controller has watches for this;
    /// `drive` uses it to wake before its requeue). Default: never.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

/// What a reconcile did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: DovecotBackendUpgradeStatus,
    pub decision: Decision,
    pub notes: Vec<Note>,
    /// When to look again; None waits for a change.
    pub requeue: Option<Duration>,
    /// A step that succeeded in this reconcile, and how long it took since it started.
    pub finished: Option<(Step, Duration)>,
}

/// Runs commands for one step and turns exit codes into step results.
struct Runner<'a> {
    s: &'a Settings,
    exec: &'a dyn PodExec,
    step: Step,
}

impl Runner<'_> {
    fn error(&self, argv: &[String], exit_code: Option<i32>, stderr: &str) -> StepError {
        StepError {
            step: self.step,
            argv: argv.to_vec(),
            exit_code,
            stderr: dovecot::bounded(stderr.trim(), STDERR_EXCERPT),
        }
    }

    async fn raw(
        &self,
        pod: &str,
        director: bool,
        argv: &[String],
    ) -> Result<ExecOutput, StepResult> {
        let container = if director {
            self.s.director_container.as_deref()
        } else {
            self.s.backend_container.as_deref()
        };
        tracing::debug!(pod, step = %self.step, argv = ?argv, "exec");
        self.exec
            .exec(pod, container, argv, self.s.command_timeout)
            .await
            .map_err(|e: ExecError| StepResult::Transient {
                error: self.error(argv, None, &e.to_string()),
            })
    }

    /// Runs argv; a non-zero exit that is not "already done" fails the step.
    async fn run(
        &self,
        pod: &str,
        director: bool,
        argv: Vec<String>,
        kind: CommandKind,
    ) -> Result<(Verdict, ExecOutput), StepResult> {
        let out = self.raw(pod, director, &argv).await?;
        match dovecot::classify(kind, out.exit_code, &out.stderr) {
            Verdict::Failed => Err(StepResult::Failed(self.error(
                &argv,
                Some(out.exit_code),
                &out.stderr,
            ))),
            v => Ok((v, out)),
        }
    }

    /// Whether Dovecot's master runs in the pod: master.pid present and its process alive.
    async fn dovecot_running(&self, pod: &str) -> Result<bool, StepResult> {
        let (v, out) = self
            .run(
                pod,
                false,
                dovecot::read_master_pid(&self.s.base_dir),
                CommandKind::ReadPid,
            )
            .await?;
        if v == Verdict::AlreadyDone {
            return Ok(false);
        }
        let pid = dovecot::parse_pid(&out.stdout).map_err(|e| {
            StepResult::Failed(self.error(
                &dovecot::read_master_pid(&self.s.base_dir),
                Some(0),
                &e.to_string(),
            ))
        })?;
        let alive = self.raw(pod, false, &dovecot::process_alive(pid)).await?;
        Ok(alive.exit_code == 0)
    }
}

fn advanced(message: impl Into<Option<String>>) -> StepResult {
    StepResult::Advanced {
        message: message.into(),
        new_ip: None,
        stopped_uid: None,
    }
}

fn ip(rec_ip: &str, step: Step) -> Result<std::net::IpAddr, StepResult> {
    dovecot::validate_ip(rec_ip).map_err(|e| {
        StepResult::Failed(StepError {
            step,
            argv: vec![],
            exit_code: None,
            stderr: e.to_string(),
        })
    })
}

/// Runs the recorded step of one backend. Every step is safe to run again after a crash.
async fn run_step(
    s: &Settings,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    obs: &Observed,
    rec: &BackendStatus,
    ceiling_users: Option<u64>,
    now: Timestamp,
) -> StepResult {
    let director = obs.director.as_deref().unwrap_or_default();
    let r = Runner {
        s,
        exec,
        step: rec.step,
    };
    let res: Result<StepResult, StepResult> = async {
        let pod = rec.pod.as_str();
        let d = &s.director;
        let b = &s.backend;
        match rec.step {
            Step::Drain => {
                r.run(
                    director,
                    true,
                    d.director_update(ip(&rec.ip, rec.step)?, 0),
                    CommandKind::Plain,
                )
                .await?;
                Ok(advanced(None))
            }
            Step::WaitSessions => {
                if ceiling_users.is_some() {
                    return Ok(plan::drain_outcome(
                        ceiling_users,
                        0,
                        s.on_drain_timeout,
                        s.poll_interval,
                        |m| r.error(&[], None, &m),
                    ));
                }
                // the director counts mappings; confirm on the backend that nobody is left
                let who = r.raw(pod, false, &b.who()).await?;
                if who.exit_code != 0 {
                    if !r.dovecot_running(pod).await? {
                        // died on its own: nobody to wait for; the next steps take it out
                        return Ok(advanced(
                            "Dovecot is not running on the backend; nothing to wait for"
                                .to_string(),
                        ));
                    }
                    return Err(StepResult::Transient {
                        error: r.error(&b.who(), Some(who.exit_code), &who.stderr),
                    });
                }
                let out = who;
                let live = dovecot::parse_who_connections(&out.stdout)
                    .map_err(|e| StepResult::Failed(r.error(&b.who(), Some(0), &e.to_string())))?;
                Ok(plan::drain_outcome(
                    None,
                    live,
                    s.on_drain_timeout,
                    s.poll_interval,
                    |m| r.error(&[], None, &m),
                ))
            }
            Step::StopLmtp => {
                let (v, _) = r
                    .run(pod, false, b.service_stop_lmtp(), CommandKind::ServiceStop)
                    .await?;
                Ok(advanced(
                    (v == Verdict::AlreadyDone).then(|| "Dovecot was not running".to_string()),
                ))
            }
            Step::StopDovecot => {
                r.run(pod, false, b.stop(), CommandKind::Stop).await?;
                // doveadm stop returns after ~3 s even when the master still runs
                let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                while r.dovecot_running(pod).await? {
                    if tokio::time::Instant::now() >= deadline {
                        if plan::elapsed(&rec.step_started, now) >= s.stop_timeout {
                            return Err(StepResult::Failed(r.error(
                                &b.stop(),
                                None,
                                &format!(
                                    "Dovecot master still running {:?} after doveadm stop",
                                    s.stop_timeout
                                ),
                            )));
                        }
                        return Ok(StepResult::Waiting {
                            requeue: Duration::from_secs(1),
                            message: format!("{pod}: waiting for the Dovecot master to exit"),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let uid = obs
                    .pods
                    .iter()
                    .find(|p| p.name == rec.pod)
                    .and_then(|p| p.uid.clone());
                Ok(StepResult::Advanced {
                    message: None,
                    new_ip: None,
                    stopped_uid: uid,
                })
            }
            Step::RingRemove => {
                let a = ip(&rec.ip, rec.step)?;
                r.run(director, true, d.director_down(a), CommandKind::Plain)
                    .await?;
                r.run(director, true, d.director_flush(a), CommandKind::Plain)
                    .await?;
                Ok(advanced(None))
            }
            Step::Reset => {
                if r.dovecot_running(pod).await? {
                    return Ok(StepResult::Rewind {
                        to: Step::StopLmtp,
                        message:
                            "Dovecot is running in the pod again; stopping it before the reset"
                                .into(),
                    });
                }
                if s.reset.is_empty() {
                    return Ok(advanced("reset disabled".to_string()));
                }
                for argv in &s.reset {
                    r.run(pod, false, argv.clone(), CommandKind::Plain).await?;
                }
                Ok(advanced(None))
            }
            Step::Replace => {
                let target = obs
                    .sts
                    .as_ref()
                    .and_then(|x| x.update_revision.as_deref())
                    .unwrap_or("");
                let view = obs.pods.iter().find(|p| p.name == rec.pod);
                match plan::replace_move(
                    view,
                    target,
                    rec.stopped_pod_uid.as_deref(),
                    plan::elapsed(&rec.step_started, now),
                    s.replace_timeout,
                ) {
                    plan::ReplaceMove::Delete => {
                        cluster
                            .delete_pod(pod)
                            .await
                            .map_err(|e| StepResult::Transient {
                                error: r.error(&[], None, &format!("delete pod: {e}")),
                            })?;
                        Ok(StepResult::Waiting {
                            requeue: Duration::from_secs(2),
                            message: format!("{pod}: deleted; waiting for revision {target}"),
                        })
                    }
                    plan::ReplaceMove::Wait(m) => Ok(StepResult::Waiting {
                        requeue: Duration::from_secs(2),
                        message: m,
                    }),
                    plan::ReplaceMove::Done(new_ip) => Ok(StepResult::Advanced {
                        message: None,
                        new_ip: Some(new_ip),
                        stopped_uid: None,
                    }),
                    plan::ReplaceMove::TimedOut(m) => {
                        Err(StepResult::Failed(r.error(&[], None, &m)))
                    }
                }
            }
            Step::Verify => {
                let user = &s.user;
                let mb = &s.mailbox;
                let (_, out) = r
                    .run(pod, false, b.mailbox_list(user), CommandKind::Plain)
                    .await?;
                let boxes = dovecot::parse_mailbox_list(&out.stdout).map_err(|e| {
                    StepResult::Failed(r.error(&b.mailbox_list(user), Some(0), &e.to_string()))
                })?;
                if !boxes.iter().any(|x| x == mb) {
                    return Err(StepResult::Failed(r.error(
                        &b.mailbox_list(user),
                        Some(0),
                        &format!("mailbox {mb:?} not listed for {user} (got {boxes:?})"),
                    )));
                }
                let (_, out) = r
                    .run(pod, false, b.mailbox_status(user, mb), CommandKind::Plain)
                    .await?;
                let counts = dovecot::parse_mailbox_messages(&out.stdout).map_err(|e| {
                    StepResult::Failed(r.error(
                        &b.mailbox_status(user, mb),
                        Some(0),
                        &e.to_string(),
                    ))
                })?;
                let Some((_, n)) = counts.iter().find(|(m, _)| m == mb) else {
                    return Err(StepResult::Failed(r.error(
                        &b.mailbox_status(user, mb),
                        Some(0),
                        "no status returned for the mailbox",
                    )));
                };
                r.run(pod, false, b.fetch_text(user, mb), CommandKind::Plain)
                    .await?;
                Ok(advanced(format!(
                    "{user}: {mb} has {n} messages, all fetched"
                )))
            }
            Step::RingRestore => {
                let old = ip(&rec.ip, rec.step)?;
                let now_ip = obs
                    .pods
                    .iter()
                    .find(|p| p.name == rec.pod)
                    .and_then(|p| p.ip.clone())
                    .unwrap_or_else(|| rec.ip.clone());
                let new = ip(&now_ip, rec.step)?;
                let n = rec.original_vhosts;
                if new != old {
                    r.run(director, true, d.director_add(new, n), CommandKind::Plain)
                        .await?;
                    r.run(
                        director,
                        true,
                        d.director_remove(old),
                        CommandKind::DirectorRemove,
                    )
                    .await?;
                }
                r.run(
                    director,
                    true,
                    d.director_update(new, n),
                    CommandKind::Plain,
                )
                .await?;
                r.run(director, true, d.director_up(new), CommandKind::Plain)
                    .await?;
                Ok(StepResult::Advanced {
                    message: Some(format!("back in the ring at {new} with {n} vhosts")),
                    new_ip: Some(now_ip),
                    stopped_uid: None,
                })
            }
            Step::Done => Ok(advanced(None)),
        }
    }
    .await;
    res.unwrap_or_else(|e| e)
}

/// stdout of a read-only doveadm query on the director, or None (logged) when it failed.
async fn director_query(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
    argv: Vec<String>,
) -> Option<String> {
    let what = argv.join(" ");
    match exec
        .exec(
            director,
            s.director_container.as_deref(),
            &argv,
            s.command_timeout,
        )
        .await
    {
        Ok(out) if out.exit_code == 0 => Some(out.stdout),
        Ok(out) => {
            tracing::warn!(director, command = %what, exit_code = out.exit_code, stderr = %dovecot::bounded(&out.stderr, 300), "director query failed");
            None
        }
        Err(e) => {
            tracing::warn!(director, command = %what, error = %e, "director query exec failed");
            None
        }
    }
}

/// Whether the director ring says it is synced; unreadable counts as not synced.
async fn read_ring_synced(s: &Settings, exec: &dyn PodExec, director: &str) -> bool {
    director_query(s, exec, director, s.director.director_ring_status())
        .await
        .is_some_and(|out| dovecot::parse_ring_synced(&out).unwrap_or(false))
}

/// Reads `director status` from the chosen director.
async fn read_ring(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
) -> Option<Vec<dovecot::RingHost>> {
    let out = director_query(s, exec, director, s.director.director_status()).await?;
    dovecot::parse_director_status(&out)
        .map_err(|e| tracing::warn!(director, error = %e, "director status unparsable"))
        .ok()
}

/// Decides, reading the ring and its sync state from the director only when the decision needs
/// them (`plan::missing`); each is read at most once per reconcile.
async fn decide_reading(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &mut Observed,
    exec: &dyn PodExec,
    now: Timestamp,
) -> Decision {
    let mut ring_read = false;
    loop {
        let decision = plan::decide(s, status, obs, now);
        let Some(dir) = obs.director.clone() else {
            return decision;
        };
        match plan::missing(&decision, obs) {
            Some(plan::Missing::Ring) if !ring_read => {
                ring_read = true;
                obs.ring = read_ring(s, exec, &dir).await;
            }
            Some(plan::Missing::RingSync) => {
                obs.ring_synced = Some(read_ring_synced(s, exec, &dir).await);
            }
            _ => return decision,
        }
    }
}

/// One reconcile: observe, decide, act once, record. `clock` is read only here, at the edge.
pub async fn reconcile_once(
    s: &Settings,
    mut status: DovecotBackendUpgradeStatus,
    generation: Option<i64>,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    clock: &(dyn Fn() -> Timestamp + Sync),
) -> Result<Outcome, ClusterError> {
    let mut obs = cluster.observe(s).await?;
    if let Some(target) = obs.sts.as_ref().and_then(|x| x.update_revision.clone()) {
        plan::retarget(&mut status, &target);
    }
    let now = clock();
    let mut finished = None;
    let mut notes = plan::apply_retry(&mut status, s.retry_token.as_deref(), &obs, now);
    let decision = decide_reading(s, &status, &mut obs, exec, now).await;
    if !matches!(decision, Decision::DryRun(_)) {
        status.plan = None;
    }
    let requeue = match &decision {
        Decision::Stall { .. } => Some(Duration::from_secs(300)),
        Decision::Complete => None,
        Decision::Aborted { .. } => Some(Duration::from_secs(300)),
        Decision::DryRun(p) => {
            status.plan = Some((**p).clone());
            Some(Duration::from_secs(60))
        }
        Decision::Undo { pod, action } => {
            let idx = status
                .backends
                .iter()
                .position(|r| &r.pod == pod)
                .expect("plan undoes recorded pods");
            let rec = status.backends[idx].clone();
            let director = obs.director.clone().unwrap_or_default();
            match undo(s, exec, cluster, &obs, &director, &rec, action.clone()).await {
                Undone::Restored(n) => {
                    status.backends.remove(idx);
                    notes.push(n);
                    Some(Duration::ZERO)
                }
                Undone::LeftOut(n) => {
                    let r = &mut status.backends[idx];
                    r.failed = true;
                    r.message = Some(n.message.clone());
                    notes.push(n);
                    Some(Duration::ZERO)
                }
                Undone::Failed(n) => {
                    notes.push(n);
                    Some(Duration::from_secs(10))
                }
                Undone::Nothing => {
                    status.backends.remove(idx);
                    Some(Duration::ZERO)
                }
            }
        }
        Decision::Wait { requeue, .. } => Some(*requeue),
        Decision::Begin(rec) => {
            status.backends.retain(|r| r.pod != rec.pod);
            notes.push(Note::normal(
                "BackendStarted",
                format!(
                    "{}: upgrading from {} ({} vhosts)",
                    rec.pod,
                    rec.from_revision.as_deref().unwrap_or("?"),
                    rec.original_vhosts
                ),
            ));
            notes.push(Note::normal(
                "StepStarted",
                format!("{}: {} started", rec.pod, Step::Drain),
            ));
            for n in &mut notes {
                n.pod = Some(rec.pod.clone());
                n.step = Some(Step::Drain);
            }
            status.backends.push((**rec).clone());
            Some(Duration::ZERO)
        }
        Decision::Reassert { pod, commands } => {
            let director = obs.director.clone().unwrap_or_default();
            let mut failed = None;
            for argv in commands {
                match exec
                    .exec(
                        &director,
                        s.director_container.as_deref(),
                        argv,
                        s.command_timeout,
                    )
                    .await
                {
                    Ok(o) if o.exit_code == 0 => {}
                    Ok(o) => {
                        failed = Some(format!(
                            "{} exited {}: {}",
                            argv.join(" "),
                            o.exit_code,
                            dovecot::bounded(o.stderr.trim(), 300)
                        ));
                        break;
                    }
                    Err(e) => {
                        failed = Some(format!("{}: {e}", argv.join(" ")));
                        break;
                    }
                }
            }
            match failed {
                None => notes.push(Note::warning(
                    "RingReasserted",
                    format!("{pod}: the director had lost its drained/down state (restart?); re-applied: {}", commands.iter().map(|c| c.join(" ")).collect::<Vec<_>>().join("; ")),
                )),
                Some(m) => notes.push(Note::warning("RingReassertFailed", format!("{pod}: {m}"))),
            }
            // a director that refuses must not be hammered
            Some(if notes.iter().any(|n| n.reason == "RingReassertFailed") {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            })
        }
        Decision::Run {
            pod,
            step,
            ceiling_users,
        } => {
            let idx = status
                .backends
                .iter()
                .position(|r| &r.pod == pod)
                .expect("plan runs recorded pods");
            let rec = status.backends[idx].clone();
            let span = tracing::info_span!("step", backend = %pod, step = %step);
            let result = run_step(s, exec, cluster, &obs, &rec, *ceiling_users, now)
                .instrument(span)
                .await;
            let after = clock();
            if matches!(result, StepResult::Advanced { .. }) {
                finished = Some((*step, plan::elapsed(&rec.step_started, after)));
            }
            let rec = &mut status.backends[idx];
            notes.extend(plan::apply_result(rec, &result, after));
            let attempts = rec.attempts;
            plan::record_finish(&mut status, pod, after);
            plan::compact(&mut status);
            match result {
                StepResult::Advanced { .. } | StepResult::Rewind { .. } => Some(Duration::ZERO),
                StepResult::Waiting { requeue, .. } => Some(requeue),
                StepResult::Failed(_) => Some(Duration::ZERO),
                StepResult::Transient { .. } => Some(plan::backoff(attempts)),
            }
        }
    };
    if let Some(target) = obs.sts.as_ref().and_then(|x| x.update_revision.as_deref()) {
        status.progress = Some(plan::progress(&status, &obs, target));
    }
    // conditions describe the state after the action
    let now = clock();
    let after_decision = plan::settled(s, &decision, &status, &obs, now);
    crate::conditions::summarize(&mut status, &after_decision, generation, now);
    Ok(Outcome {
        status,
        decision,
        notes,
        requeue,
        finished,
    })
}

/// How undoing one backend ended (abort or DBU deletion).
#[derive(Debug)]
enum Undone {
    Restored(Note),
    LeftOut(Note),
    Failed(Note),
    Nothing,
}

/// Puts one in-flight backend back, or leaves it out and says why. Safe to repeat.
async fn undo(
    s: &Settings,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    obs: &Observed,
    director: &str,
    rec: &BackendStatus,
    action: Cleanup,
) -> Undone {
    let r = Runner {
        s,
        exec,
        step: rec.step,
    };
    let action = match action {
        Cleanup::RestoreIfRunning => match r.dovecot_running(&rec.pod).await {
            Ok(true) => Cleanup::Restore,
            Ok(false) => Cleanup::LeaveOut(format!(
                "{}: Dovecot was already stopped; left out of the ring (restore by hand with doveadm director update <ip> {} and director up <ip>)",
                rec.pod, rec.original_vhosts
            )),
            Err(e) => {
                return Undone::Failed(
                    Note::warning(
                        "BackendRestoreFailed",
                        format!("{}: could not tell whether Dovecot runs: {e:?}", rec.pod),
                    )
                    .about(&rec.pod, rec.step),
                );
            }
        },
        c => c,
    };
    match action {
        Cleanup::Restore => {
            let res: Result<(), StepResult> = async {
                if rec.step == Step::RingRestore {
                    return match run_step(s, exec, cluster, obs, rec, None, Timestamp::UNIX_EPOCH)
                        .await
                    {
                        StepResult::Advanced { .. } => Ok(()),
                        other => Err(other),
                    };
                }
                let a = ip(&rec.ip, rec.step)?;
                if rec.step >= Step::StopLmtp {
                    // re-opens the LMTP listener that service stop closed
                    r.run(&rec.pod, false, s.backend.reload(), CommandKind::Plain)
                        .await?;
                }
                r.run(
                    director,
                    true,
                    s.director.director_update(a, rec.original_vhosts),
                    CommandKind::Plain,
                )
                .await?;
                r.run(
                    director,
                    true,
                    s.director.director_up(a),
                    CommandKind::Plain,
                )
                .await?;
                Ok(())
            }
            .await;
            match res {
                Ok(()) => Undone::Restored(
                    Note::normal(
                        "BackendRestored",
                        format!(
                            "{}: put back into the ring with {} vhosts",
                            rec.pod, rec.original_vhosts
                        ),
                    )
                    .about(&rec.pod, rec.step),
                ),
                Err(e) => Undone::Failed(
                    Note::warning(
                        "BackendRestoreFailed",
                        format!("{}: could not put it back: {e:?}", rec.pod),
                    )
                    .about(&rec.pod, rec.step),
                ),
            }
        }
        Cleanup::LeaveOut(m) => {
            Undone::LeftOut(Note::warning("BackendLeftOut", m).about(&rec.pod, rec.step))
        }
        Cleanup::Nothing | Cleanup::RestoreIfRunning => Undone::Nothing,
    }
}

/// What deleting the DBU does: restore backends that still run, leave stopped ones out, loudly.
pub async fn cleanup(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
) -> Result<Vec<Note>, ClusterError> {
    let obs = cluster.observe(s).await?;
    let mut notes = Vec::new();
    let Some(director) = obs.director.clone() else {
        if status.backends.iter().any(plan::active) {
            notes.push(Note::warning(
                "CleanupSkipped",
                "no Ready director: backends in flight were left as they are".into(),
            ));
        }
        return Ok(notes);
    };
    for rec in status.backends.iter().filter(|r| plan::active(r)) {
        match undo(
            s,
            exec,
            cluster,
            &obs,
            &director,
            rec,
            plan::cleanup_for(rec),
        )
        .await
        {
            Undone::Restored(n) | Undone::LeftOut(n) | Undone::Failed(n) => notes.push(n),
            Undone::Nothing => {}
        }
    }
    Ok(notes)
}

/// The dry-run decision for a DBU: observes and reads the ring (read-only doveadm commands),
/// then returns `Decision::DryRun` with the plan, or the decision that keeps it from planning,
/// and the director pod the director commands would go to.
pub async fn plan_only(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    now: Timestamp,
) -> Result<(Decision, Option<String>), ClusterError> {
    let mut obs = cluster.observe(s).await?;
    let mut s = s.clone();
    s.dry_run = true;
    let decision = decide_reading(&s, status, &mut obs, exec, now).await;
    Ok((decision, obs.director))
}

/// True when the status says a human is needed.
pub fn stalled(status: &DovecotBackendUpgradeStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == crate::conditions::STALLED && c.status == "True")
}

/// Reconciles until the rollout completes or stalls (or `limit` passes), as the controller would
/// but in one process; `on_outcome` sees every pass. Used by the local demo and the tests.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    s: &Settings,
    mut status: DovecotBackendUpgradeStatus,
    exec: &dyn PodExec,
    cluster: &dyn Cluster,
    clock: &(dyn Fn() -> Timestamp + Sync),
    limit: Duration,
    mut on_outcome: impl FnMut(&Outcome),
) -> Result<Outcome, ClusterError> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let out = reconcile_once(s, status, Some(1), exec, cluster, clock).await?;
        on_outcome(&out);
        if out.decision == Decision::Complete
            || stalled(&out.status)
            || tokio::time::Instant::now() >= end
        {
            return Ok(out);
        }
        // like the controller: the requeue, or earlier when a watched object changes
        tokio::select! {
            _ = tokio::time::sleep(out.requeue.unwrap_or(Duration::from_secs(1))) => {}
            _ = cluster.changed() => {}
        }
        status = out.status;
    }
}
