//! The one generic driver: performs whatever action a step script names and feeds the output
//! back, until the script has its result. No step is named here (`machine::steps` has them).

use dbu_core::api::{BackendStatus, Step};
use dbu_core::machine::steps::{self, Action, EdgeError, Input, Next, Output};
use dbu_core::machine::{Cleanup, Observed, On, StepResult, Undone};
use dbu_core::settings::Settings;

use super::cluster::{Clock, Cluster, Probes};
use crate::exec::{ExecRequest, PodExec};

/// Everything a script's actions are performed with.
pub(crate) struct StepContext<'a> {
    pub s: &'a Settings,
    pub exec: &'a dyn PodExec,
    pub cluster: &'a dyn Cluster,
    pub probes: &'a dyn Probes,
    pub obs: &'a Observed,
    pub clock: Clock<'a>,
}

/// The backend and step an action is performed for (in its log line).
#[derive(Clone, Copy)]
struct For<'a> {
    pod: &'a str,
    step: Option<Step>,
}

/// Runs a script to its result: `resume` runs it once over the transcript so far; each action
/// it names is performed and its output appended.
async fn drive<T>(
    cx: &StepContext<'_>,
    at: For<'_>,
    mut resume: impl FnMut(&[(Action, Output)]) -> Next<T>,
) -> T {
    let mut seen: Vec<(Action, Output)> = Vec::new();
    loop {
        match resume(&seen) {
            Next::Done(t) => return t,
            Next::Act(action) => {
                let output = perform(cx, at, &action).await;
                seen.push((action, output));
            }
        }
    }
}

/// Performs one action. Failures of the edge come back as outputs for the script to judge.
async fn perform(cx: &StepContext<'_>, at: For<'_>, action: &Action) -> Output {
    let s = cx.s;
    let pod = at.pod;
    let text = |e: super::cluster::ClusterError| EdgeError {
        transient: e.transient(),
        message: e.to_string(),
    };
    match action {
        Action::Exec { on, argv } => {
            let (pod, container) = match on {
                On::Director => (
                    cx.obs.director.as_deref().unwrap_or_default(),
                    s.director_container.as_deref(),
                ),
                On::Backend => (pod, s.backend_container.as_deref()),
            };
            // every command a script runs, by backend and step (`tests/plan_is_what_runs.rs`
            // compares them with the plan)
            tracing::debug!(target: "dbu::exec", backend = at.pod, step = ?at.step, pod, argv = ?argv, "exec");
            let out = cx
                .exec
                .exec(ExecRequest {
                    pod,
                    container,
                    argv,
                    timeout: s.command_timeout,
                })
                .await;
            if let Ok(o) = &out
                && o.exit_code != 0
            {
                tracing::debug!(pod, exit_code = o.exit_code, stderr = %dbu_core::text::bounded(&o.stderr, 300), "exec exited non-zero");
            }
            // an exec that did not complete is the transport's, always worth another try
            Output::Exec(out.map_err(|e| EdgeError {
                transient: true,
                message: e.to_string(),
            }))
        }
        Action::ReadPod => Output::Pod(cx.cluster.fresh_pod(s, pod).await.map_err(text)),
        Action::ReadRevision => {
            Output::Revision(cx.cluster.fresh_update_revision(s).await.map_err(text))
        }
        Action::DeletePod { uid } => {
            Output::Deleted(cx.cluster.delete_pod(pod, uid).await.map_err(text))
        }
        Action::ReleasePod { uid, at } => {
            Output::Released(cx.cluster.release_pod(pod, uid, *at).await.map_err(text))
        }
        Action::ReadKey(key) => Output::Key(cx.cluster.read_key(key).await.map_err(text)),
        Action::LmtpProbe {
            ip,
            port,
            user,
            message,
        } => Output::Probe(
            cx.probes
                .lmtp(ip, *port, s.probe_timeout, user, message)
                .await,
        ),
        Action::ImapProbe { target, input } => {
            Output::Probe(cx.probes.imap(target, input.as_ref().clone()).await)
        }
    }
}

/// Runs the recorded step of one backend. Every step is safe to run again after a crash.
pub(crate) async fn run_step(
    cx: &StepContext<'_>,
    rec: &BackendStatus,
    ceiling_users: Option<u64>,
) -> StepResult {
    let input = Input {
        s: cx.s,
        rec,
        obs: cx.obs,
        now: (cx.clock)(),
        ceiling_users,
    };
    let at = For {
        pod: &rec.pod,
        step: Some(rec.step),
    };
    drive(cx, at, |seen| steps::step(input, seen)).await
}

/// Undoes one backend (abort or DBU deletion) as its step says. Safe to repeat.
pub(crate) async fn undo(cx: &StepContext<'_>, rec: &BackendStatus, action: Cleanup) -> Undone {
    let input = Input {
        s: cx.s,
        rec,
        obs: cx.obs,
        now: (cx.clock)(),
        ceiling_users: None,
    };
    let at = For {
        pod: &rec.pod,
        step: None,
    };
    drive(cx, at, |seen| steps::undo_step(input, &action, seen)).await
}

/// Before a backend is drained: whether what Verify's IMAP probe (and the soak's login) read
/// can be read.
pub(crate) async fn probe_credentials(cx: &StepContext<'_>) -> Result<(), String> {
    let now = (cx.clock)();
    let at = For {
        pod: "",
        step: None,
    };
    drive(cx, at, |seen| {
        steps::credentials_check(cx.s, cx.obs, now, seen)
    })
    .await
}
