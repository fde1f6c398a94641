//! Runs argv inside a lab "pod" (a mount namespace) through nsenter, as pods/exec would in a container.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use dovecot_upgrade_operator::exec::{
    ExecError, ExecOutput, ExecRequest, PodExec, bounded, read_both,
};

/// Runs argv on this machine inside a "pod": the mount namespace of a holder process, so that
/// /etc/dovecot, /run/dovecot and /var/dovecot/vmail are the pod's own, as in a container.
/// Every command runs under coreutils' `timeout`, as the operator runs it in pods.
#[derive(Clone, Default)]
pub struct LocalExec {
    holders: Arc<RwLock<HashMap<String, u32>>>,
}

impl LocalExec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or moves) a pod to the namespace of `holder_pid`.
    pub fn set_pod(&self, pod: &str, holder_pid: u32) {
        self.holders
            .write()
            .expect("exec map poisoned")
            .insert(pod.to_string(), holder_pid);
    }

    pub fn remove_pod(&self, pod: &str) {
        self.holders.write().expect("exec map poisoned").remove(pod);
    }

    fn holder(&self, pod: &str) -> Option<u32> {
        self.holders
            .read()
            .expect("exec map poisoned")
            .get(pod)
            .copied()
    }
}

#[async_trait]
impl PodExec for LocalExec {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let pid = self
            .holder(req.pod)
            .ok_or_else(|| ExecError::Transport(format!("pod {} not found", req.pod)))?;
        let run = async |argv: Vec<String>| {
            let mut cmd = tokio::process::Command::new("nsenter");
            cmd.arg("-t")
                .arg(pid.to_string())
                .arg("-m")
                .arg("--")
                .args(argv)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|e| ExecError::Transport(e.to_string()))?;
            let (stdout, stderr) = read_both(child.stdout.take(), child.stderr.take()).await?;
            let status = child
                .wait()
                .await
                .map_err(|e| ExecError::Transport(e.to_string()))?;
            // killed by a signal: 128 + its number, as containerd reports it for an exec
            let exit_code = status
                .code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
                .ok_or_else(|| ExecError::NoStatus(format!("ended without a status: {status}")))?;
            Ok(ExecOutput {
                exit_code,
                stdout,
                stderr,
            })
        };
        bounded(Some("timeout"), req, run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn local_exec_reports_unknown_pods_as_transport_errors() {
        let e = LocalExec::new()
            .exec(ExecRequest {
                pod: "nope",
                container: None,
                argv: &["true".into()],
                timeout: Duration::from_secs(1),
            })
            .await
            .unwrap_err();
        assert!(matches!(e, ExecError::Transport(_)));
    }

    /// A command that hangs is stopped in the "pod" at its limit, long before the operator
    /// would give up, and one that ignores TERM is killed 5 s later: neither runs on.
    #[tokio::test]
    async fn a_command_is_stopped_in_the_pod_at_its_limit() {
        let exec = LocalExec::new();
        exec.set_pod("p", std::process::id());
        let run = async |argv: &[&str]| {
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let started = std::time::Instant::now();
            let r = exec
                .exec(ExecRequest {
                    pod: "p",
                    container: None,
                    argv: &argv,
                    timeout: Duration::from_secs(1),
                })
                .await;
            (r, started.elapsed())
        };
        let alive = |marker: &str| {
            std::process::Command::new("pgrep")
                .args(["-f", marker])
                .status()
                .unwrap()
                .success()
        };
        // StoppedInPod, not Timeout: the bound in the pod ended it, not the operator's wait
        let (r, _) = run(&["sleep", "3600.25"]).await;
        assert_eq!(
            r.unwrap_err(),
            ExecError::StoppedInPod(Duration::from_secs(1))
        );
        assert!(!alive("sleep 3600.25"));
        let (r, took) = run(&["sh", "-c", "trap '' TERM; sleep 3600.5"]).await;
        assert_eq!(
            r.unwrap_err(),
            ExecError::StoppedInPod(Duration::from_secs(1))
        );
        assert!(
            took >= Duration::from_secs(6),
            "{took:?}: KILL follows TERM 5 s later"
        );
        assert!(!alive("sleep 3600.5"));
        // the command's own exit codes are verdicts, as without the bound
        let (r, _) = run(&["sh", "-c", "echo out; echo err >&2; exit 75"]).await;
        let out = r.unwrap();
        assert_eq!(
            (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
            (75, "out\n", "err\n")
        );
    }
}
