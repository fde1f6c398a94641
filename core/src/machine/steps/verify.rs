//! Verify: the replaced backend serves the verify user's mail (doveadm), and, when configured,
//! accepts a probe message over LMTP and an IMAP login at its own IP.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use super::credentials::imap_inputs;
use super::{
    Cleanup, Cx, GateInput, Gated, Halt, Intent, On, Reads, RingState, Run, StepResult, StepSpec,
    judge,
};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let s = cx.s;
    let b = &s.backend;
    let (user, mb) = (&s.user, &s.mailbox);
    let probing = s.lmtp_probe.is_some() || s.imap_probe.is_some();
    // the pod Replace saw, before its first command and again after its last: exec goes by
    // name, so a pod recreated in between would be verified in part
    cx.bound_pod()?;
    // the probe message's token is written before it is delivered: only that message is ever
    // expunged (another DBU's probe to the same user, or the user's own mail, never)
    let token = match (&cx.rec.probe_token, probing) {
        (Some(t), _) => t.clone(),
        (None, true) => {
            let t = crate::probe::token(&cx.rec.pod, cx.now.as_millisecond());
            return Ok(StepResult::Intend(Intent::Probe(t)));
        }
        (None, false) => String::new(),
    };
    // the leftover of a probe that was interrupted goes first, so it is never counted
    let expunge = b.expunge_probe(user, &token);
    if probing {
        cx.run(On::Backend, &expunge, CommandKind::Plain)?;
    }
    let list = b.mailbox_list(user);
    let (_, out) = cx.run(On::Backend, &list, CommandKind::Plain)?;
    judge::verify_listed(user, mb, &out.stdout)
        .map_err(|m| StepResult::Failed(cx.error(&list, Some(0), &m)))?;
    let status = b.mailbox_status(user, mb);
    let (_, out) = cx.run(On::Backend, &status, CommandKind::Plain)?;
    let n = judge::verify_count(mb, &out.stdout)
        .map_err(|m| StepResult::Failed(cx.error(&status, Some(0), &m)))?;
    cx.run(On::Backend, &b.fetch_text(user, mb), CommandKind::Plain)?;
    if !probing {
        cx.bound_pod()?;
        return Ok(judge::verified(user, mb, n, &[]));
    }
    let probed = probes(cx, &token)?;
    // the probe mail goes also when a probe failed halfway (best effort then: the failure is
    // what the record must say, and the next Verify expunges first)
    let cleanup = match cx.run(On::Backend, &expunge, CommandKind::Plain) {
        Err(Halt::Need(action)) => return Err(Halt::Need(action)),
        ended => ended,
    };
    let done = probed?;
    cleanup?;
    cx.bound_pod()?;
    Ok(judge::verified(user, mb, n, &done))
}

/// Verify's protocol probes at the replaced pod's own IP, never through the director: LMTP
/// delivers one probe message, IMAP logs in, finds, fetches and expunges it (or appends its
/// own when LMTP is off). `Ok(Err)`: the probe's failure; `Ok(Ok)`: what each proved.
fn probes(cx: &mut Cx<'_>, token: &str) -> Run<Result<Vec<String>, StepResult>> {
    let s = cx.s;
    let rec = cx.rec;
    let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
    let date = cx.now.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string();
    let message = crate::probe::message(&s.user, token, &date);
    let mut done = Vec::new();
    if let Some(port) = s.lmtp_probe {
        if let Err(f) = cx.lmtp_probe(ip, port, &message)? {
            return Ok(Err(judge::probe_failed(
                "LMTP",
                &format!("{ip}:{port}"),
                &f.command,
                &f.reply,
                f.transient,
            )));
        }
        done.push(format!("LMTP on port {port} accepted a probe message"));
    }
    if let Some(p) = &s.imap_probe {
        let addr = format!("{ip}:{}", p.port);
        let fail = |command: &str, reply: &str, transient: bool| {
            judge::probe_failed("IMAP", &addr, command, reply, transient)
        };
        let append = s.lmtp_probe.is_none().then_some(message);
        let (target, input) = match imap_inputs(cx, &p.tls, ip, p.port, token.to_string(), append)?
        {
            Ok(x) => x,
            Err((what, transient)) => return Ok(Err(fail("credentials", &what, transient))),
        };
        if let Err(f) = cx.imap_probe(target, input)? {
            return Ok(Err(fail(&f.command, &f.reply, f.transient)));
        }
        done.push(format!(
            "IMAP on port {} ({:?}) logged in and found, fetched and expunged the probe message",
            p.port, p.tls.mode
        ));
    }
    Ok(Ok(done))
}

fn undo(rec: &BackendStatus) -> Cleanup {
    super::left_out_stopped(rec)
}

/// It acts on the replaced pod: that must be Ready.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    super::pod_ready(g)
}

/// Unverified: out of the ring.
const RING: RingState = RingState::DOWN;

/// The pod its commands run in, for the plan.
const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
fn note(s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    let mut probes = Vec::new();
    if let Some(port) = s.lmtp_probe {
        probes.push(format!(
            "one probe message over LMTP to the new pod's IP, port {port}"
        ));
    }
    if let Some(p) = &s.imap_probe {
        probes.push(format!(
            "an IMAP login ({:?}) at the new pod's IP, port {}, as {}: find, fetch and expunge the probe message",
            p.tls, p.port, s.user
        ));
    }
    (!probes.is_empty()).then(|| {
        format!(
            "then {} (probe mail removed by its {} header)",
            probes.join(", then "),
            crate::probe::PROBE_HEADER
        )
    })
}

/// The step as the machine sees it.
pub const STEP: StepSpec = StepSpec {
    run,
    gate,
    reads: Reads::NONE,
    ring: |_| RING,
    undo,
    target: TARGET,
    note,
};
