//! Runs argv in a pod: the `PodExec` trait and its pods/exec implementation, with bounded output.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use dbu_core::text::MAX_CAPTURE;

pub use dbu_core::machine::ExecOutput;

/// A command that could not be run to completion; always transient from the step's view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("exec timed out after {0:?}")]
    Timeout(Duration),
    #[error("exec transport failed: {0}")]
    Transport(String),
    #[error("exec ended without an exit status: {0}")]
    NoStatus(String),
    /// Not run: this process may not change anything now (it is not the leader).
    #[error("not run: {0}")]
    Fenced(String),
    /// Stopped by its bound inside the pod: it may have acted before, so its outcome is
    /// unknown until the step reads again.
    #[error("stopped in the pod after {0:?}; its outcome is read again")]
    StoppedInPod(Duration),
}

impl ExecError {
    /// Stable category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ExecError::Timeout(_) | ExecError::StoppedInPod(_) => "exec_timeout",
            ExecError::Transport(_) => "exec_transport",
            ExecError::NoStatus(_) => "exec_no_status",
            ExecError::Fenced(_) => "exec_fenced",
        }
    }
}

/// One command to run: an argv (never a shell string) in a container of a pod, within a time limit.
#[derive(Debug, Clone, Copy)]
pub struct ExecRequest<'a> {
    pub pod: &'a str,
    /// None: the pod's default container.
    pub container: Option<&'a str>,
    pub argv: &'a [String],
    pub timeout: Duration,
}

/// Runs one argv in a container of a pod, without a shell.
#[async_trait]
pub trait PodExec: Send + Sync {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError>;
}

/// Exit code from the Status the kubelet sends at the end of an exec stream.
pub fn exit_code_from_status(status: &Status) -> Result<i32, ExecError> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse().ok())
    {
        return Ok(code);
    }
    Err(ExecError::NoStatus(crate::text::bounded(
        &format!(
            "{}: {}",
            status.reason.as_deref().unwrap_or(""),
            status.message.as_deref().unwrap_or("")
        ),
        300,
    )))
}

/// Reads a whole stream, keeping at most `MAX_CAPTURE` bytes.
async fn read_bounded<R: AsyncRead + Unpin>(r: Option<R>) -> std::io::Result<String> {
    let Some(mut r) = r else {
        return Ok(String::new());
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let room = MAX_CAPTURE.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    Ok(String::from_utf8_lossy(&kept).into_owned())
}

/// Reads stdout and stderr at once (a sequential read can deadlock on a full pipe), bounded.
pub async fn read_both<O, E>(
    stdout: Option<O>,
    stderr: Option<E>,
) -> Result<(String, String), ExecError>
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
    let io = |e: std::io::Error| ExecError::Transport(e.to_string());
    Ok((out.map_err(io)?, err.map_err(io)?))
}

/// One limit around the whole exchange: connect, run, read, exit status.
pub async fn within<T>(
    timeout: Duration,
    run: impl std::future::Future<Output = Result<T, ExecError>>,
) -> Result<T, ExecError> {
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| ExecError::Timeout(timeout))?
}

/// Whether this process may still change things, asked right before every exec that may
/// (`dovecot::changes_state`): a leader deposed while a step is in flight never acts.
#[async_trait]
pub trait Fence: Send + Sync {
    /// `Err`: why not.
    async fn check(&self) -> Result<(), String>;
}

/// Runs `req` through `run` (which gets the argv to start) bounded in the pod by the
/// `timeout` binary at `in_pod_timeout` (None: by the exec's own limit only): then the exec
/// waits past the in-pod KILL, and the bound's own exit codes are `StoppedInPod`.
pub async fn bounded<F, Fut>(
    in_pod_timeout: Option<&str>,
    req: ExecRequest<'_>,
    run: F,
) -> Result<ExecOutput, ExecError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<ExecOutput, ExecError>>,
{
    let Some(timeout) = in_pod_timeout else {
        return within(req.timeout, run(req.argv.to_vec())).await;
    };
    let argv = dbu_core::dovecot::bounded(timeout, req.timeout, req.argv);
    let out = within(dbu_core::dovecot::exec_limit(req.timeout), run(argv)).await?;
    if dbu_core::dovecot::stopped_by_bound(out.exit_code) {
        return Err(ExecError::StoppedInPod(req.timeout));
    }
    Ok(out)
}

