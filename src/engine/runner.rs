//! Runs one argv for a step through `PodExec` and reads its exit code the way doveadm means it.

use dbu_core::api::{Step, StepError};
use dbu_core::dovecot::{self, CommandKind, Verdict};
use dbu_core::machine::judge::step_error;
use dbu_core::machine::{On, StepResult};
use dbu_core::settings::Settings;

use crate::exec::{ExecOutput, ExecRequest, PodExec};

/// Runs the commands of one step of one backend: director commands on the chosen director,
/// backend commands in the backend pod, each within the spec's command timeout.
pub(crate) struct Runner<'a> {
    pub s: &'a Settings,
    pub exec: &'a dyn PodExec,
    pub step: Step,
    pub director: &'a str,
    pub backend: &'a str,
}

impl<'a> Runner<'a> {
    /// The runner for one record's step: director commands to the observed director.
    pub fn for_record(
        s: &'a Settings,
        exec: &'a dyn PodExec,
        director: Option<&'a str>,
        rec: &'a dbu_core::api::BackendStatus,
    ) -> Self {
        Runner {
            s,
            exec,
            step: rec.step,
            director: director.unwrap_or_default(),
            backend: &rec.pod,
        }
    }

    pub fn error(&self, argv: &[String], exit_code: Option<i32>, stderr: &str) -> StepError {
        step_error(self.step, argv, exit_code, stderr)
    }

    /// Runs argv; an exec that could not complete is a transient error of the step.
    pub async fn raw(&self, on: On, argv: &[String]) -> Result<ExecOutput, StepResult> {
        let (pod, container) = match on {
            On::Director => (self.director, self.s.director_container.as_deref()),
            On::Backend => (self.backend, self.s.backend_container.as_deref()),
        };
        tracing::debug!(pod, step = %self.step, argv = ?argv, "exec");
        self.exec
            .exec(ExecRequest {
                pod,
                container,
                argv,
                timeout: self.s.command_timeout,
            })
            .await
            .map_err(|e| StepResult::Transient {
                error: self.error(argv, None, &e.to_string()),
            })
    }

    /// Runs argv; a non-zero exit that is not "already done" fails the step.
    pub async fn run(
        &self,
        on: On,
        argv: &[String],
        kind: CommandKind,
    ) -> Result<(Verdict, ExecOutput), StepResult> {
        let out = self.raw(on, argv).await?;
        match dovecot::classify(kind, out.exit_code, &out.stderr) {
            Verdict::Failed => Err(StepResult::Failed(self.error(
                argv,
                Some(out.exit_code),
                &out.stderr,
            ))),
            Verdict::Retry => Err(StepResult::Transient {
                error: self.error(argv, Some(out.exit_code), &out.stderr),
            }),
            v => Ok((v, out)),
        }
    }

    /// Whether Dovecot's master runs in the backend pod: master.pid present and its process alive.
    pub async fn dovecot_running(&self) -> Result<bool, StepResult> {
        let read = dovecot::read_master_pid(&self.s.base_dir);
        let (v, out) = self.run(On::Backend, &read, CommandKind::ReadPid).await?;
        if v == Verdict::AlreadyDone {
            return Ok(false);
        }
        let pid = dovecot::parse_pid(&out.stdout)
            .map_err(|e| StepResult::Failed(self.error(&read, Some(0), &e.to_string())))?;
        let alive = self.raw(On::Backend, &dovecot::process_alive(pid)).await?;
        Ok(alive.exit_code == 0)
    }
}

/// stdout of a read-only doveadm query on the director, or None (logged) when it failed.
pub(crate) async fn director_query(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
    argv: Vec<String>,
) -> Option<String> {
    let what = argv.join(" ");
    match exec
        .exec(ExecRequest {
            pod: director,
            container: s.director_container.as_deref(),
            argv: &argv,
            timeout: s.command_timeout,
        })
        .await
    {
        Ok(out) if out.exit_code == 0 => Some(out.stdout),
        Ok(out) => {
            tracing::warn!(director, command = %what, exit_code = out.exit_code, stderr = %dbu_core::text::bounded(&out.stderr, 300), "director query failed");
            None
        }
        Err(e) => {
            tracing::warn!(director, command = %what, error = %e, "director query exec failed");
            None
        }
    }
}

/// Whether the director ring says it is synced; unreadable counts as not synced.
pub(crate) async fn read_ring_synced(s: &Settings, exec: &dyn PodExec, director: &str) -> bool {
    director_query(s, exec, director, s.director.director_ring_status())
        .await
        .is_some_and(|out| dovecot::parse_ring_synced(&out).unwrap_or(false))
}

/// Reads `director status` from the chosen director.
pub(crate) async fn read_ring(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
) -> Option<Vec<dovecot::RingHost>> {
    let out = director_query(s, exec, director, s.director.director_status()).await?;
    dovecot::parse_director_status(&out)
        .map_err(|e| tracing::warn!(director, error = %e, "director status unparsable"))
        .ok()
}
