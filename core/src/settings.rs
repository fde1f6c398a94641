//! Turns a DBU spec into validated settings, or a permanent error that waits for a spec change.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{DovecotBackendUpgradeSpec, DrainStrategy, DrainTimeoutAction, Ordering};
use crate::dovecot::{self, Doveadm};
use crate::window::{self, Window};

/// A spec the operator cannot act on; it waits for the user to change it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> SpecError {
    SpecError {
        field,
        problem: problem.into(),
    }
}

/// Everything the step machine needs from the spec, checked once.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub stateful_set: String,
    pub backend_container: Option<String>,
    pub director_container: Option<String>,
    pub backend: Doveadm,
    pub director: Doveadm,
    pub base_dir: String,
    pub max_unavailable: usize,
    pub poll_interval: Duration,
    pub drain_timeout: Duration,
    pub on_drain_timeout: DrainTimeoutAction,
    pub drain_strategy: DrainStrategy,
    /// Strategy Move: sessions moved per poll.
    pub drain_max_parallel: usize,
    /// Empty when reset is disabled.
    pub reset: Vec<Vec<String>>,
    /// `spec.reset.commands` replaces the defaults: argv of the DBU author's choice in mail pods.
    pub custom_reset: bool,
    pub user: String,
    pub mailbox: String,
    /// The LMTP port of Verify's probe; None when the probe is off.
    pub lmtp_probe: Option<u16>,
    pub probe_timeout: Duration,
    /// Verify's IMAP probe; None when there is none.
    pub imap_probe: Option<ImapProbe>,
    /// How long a restored backend has to take traffic; None: no soak.
    pub soak: Option<Duration>,
    /// The soak's login through a director (with the IMAP probe's credentials).
    pub director_login: Option<DirectorLogin>,
    pub command_timeout: Duration,
    pub stop_timeout: Duration,
    pub replace_timeout: Duration,
    pub paused: bool,
    /// `spec.revision`: the rollout is done only once the StatefulSet's template carries it.
    pub revision: Option<String>,
    /// The ring's director selector (the DBU's `spec.director.selector` until `with_ring`),
    /// matched against the pod store.
    pub director_label_selector: LabelSelector,
    /// The DovecotRing the DBU belongs to, set by `with_ring` once resolved (None: not
    /// resolved, as in tools that run one DBU on its own).
    pub ring: Option<String>,
    /// The DBU's own `spec.director.selector`, from manifests before DovecotRing: it names the
    /// ring the operator creates for it, and the earlier releases' Lease to take over.
    pub own_director_selector: Option<LabelSelector>,
    /// The `mailops.io/retry` annotation, set by the controller (not part of the spec).
    pub retry_token: Option<String>,
    pub abort: bool,
    pub dry_run: bool,
    pub ordering: Ordering,
    pub min_available: usize,
    pub skip: Vec<String>,
    pub hold: Vec<String>,
    pub window: Option<Window>,
    pub supervised: bool,
    /// `spec.canary.approvedRevision`, or the `mailops.io/approve` annotation (set by the controller).
    pub approved_revisions: Vec<String>,
    /// Why the spec was refused (invalid, or beyond the operator's policy) while backends were
    /// in flight: these settings come from `protective`, and only the steps that protect users
    /// run (see `machine::decide`) until the spec is valid again.
    pub refused: Option<String>,
}

/// The IMAP probe, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ImapProbe {
    pub port: u16,
    pub tls: Tls,
    pub secret: String,
    pub password_key: String,
    pub username_key: Option<String>,
    pub timeout: Duration,
}

/// Where and how the soak logs in through a director.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorLogin {
    pub port: u16,
    pub tls: Tls,
}

/// TLS settings of an IMAP connection, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub mode: crate::imap::Tls,
    pub server_name: Option<String>,
    pub ca: Option<ObjectKey>,
    pub insecure_skip_verify: bool,
}

