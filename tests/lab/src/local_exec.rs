//! Runs argv inside a lab "pod" (a mount namespace) through nsenter, as pods/exec would in a container.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use dovecot_upgrade_operator::exec::{
    ExecError, ExecOutput, ExecRequest, PodExec, read_both, within,
};

/// Runs argv on this machine inside a "pod": the mount namespace of a holder process, so that
/// /etc/dovecot, /run/dovecot and /var/dovecot/vmail are the pod's own, as in a container.
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
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg("-t")
            .arg(pid.to_string())
            .arg("-m")
            .arg("--")
            .args(req.argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let run = async {
            let mut child = cmd
                .spawn()
                .map_err(|e| ExecError::Transport(e.to_string()))?;
            let (stdout, stderr) = read_both(child.stdout.take(), child.stderr.take()).await?;
            let status = child
                .wait()
                .await
                .map_err(|e| ExecError::Transport(e.to_string()))?;
            let exit_code = status
                .code()
                .ok_or_else(|| ExecError::NoStatus(format!("killed: {status}")))?;
            Ok(ExecOutput {
                exit_code,
                stdout,
                stderr,
            })
        };
        within(req.timeout, run).await
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
}
