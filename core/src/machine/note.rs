//! An Event to publish (the controller) or print (the local demo), typed by its reason.

use super::decision::Decision;
use crate::api::{BackendStatus, Step};
use crate::reason::{EventReason, StallReason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning or Normal; follows from the reason.
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
    /// The backend pod it is about (the Event's related object).
    pub pod: Option<String>,
    /// The step it is about (the Event's action).
    pub step: Option<Step>,
}

impl Note {
    pub fn new(reason: EventReason, message: impl Into<String>) -> Self {
        Self {
            warning: reason.is_warning(),
            reason,
            message: message.into(),
            pod: None,
            step: None,
        }
    }

    /// Ties the note to a backend and step, so that Events of different steps stay apart.
    pub fn about(mut self, pod: &str, step: Step) -> Self {
        self.pod = Some(pod.to_string());
        self.step = Some(step);
        self
    }
}

/// The one-line story of a failed backend, for the Stalled condition and the Warning event; a
/// relocation's says what the node's drain waits for and how to let it go on.
pub fn failure_message(rec: &BackendStatus) -> String {
    let story = failure_story(rec);
    match &rec.relocation {
        Some(why) => format!(
            "{story}; it was relocating for node maintenance ({why}), and the node's drain waits (the ring's budget refuses the eviction of every backend) until it is back: fix the cause, then set a new mailops.io/retry on the DBU, or uncordon the node"
        ),
        None => story,
    }
}

fn failure_story(rec: &BackendStatus) -> String {
    let reason = rec
        .last_error
        .as_ref()
        .and_then(|e| e.reason.as_deref())
        .and_then(StallReason::from_name);
    match &rec.last_error {
        // the backend refused a protocol probe: protocol, address, command, reply
        Some(e) if reason == Some(StallReason::ProbeFailed) => format!(
            "backend {} ({}) failed at step {}: {} probe at {} refused {}: {}; it stays out of the director ring",
            rec.pod,
            rec.ip,
            e.step,
            e.argv.first().map_or("", String::as_str),
            e.argv.get(1).map_or("", String::as_str),
            e.argv.get(2).map_or("", String::as_str),
            e.stderr.trim()
        ),
        Some(e) if reason == Some(StallReason::SoakFailed) => format!(
            "backend {} ({}) failed at step {}: {}; it stays out of the director ring",
            rec.pod,
            rec.ip,
            e.step,
            e.stderr.trim()
        ),
        // a refusal: the command was judged, not run
        Some(e) if e.reason.is_some() => format!(
            "backend {} ({}) stopped at step {}: command {:?} was not run: {}; it stays out of the director ring",
            rec.pod,
            rec.ip,
            e.step,
            e.argv.join(" "),
            e.stderr.trim()
        ),
        Some(e) => format!(
            "backend {} ({}) failed at step {}: {} {:?} {}: {}; it stays out of the director ring",
            rec.pod,
            rec.ip,
            e.step,
            if e.argv.first().is_some_and(|a| a == "LMTP" || a == "IMAP") {
                "probe"
            } else {
                "command"
            },
            e.argv.join(" "),
            e.exit_code
                .map_or("did not complete".to_string(), |c| format!("exited {c}")),
            e.stderr.trim()
        ),
        None => format!(
            "backend {} ({}) failed at step {}",
            rec.pod, rec.ip, rec.step
        ),
    }
}

/// The Stalled decision for a failed backend: its error's own reason when it has one (e.g.
/// ResetWouldDeleteMailData), else BackendFailed.
pub fn failed_stall(rec: &BackendStatus) -> Decision {
    let reason = rec
        .last_error
        .as_ref()
        .and_then(|e| e.reason.as_deref())
        .and_then(StallReason::from_name)
        .unwrap_or(StallReason::BackendFailed);
    Decision::Stall {
        reason,
        message: failure_message(rec),
    }
}