/// One key of a ConfigMap or Secret in the DBU's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

fn tls(field: &'static str, t: &crate::api::ImapTlsSpec) -> Result<Tls, SpecError> {
    use crate::api::ImapTlsMode;
    let mode = match t.mode {
        ImapTlsMode::None => crate::imap::Tls::None,
        ImapTlsMode::StartTLS => crate::imap::Tls::StartTls,
        ImapTlsMode::Implicit => crate::imap::Tls::Implicit,
    };
    let ca = match &t.ca_bundle {
        None => None,
        Some(c) => Some(match (&c.config_map, &c.secret) {
            (Some(name), None) => ObjectKey::ConfigMap {
                name: name.clone(),
                key: c.key.clone(),
            },
            (None, Some(name)) => ObjectKey::Secret {
                name: name.clone(),
                key: c.key.clone(),
            },
            _ => {
                return Err(bad(
                    field,
                    "caBundle: name exactly one of configMap and secret",
                ));
            }
        }),
    };
    if mode != crate::imap::Tls::None && !t.insecure_skip_verify {
        if ca.is_none() {
            return Err(bad(
                field,
                "TLS needs caBundle to check the certificate against (or insecureSkipVerify, labs only)",
            ));
        }
        match &t.server_name {
            Some(n) if !n.is_empty() && crate::dovecot::validate_ip(n).is_err() => {}
            _ => {
                return Err(bad(
                    field,
                    "TLS needs serverName, the DNS name the certificate is valid for",
                ));
            }
        }
    }
    Ok(Tls {
        mode,
        server_name: t.server_name.clone(),
        ca,
        insecure_skip_verify: t.insecure_skip_verify,
    })
}

fn imap_probe(p: &crate::api::ImapProbeSpec) -> Result<Option<ImapProbe>, SpecError> {
    if !p.enabled {
        return Ok(None);
    }
    let tls = tls("spec.verify.imapProbe.tls", &p.tls)?;
    if p.credentials_secret.name.is_empty() {
        return Err(bad(
            "spec.verify.imapProbe.credentialsSecret.name",
            "must name a Secret",
        ));
    }
    Ok(Some(ImapProbe {
        port: p.port.unwrap_or(if tls.mode == crate::imap::Tls::Implicit {
            993
        } else {
            143
        }),
        tls,
        secret: p.credentials_secret.name.clone(),
        password_key: p.credentials_secret.password_key.clone(),
        username_key: p.credentials_secret.username_key.clone(),
        timeout: duration(
            "spec.verify.imapProbe.timeout",
            &p.timeout,
            Duration::from_millis(100),
        )?,
    }))
}

fn director_login(
    l: &crate::api::DirectorLoginSpec,
    imap: Option<&ImapProbe>,
) -> Result<Option<DirectorLogin>, SpecError> {
    let Some(imap) = imap.filter(|_| l.enabled) else {
        return Ok(None);
    };
    Ok(Some(DirectorLogin {
        port: l.port.unwrap_or(imap.port),
        tls: match &l.tls {
            Some(t) => tls("spec.verify.soak.directorLogin.tls", t)?,
            None => imap.tls.clone(),
        },
    }))
}

/// A LabelSelector as the `labelSelector` query string (`a=b,c in (d,e),!f`).
pub fn selector_string(sel: &LabelSelector) -> Result<String, String> {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => return Err(format!("unknown selector operator {op:?}")),
        });
    }
    Ok(parts.join(","))
}

/// Parses Go-style durations made of `<n>ms|s|m|h` parts, e.g. `1h30m`, `500ms`: the CRD's
/// grammar (whole numbers, those units, no sign) checked here, the reading left to jiff's
/// friendly format (which alone would also take days, fractions and signs).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let go_style = s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || "hms".contains(c));
    if !go_style {
        return Err(format!("{s:?} is not a duration like 30s, 15m or 1h30m"));
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 30s, 15m or 1h30m: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?}: too long"))
}

