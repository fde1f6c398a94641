//! Exec with injected faults for the lab: dropped connections and commands that hang.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use dovecot_upgrade_operator::exec::{ExecError, ExecOutput, ExecRequest, PodExec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The connection drops before the command starts.
    DropBefore,
    /// The command runs, then the connection drops before its exit status arrives.
    DropAfter,
    /// The command hangs past its timeout (a real `sleep` is run and killed at the timeout).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// Substring of the space-joined argv that triggers it.
    pub matches: String,
    pub kind: FaultKind,
    /// How many more times it fires.
    pub times: u32,
}

/// Wraps an exec and fires the first matching fault.
#[derive(Clone)]
pub struct FaultyExec<E> {
    inner: E,
    faults: Arc<Mutex<Vec<Fault>>>,
    fired: Arc<Mutex<Vec<String>>>,
}

impl<E: PodExec> FaultyExec<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            faults: Arc::default(),
            fired: Arc::default(),
        }
    }

    pub fn inject(&self, matches: &str, kind: FaultKind, times: u32) {
        self.faults.lock().unwrap().push(Fault {
            matches: matches.into(),
            kind,
            times,
        });
    }

    /// "kind: argv" of every fault that fired.
    pub fn fired(&self) -> Vec<String> {
        self.fired.lock().unwrap().clone()
    }
}

#[async_trait]
impl<E: PodExec> PodExec for FaultyExec<E> {
    async fn exec(&self, req: ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let line = req.argv.join(" ");
        let kind = {
            let mut faults = self.faults.lock().unwrap();
            faults
                .iter_mut()
                .find(|f| f.times > 0 && line.contains(&f.matches))
                .map(|f| {
                    f.times -= 1;
                    f.kind
                })
        };
        let Some(kind) = kind else {
            return self.inner.exec(req).await;
        };
        self.fired.lock().unwrap().push(format!("{kind:?}: {line}"));
        match kind {
            FaultKind::DropBefore => Err(ExecError::Transport(
                "connection reset by peer (injected)".into(),
            )),
            FaultKind::DropAfter => {
                let _ = self.inner.exec(req).await;
                Err(ExecError::Transport(
                    "connection reset by peer (injected after the command ran)".into(),
                ))
            }
            FaultKind::Hang => {
                let sleep = vec!["sleep".to_string(), "3600".to_string()];
                self.inner
                    .exec(ExecRequest {
                        argv: &sleep,
                        ..req
                    })
                    .await
            }
        }
    }
}
