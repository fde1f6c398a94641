//! The ring's own pass, performed: read every Ready director, ask `machine::face`, run the re-asserts it names.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use dbu_core::api::{DovecotRing, DovecotRingStatus, RingHolder};
use dbu_core::dovecot::{self, Doveadm};
use dbu_core::machine::Note;
use dbu_core::machine::face::{self, BackendPod, DirectorRead, RingInput};
use dbu_core::reason::EventReason;

use crate::exec::{ExecRequest, PodExec};

/// How long one doveadm query or re-assert may take inside the director.
pub const RING_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the ring's pass sees of the cluster: its Ready director pods (name, IP; by name), the
/// pods of its StatefulSets, and why it cannot stand as declared, if so.
#[derive(Debug, Clone, Default)]
pub struct RingWorld {
    pub directors: Vec<(String, Option<String>)>,
    pub backends: Vec<BackendPod>,
    pub conflict: Option<String>,
}

/// stdout of a read-only query in a director, or None (logged).
async fn query(
    exec: &dyn PodExec,
    pod: &str,
    container: Option<&str>,
    argv: &[String],
) -> Option<String> {
    match exec
        .exec(ExecRequest {
            pod,
            container,
            argv,
            timeout: RING_COMMAND_TIMEOUT,
        })
        .await
    {
        Ok(o) if o.exit_code == 0 => Some(o.stdout),
        Ok(o) => {
            tracing::warn!(director = pod, command = %argv.join(" "), exit_code = o.exit_code, stderr = %dbu_core::text::bounded(&o.stderr, 300), "ring read failed");
            None
        }
        Err(e) => {
            tracing::warn!(director = pod, command = %argv.join(" "), error = %e, "ring read exec failed");
            None
        }
    }
}

/// What one pass of the ring found and did.
#[derive(Debug, Clone)]
pub struct RingPassed {
    /// The ring's new face (its record of who is out as it was).
    pub status: DovecotRingStatus,
    /// The Events of the re-asserts it ran, or of the counts it keeps.
    pub notes: Vec<Note>,
    /// The record of who is out with vhost counts a human set on left-out backends kept: to be
    /// written under the version read. Nothing was re-asserted in this pass (a re-assert would
    /// zero the count before the record knew it).
    pub keep: Option<Vec<RingHolder>>,
}

/// One pass: read every director, keep counts a human set on left-out backends (only that,
/// when there are any), else run the re-asserts the face asks for.
pub async fn ring_pass(
    ring: &DovecotRing,
    world: &RingWorld,
    exec: &dyn PodExec,
    now: Timestamp,
) -> RingPassed {
    let doveadm = Doveadm::new(ring.spec.directors.config_file.clone());
    let container = ring
        .spec
        .directors
        .container
        .as_deref()
        .filter(|c| !c.is_empty());
    let mut reads = Vec::new();
    for (pod, ip) in &world.directors {
        let hosts = query(exec, pod, container, &doveadm.director_status())
            .await
            .and_then(|o| dovecot::parse_director_status(&o).ok());
        let members = query(exec, pod, container, &doveadm.director_ring_status())
            .await
            .and_then(|o| {
                Some((
                    dovecot::parse_ring_synced(&o).ok()?,
                    dovecot::parse_ring_members(&o).ok()?,
                ))
            });
        reads.push(DirectorRead {
            pod: pod.clone(),
            ip: ip.clone(),
            hosts,
            ring: members,
        });
    }
    let input = RingInput {
        spec: &ring.spec,
        generation: ring.metadata.generation,
        directors: &reads,
        backends: &world.backends,
        conflict: world.conflict.as_deref(),
    };
    let prev = ring.status.clone().unwrap_or_default();
    let (st, reasserts) = face::assess(&input, &prev, now);
    if let Some((keep, notes)) = face::left_out_counts(&input, &prev) {
        return RingPassed {
            status: st,
            notes,
            keep: Some(keep),
        };
    }
    let mut notes = Vec::new();
    for ra in &reasserts {
        for argv in &ra.argv {
            let res = exec
                .exec(ExecRequest {
                    pod: &ra.director,
                    container,
                    argv,
                    timeout: RING_COMMAND_TIMEOUT,
                })
                .await;
            let failed = match res {
                Ok(o) if o.exit_code == 0 => None,
                Ok(o) => Some(format!(
                    "exit {}: {}",
                    o.exit_code,
                    dbu_core::text::bounded(&o.stderr, 300)
                )),
                Err(e) => Some(e.to_string()),
            };
            notes.push(match failed {
                None => Note::new(
                    EventReason::RingReasserted,
                    format!("{}; ran {} on {}", ra.why, argv.join(" "), ra.director),
                ),
                Some(e) => Note::new(
                    EventReason::RingReassertFailed,
                    format!(
                        "{}; {} on {} failed: {e}",
                        ra.why,
                        argv.join(" "),
                        ra.director
                    ),
                ),
            });
        }
    }
    RingPassed {
        status: st,
        notes,
        keep: None,
    }
}