fn duration(field: &'static str, s: &str, min: Duration) -> Result<Duration, SpecError> {
    let d = parse_duration(s).map_err(|e| bad(field, e))?;
    if d < min {
        return Err(bad(field, format!("{s:?} is shorter than {min:?}")));
    }
    Ok(d)
}

const SHELLS: [&str; 6] = ["sh", "bash", "dash", "zsh", "/bin/sh", "/bin/bash"];

/// Argv lists only: a single element with spaces, or `sh -c`, is a shell string in disguise.
fn check_argv(field: &'static str, argv: &[String]) -> Result<(), SpecError> {
    let Some(first) = argv.first() else {
        return Err(bad(field, "empty command"));
    };
    if first.trim().is_empty() || first.chars().any(char::is_whitespace) {
        return Err(bad(
            field,
            format!(
                "{first:?} looks like a shell string; give an argv list, e.g. [\"find\", \"/var/dovecot/vmail\", \"-mindepth\", \"1\", \"-delete\"]"
            ),
        ));
    }
    if SHELLS.contains(&first.as_str()) {
        return Err(bad(
            field,
            "commands run without a shell; do not wrap them in sh -c",
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(bad(field, "argument contains a NUL byte"));
    }
    Ok(())
}

fn check_path(field: &'static str, p: &str) -> Result<(), SpecError> {
    if !p.starts_with('/') || p.chars().any(|c| c.is_control()) {
        return Err(bad(field, format!("{p:?} must be an absolute path")));
    }
    Ok(())
}

/// Validates a spec. Everything here is also enforced by the CRD schema where it can be.
pub fn validate(spec: &DovecotBackendUpgradeSpec) -> Result<Settings, SpecError> {
    let sts = spec.backends.stateful_set.trim();
    if sts.is_empty() {
        return Err(bad("spec.backends.statefulSet", "must not be empty"));
    }
    if spec.max_unavailable < 1 {
        return Err(bad(
            "spec.maxUnavailable",
            format!("{} must be at least 1", spec.max_unavailable),
        ));
    }
    let director = match (&spec.director, &spec.ring) {
        (Some(d), _) => {
            director_selector("spec.director.selector", &d.selector)?;
            d.clone()
        }
        (None, Some(_)) => crate::api::DirectorSpec {
            selector: LabelSelector::default(),
            container: None,
            config_file: None,
        },
        (None, None) => {
            return Err(bad(
                "spec.ring",
                "name the DovecotRing (spec.ring), or the directors (spec.director) for a ring the operator finds or creates",
            ));
        }
    };
    let revision = match spec.revision.as_deref() {
        None => None,
        Some(r) if r.is_empty() || r.len() > 253 || r.chars().any(char::is_control) => {
            return Err(bad(
                "spec.revision",
                "must be 1 to 253 characters without control characters (the value of the pod template's mailops.io/revision annotation); omit it to follow the StatefulSet's revision",
            ));
        }
        Some(r) => Some(r.to_string()),
    };
    let user = dovecot::validate_user(&spec.verify.user)
        .map_err(|e| bad("spec.verify.user", e.to_string()))?;
    let mailbox = dovecot::validate_mailbox(&spec.verify.mailbox)
        .map_err(|e| bad("spec.verify.mailbox", e.to_string()))?;
    check_path("spec.backends.baseDir", &spec.backends.base_dir)?;
    for (f, c) in [
        ("spec.backends.configFile", &spec.backends.config_file),
        ("spec.director.configFile", &director.config_file),
    ] {
        if let Some(c) = c {
            check_path(f, c)?;
        }
    }
    let reset = if !spec.reset.enabled {
        Vec::new()
    } else if spec.reset.commands.is_empty() {
        dovecot::default_reset_commands()
    } else {
        for argv in &spec.reset.commands {
            check_argv("spec.reset.commands", argv)?;
        }
        spec.reset.commands.clone()
    };
    if spec.verify.lmtp_probe.enabled {
        crate::probe::recipient(user).map_err(|e| bad("spec.verify.user", e))?;
    }
    let probe_timeout = duration(
        "spec.verify.lmtpProbe.timeout",
        &spec.verify.lmtp_probe.timeout,
        Duration::from_millis(100),
    )?;
    let imap_probe = match &spec.verify.imap_probe {
        Some(p) => imap_probe(p)?,
        None => None,
    };
    let soak = if spec.verify.soak.enabled {
        Some(duration(
            "spec.verify.soak.timeout",
            &spec.verify.soak.timeout,
            Duration::from_secs(1),
        )?)
    } else {
        None
    };
    let poll_interval = duration(
        "spec.drain.pollInterval",
        &spec.drain.poll_interval,
        Duration::from_millis(100),
    )?;
    let drain_timeout = duration("spec.drain.timeout", &spec.drain.timeout, Duration::ZERO)?;
    let command_timeout = duration(
        "spec.timeouts.command",
        &spec.timeouts.command,
        Duration::from_secs(1),
    )?;
    let stop_timeout = duration(
        "spec.timeouts.stop",
        &spec.timeouts.stop,
        Duration::from_secs(1),
    )?;
    let replace_timeout = duration(
        "spec.timeouts.replace",
        &spec.timeouts.replace,
        Duration::from_secs(1),
    )?;
    if spec.min_available_backends < 1 {
        return Err(bad(
            "spec.minAvailableBackends",
            format!("{} must be at least 1", spec.min_available_backends),
        ));
    }
    let window = match &spec.maintenance_window {
        None => None,
        Some(w) => Some(Window {
            tz: window::parse_tz(&w.time_zone)
                .map_err(|e| bad("spec.maintenanceWindow.timeZone", e))?,
            start: window::parse_start(&w.start)
                .map_err(|e| bad("spec.maintenanceWindow.start", e))?,
            length: {
                let d = duration(
                    "spec.maintenanceWindow.duration",
                    &w.duration,
                    Duration::from_secs(60),
                )?;
                if d > Duration::from_secs(24 * 3600) {
                    return Err(bad(
                        "spec.maintenanceWindow.duration",
                        format!("{:?} is longer than 24h", w.duration),
                    ));
                }
                d
            },
            days: w.days.clone(),
        }),
    };
    Ok(Settings {
        stateful_set: sts.to_string(),
        backend_container: spec.backends.container.clone().filter(|c| !c.is_empty()),
        director_container: director.container.clone().filter(|c| !c.is_empty()),
        backend: Doveadm::new(spec.backends.config_file.clone()),
        director: Doveadm::new(director.config_file.clone()),
        base_dir: spec.backends.base_dir.clone(),
        max_unavailable: spec.max_unavailable as usize,
        poll_interval,
        drain_timeout,
        on_drain_timeout: spec.drain.on_timeout,
        drain_strategy: spec.drain.strategy,
        drain_max_parallel: spec.drain.max_parallel.clamp(1, 1000) as usize,
        custom_reset: spec.reset.enabled && !spec.reset.commands.is_empty(),
        reset,
        user: user.to_string(),
        mailbox: mailbox.to_string(),
        lmtp_probe: spec
            .verify
            .lmtp_probe
            .enabled
            .then_some(spec.verify.lmtp_probe.port),
        probe_timeout,
        director_login: match soak {
            Some(_) => director_login(&spec.verify.soak.director_login, imap_probe.as_ref())?,
            None => None,
        },
        imap_probe,
        soak,
        command_timeout,
        stop_timeout,
        replace_timeout,
        paused: spec.paused,
        revision,
        director_label_selector: director.selector.clone(),
        ring: None,
        own_director_selector: spec.director.as_ref().map(|d| d.selector.clone()),
        retry_token: None,
        abort: spec.abort,
        dry_run: spec.dry_run,
        ordering: spec.ordering,
        min_available: spec.min_available_backends as usize,
        skip: spec.skip.clone(),
        hold: spec.hold.clone(),
        window,
        supervised: spec.canary.supervised,
        approved_revisions: spec.canary.approved_revision.iter().cloned().collect(),
        refused: None,
    })
}

/// Settings for the steps that protect users (RingRemove, finishing a stop, re-asserting ring
/// state, abort's undo) from a spec that `validate` or `admit` refused with `problem`: what
/// those steps never read (drain, reset, verify, window, revision, ordering) is taken at its
/// default, the rest must validate. None when what they read is itself invalid: then nothing
/// can run safely. Verify's user is a placeholder when the spec's is invalid: no step that
/// reads it runs under these settings.
pub fn protective(spec: &DovecotBackendUpgradeSpec, problem: &str) -> Option<Settings> {
    let mut spec = spec.clone();
    spec.drain = Default::default();
    spec.reset = crate::api::ResetSpec {
        enabled: false,
        ..Default::default()
    };
    let user = match dovecot::validate_user(&spec.verify.user) {
        Ok(_) => spec.verify.user.clone(),
        Err(_) => "refused-spec".into(),
    };
    spec.verify = crate::api::VerifySpec {
        user,
        mailbox: "INBOX".into(),
        lmtp_probe: crate::api::LmtpProbeSpec {
            enabled: false,
            ..Default::default()
        },
        imap_probe: None,
        soak: crate::api::SoakSpec {
            enabled: false,
            ..Default::default()
        },
    };
    spec.maintenance_window = None;
    spec.revision = None;
    spec.max_unavailable = spec.max_unavailable.max(1);
    spec.min_available_backends = spec.min_available_backends.max(1);
    spec.dry_run = false;
    let mut s = validate(&spec).ok()?;
    s.refused = Some(problem.to_string());
    Some(s)
}

/// A director selector that selects something, with operators the API server knows (an
/// unknown one is a permanent spec error, not a failure at every observe).
fn director_selector(field: &'static str, sel: &LabelSelector) -> Result<(), SpecError> {
    if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    {
        return Err(bad(
            field,
            "must select something; an empty selector matches every pod",
        ));
    }
    selector_string(sel).map(|_| ()).map_err(|e| bad(field, e))
}

/// The settings within the DBU's ring: its directors, and its policy where it is stricter
/// than the DBU's (a DBU may ask for fewer out and more available, never the reverse).
pub fn with_ring(
    mut s: Settings,
    name: &str,
    ring: &crate::api::DovecotRingSpec,
) -> Result<Settings, SpecError> {
    let d = &ring.directors;
    director_selector("DovecotRing spec.directors.selector", &d.selector)?;
    if let Some(c) = &d.config_file {
        check_path("DovecotRing spec.directors.configFile", c)?;
    }
    s.director_label_selector = d.selector.clone();
    s.director_container = d.container.clone().filter(|c| !c.is_empty());
    s.director = Doveadm::new(d.config_file.clone());
    (s.max_unavailable, s.min_available) = policy(
        ring.max_unavailable,
        ring.min_available_backends,
        s.max_unavailable,
        s.min_available,
    );
    s.ring = Some(name.to_string());
    Ok(s)
}

/// The effective policy: a DBU may ask for fewer out and more available, never the reverse.
fn policy(
    ring_max_unavailable: i32,
    ring_min_available: i32,
    dbu_max_unavailable: usize,
    dbu_min_available: usize,
) -> (usize, usize) {
    (
        dbu_max_unavailable.min(ring_max_unavailable.max(1) as usize),
        dbu_min_available.max(ring_min_available.max(1) as usize),
    )
}

/// What the operator's own flags allow beyond what any DBU author may ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--allow-custom-reset-commands` (chart value `allowCustomResetCommands`): off by default,
    /// because whoever may write a DBU would otherwise run argv of their choice in the mail pods.
    pub allow_custom_reset_commands: bool,
}

/// Settings the operator's policy admits; refused ones are permanent errors of the spec.
pub fn admit(s: Settings, policy: &Policy) -> Result<Settings, SpecError> {
    if s.custom_reset && !policy.allow_custom_reset_commands {
        return Err(bad(
            "spec.reset.commands",
            "custom reset commands run in every mail backend pod, so they are refused unless the operator runs with --allow-custom-reset-commands (chart value allowCustomResetCommands=true); remove them to use the default reset, or set reset.enabled=false",
        ));
    }
    Ok(s)
}

/// The settings a reconcile runs with: the spec validated, admitted and with its annotations;
/// or, when it is refused while backends are in flight (`in_flight`), the protective ones, so
/// that a refused spec holds like a pause and never strands users on a stopped backend (a
/// retry then waits for a valid spec: the annotations are not read). Err: nothing runs.
pub fn for_dbu(
    spec: &DovecotBackendUpgradeSpec,
    policy: &Policy,
    annotations: &std::collections::BTreeMap<String, String>,
    in_flight: bool,
) -> Result<Settings, SpecError> {
    match validate(spec).and_then(|s| admit(s, policy)) {
        Ok(s) => Ok(with_annotations(s, annotations)),
        Err(e) => match protective(spec, &e.to_string()).filter(|_| in_flight) {
            Some(s) => Ok(s),
            None => Err(e),
        },
    }
}

/// Adds what the DBU's annotations say (works from Git, unlike a status edit): the retry token
/// and a canary approval.
pub fn with_annotations(
    mut s: Settings,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Settings {
    s.retry_token = annotations.get(crate::api::RETRY_ANNOTATION).cloned();
    if let Some(rev) = annotations.get(crate::api::APPROVE_ANNOTATION) {
        s.approved_revisions.push(rev.clone());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{bad_specs, spec};
    use serde_json::json;

    #[test]
    fn within_a_ring_a_dbu_asks_for_less_never_more() {
        assert_eq!(policy(1, 1, 3, 1), (1, 1));
        assert_eq!(policy(3, 1, 2, 1), (2, 1));
        assert_eq!(policy(2, 2, 2, 1), (2, 2));
        assert_eq!(policy(2, 1, 2, 4), (2, 4));
        let ring: crate::api::DovecotRingSpec = serde_json::from_value(json!({
            "directors": {"selector": {"matchLabels": {"app": "dir"}}, "container": "director"},
            "backends": [{"statefulSet": "backend"}],
            "maxUnavailable": 2
        }))
        .unwrap();
        let s = with_ring(
            validate(&spec(json!({"maxUnavailable": 3}))).unwrap(),
            "mail",
            &ring,
        )
        .unwrap();
        assert_eq!(
            (s.ring.as_deref(), s.max_unavailable, s.min_available),
            (Some("mail"), 2, 1)
        );
        assert_eq!(
            selector_string(&s.director_label_selector).unwrap(),
            "app=dir"
        );
        assert_eq!(s.director_container.as_deref(), Some("director"));
        // a DBU that names its ring needs no directors of its own; one with neither is refused
        let mut named = spec(json!({"ring": "mail"}));
        named.director = None;
        assert!(validate(&named).unwrap().own_director_selector.is_none());
        named.ring = None;
        assert_eq!(validate(&named).unwrap_err().field, "spec.ring");
    }

    #[test]
    fn the_imap_probe_and_soak_take_their_defaults() {
        let s = validate(&spec(json!({}))).unwrap();
        assert_eq!(
            (s.imap_probe.as_ref(), s.soak),
            (None, Some(Duration::from_secs(60)))
        );
        assert_eq!(
            s.director_login, None,
            "no login without the probe's credentials"
        );
        let s = validate(&spec(json!({"verify": {"user": "u", "imapProbe": {
            "credentialsSecret": {"name": "probe"},
            "tls": {"mode": "Implicit", "serverName": "imap.example.org", "caBundle": {"secret": "ca"}}
        }}}))).unwrap();
        let p = s.imap_probe.unwrap();
        assert_eq!(
            (p.port, p.tls.mode, p.password_key.as_str()),
            (993, crate::imap::Tls::Implicit, "password")
        );
        assert_eq!(
            p.tls.ca,
            Some(ObjectKey::Secret {
                name: "ca".into(),
                key: "ca.crt".into()
            })
        );
        let l = s.director_login.unwrap();
        assert_eq!(
            (l.port, l.tls),
            (993, p.tls),
            "the director login defaults to the probe's"
        );
        let s = validate(&spec(json!({"verify": {"user": "u", "imapProbe": {
            "credentialsSecret": {"name": "probe"}, "tls": {"mode": "StartTLS", "insecureSkipVerify": true}
        }, "soak": {"enabled": false}}}))).unwrap();
        assert_eq!(
            (s.imap_probe.unwrap().port, s.soak, s.director_login),
            (143, None, None)
        );
    }

    #[test]
    fn durations_parse_like_go() {
        let t = [
            ("5s", Some(5_000)),
            ("15m", Some(900_000)),
            ("1h30m", Some(5_400_000)),
            ("250ms", Some(250)),
            ("1m0s", Some(60_000)),
            ("", None),
            ("5", None),
            ("-5s", None),
            ("5d", None),
            ("s", None),
            ("1.5s", None),
            ("99999999999999999999s", None),
        ];
        for (s, want) in t {
            assert_eq!(
                parse_duration(s).ok().map(|d| d.as_millis() as u64),
                want,
                "{s:?}"
            );
        }
    }

    #[test]
    fn defaults_validate() {
        let s = validate(&spec(json!({}))).unwrap();
        assert_eq!(s.drain_timeout, Duration::from_secs(900));
        assert_eq!(s.reset, dovecot::default_reset_commands());
        assert_eq!(s.max_unavailable, 1);
    }

    #[test]
    fn bad_specs_are_permanent_errors_naming_the_field() {
        let t = bad_specs();
        for (extra, field) in t {
            let err = validate(&spec(extra.clone())).unwrap_err();
            assert_eq!(err.field, field, "{extra}");
        }
    }

    #[test]
    fn selectors_render_as_query_strings() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "director", "tier": "mail"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&sel).unwrap(),
            "app=director,tier=mail,zone in (a,b),!canary"
        );
        let bad_op: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}))
                .unwrap();
        assert!(selector_string(&bad_op).is_err());
    }

    #[test]
    fn custom_reset_commands_need_the_operator_flag() {
        let custom = validate(&spec(
            json!({"reset": {"commands": [["find", "/x", "-delete"]]}}),
        ))
        .unwrap();
        let deny = Policy::default();
        let allow = Policy {
            allow_custom_reset_commands: true,
        };
        let e = admit(custom.clone(), &deny).unwrap_err();
        assert_eq!(e.field, "spec.reset.commands");
        assert!(e.problem.contains("--allow-custom-reset-commands"));
        assert!(admit(custom, &allow).is_ok());
        // the defaults, and a disabled reset, need nothing
        for extra in [
            json!({}),
            json!({"reset": {"enabled": false, "commands": [["x"]]}}),
        ] {
            assert!(admit(validate(&spec(extra)).unwrap(), &deny).is_ok());
        }
    }

    #[test]
    fn reset_can_be_disabled_or_replaced() {
        let s = validate(&spec(json!({"reset": {"enabled": false}}))).unwrap();
        assert!(s.reset.is_empty());
        let s = validate(&spec(
            json!({"reset": {"commands": [["find", "/x", "-delete"]]}}),
        ))
        .unwrap();
        assert_eq!(s.reset, vec![vec!["find", "/x", "-delete"]]);
    }
}