/// What stands between a step and the pods: the fence and the in-pod time bound.
#[derive(Clone, Default)]
pub struct Guard {
    /// Asked before every exec that may change something (None: no fence, one replica).
    pub fence: Option<std::sync::Arc<dyn Fence>>,
    /// Path of `timeout` in the pods' images (`--in-pod-timeout`); None: commands are bounded
    /// by the exec's own limit only, and one the operator gave up on may still run.
    pub in_pod_timeout: Option<String>,
}

/// pods/exec through the API server.
#[derive(Clone)]
pub struct KubeExec {
    pods: Api<Pod>,
    guard: Guard,
}

impl KubeExec {
    pub fn new(pods: Api<Pod>) -> Self {
        Self {
            pods,
            guard: Guard::default(),
        }
    }

    /// Every exec that may change something first asks `fence` (None: no fence, one replica).
    pub fn fenced(mut self, fence: Option<std::sync::Arc<dyn Fence>>) -> Self {
        self.guard.fence = fence;
        self
    }

    /// The fence and the in-pod bound of `guard`.
    pub fn guarded(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }
}

#[async_trait]
impl PodExec for KubeExec {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        if let Some(fence) = &self.guard.fence
            && dbu_core::dovecot::changes_state(req.argv)
        {
            fence.check().await.map_err(ExecError::Fenced)?;
        }
        let mut ap = AttachParams::default()
            .stdin(false)
            .stdout(true)
            .stderr(true);
        if let Some(c) = req.container {
            ap = ap.container(c);
        }
        let run = async |argv: Vec<String>| {
            let mut proc = self
                .pods
                .exec(req.pod, argv, &ap)
                .await
                .map_err(|e| ExecError::Transport(e.to_string()))?;
            let status = proc.take_status();
            let (stdout, stderr) = read_both(proc.stdout(), proc.stderr()).await?;
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            let _ = proc.join().await;
            let status =
                status.ok_or_else(|| ExecError::NoStatus("stream closed without status".into()))?;
            Ok(ExecOutput {
                exit_code: exit_code_from_status(&status)?,
                stdout,
                stderr,
            })
        };
        bounded(self.guard.in_pod_timeout.as_deref(), req, run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn failure(reason: &str, causes: Vec<(&str, &str)>) -> Status {
        Status {
            status: Some("Failure".into()),
            reason: Some(reason.into()),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails {
                causes: Some(
                    causes
                        .into_iter()
                        .map(|(r, m)| StatusCause {
                            reason: Some(r.into()),
                            message: Some(m.into()),
                            field: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn success() -> Status {
        Status {
            status: Some("Success".into()),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_come_from_the_exec_status() {
        assert_eq!(exit_code_from_status(&success()), Ok(0));
        assert_eq!(
            exit_code_from_status(&failure("NonZeroExitCode", vec![("ExitCode", "75")])),
            Ok(75)
        );
        assert!(exit_code_from_status(&failure("NonZeroExitCode", vec![])).is_err());
        assert!(exit_code_from_status(&failure("InternalError", vec![("ExitCode", "1")])).is_err());
    }

    #[tokio::test]
    async fn read_bounded_keeps_a_prefix_and_drains_the_rest() {
        let data = vec![b'x'; MAX_CAPTURE + 5000];
        let s = read_bounded(Some(&data[..])).await.unwrap();
        assert_eq!(s.len(), MAX_CAPTURE);
        assert_eq!(read_bounded(None::<&[u8]>).await.unwrap(), "");
    }
}
