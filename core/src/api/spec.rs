//! The spec of the `DovecotBackendUpgrade` resource: what to upgrade and how, as users write it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::DovecotBackendUpgradeStatus;

/// A Go-style duration (`30s`, `15m`, `1h30m`, `500ms`), as the API server checks it; the
/// operator reads it with `settings::parse_duration`.
const DURATION: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Upgrade the pods of a Dovecot backend StatefulSet to its update revision, one runbook walk at a
/// time: drain in the director ring, stop, reset caches, replace, verify, put back.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "mailops.io",
    version = "v1alpha1",
    kind = "DovecotBackendUpgrade",
    plural = "dovecotbackendupgrades",
    shortname = "dbu",
    namespaced,
    status = "DovecotBackendUpgradeStatus",
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Current","type":"string","jsonPath":".status.current"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","jsonPath":".status.drainUsers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.ring) || has(self.director)",
    "message": "name the DovecotRing (spec.ring), or the directors (spec.director) for a ring the operator finds or creates"
}]))]
pub struct DovecotBackendUpgradeSpec {
    /// The backend StatefulSet whose pods are upgraded.
    pub backends: BackendsSpec,
    /// The DovecotRing the StatefulSet belongs to (same namespace). Unset: the one ring that
    /// lists the StatefulSet in its `spec.backends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub ring: Option<String>,
    /// Where the Dovecot directors run, for manifests from before DovecotRing: when no ring
    /// lists the StatefulSet, the operator creates one from this (see docs/design.md,
    /// "Migrating to DovecotRing"). A ring's own `spec.directors` wins over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director: Option<DirectorSpec>,
    /// How many backends may be out of the ring at once. The runbook says 1.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
    /// How to wait for user sessions to leave a drained backend.
    #[serde(default)]
    pub drain: DrainSpec,
    /// The cache-reset commands run while Dovecot is stopped (runbook steps 9 and 10).
    #[serde(default)]
    pub reset: ResetSpec,
    /// The check that an upgraded backend serves mail before it goes back into the ring.
    pub verify: VerifySpec,
    /// Time limits for commands and for pod replacement.
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
    /// Stop before the next step starts; a step already running finishes.
    #[serde(default)]
    pub paused: bool,
    /// Stop the rollout and leave nothing drained: backends still running go back into the ring
    /// at their original vhost count; one whose Dovecot was already stopped stays out, named in
    /// the `Stalled` condition. Set back to false to resume.
    #[serde(default)]
    pub abort: bool,
    /// Execute nothing: write the ordered backends and the exact argv of every step into
    /// `status.plan` instead.
    #[serde(default)]
    pub dry_run: bool,
    /// Order in which outdated backends are upgraded.
    #[serde(default)]
    pub ordering: Ordering,
    /// Ring capacity guard: a backend is drained only if at least this many other backends stay
    /// up with vhosts > 0 in the director ring.
    #[serde(default = "default_min_available")]
    #[schemars(range(min = 1))]
    pub min_available_backends: i32,
    /// Backend pods this rollout leaves at their current revision. The rollout completes without
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 253)))]
    pub skip: Vec<String>,
    /// Backend pods that do not start until they are removed from this list; the others go on.
    /// A backend already in flight finishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 253)))]
    pub hold: Vec<String>,
    /// When new backends may start. Unset: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindowSpec>,
    /// Stop after the first backend (the canary) until a human approves the revision.
    #[serde(default)]
    pub canary: CanarySpec,
    /// The revision this rollout is for: the value the StatefulSet's pod template carries in its
    /// `mailops.io/revision` annotation (an image tag, a config revision), changed in the same
    /// Git commit. The DBU's generation then moves with every revision, and it is not Ready
    /// until the StatefulSet's template carries this value and every backend runs it. Unset:
    /// whatever revision the StatefulSet has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub revision: Option<String>,
}

fn default_min_available() -> i32 {
    1
}

/// Order of outdated backends.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Ordering {
    /// Fewest users mapped in the director first (least disruption), highest ordinal on ties.
    #[default]
    FewestUsers,
    /// Highest pod ordinal first, as the StatefulSet controller rolls.
    Ordinal,
}

/// A daily (or weekly) window in a time zone. A backend starts only inside it, and only if the
/// time predicted for it (the longest backend so far, or the drain ceiling plus 5 minutes before
/// the first one finished) fits in what remains. A backend in flight always finishes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowSpec {
    /// IANA time zone, e.g. `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Local start time, `HH:MM`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Length, e.g. `4h`; may run past midnight.
    #[schemars(regex(pattern = DURATION))]
    pub duration: String,
    /// Days on which the window opens (`Mon` ... `Sun`); empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// A day of the week.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Supervised mode: the first backend of each target revision is a canary.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Stop after the first backend runs the target revision until it is approved.
    #[serde(default)]
    pub supervised: bool,
    /// The revision a human approved after checking the canary: `status.targetRevision`, or
    /// `spec.revision` when that is set (a value a Git author knows in advance).
    /// The annotation `mailops.io/approve: <revision>` does the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_revision: Option<String>,
}

fn default_max_unavailable() -> i32 {
    1
}

/// The backend StatefulSet and how to reach Dovecot inside its pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendsSpec {
    /// Name of the StatefulSet (same namespace). It must use `updateStrategy: OnDelete`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub stateful_set: String,
    /// Container to exec into; may be omitted only when the pod has a single container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Dovecot `base_dir` in the backend container; `master.pid` is read from here.
    #[serde(default = "default_base_dir")]
    pub base_dir: String,
    /// Optional `doveadm -c` config path, when the image does not use /etc/dovecot/dovecot.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

fn default_base_dir() -> String {
    "/run/dovecot".into()
}

/// The director pods. Commands go to one Ready director; the ring propagates them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)",
    "message": "director.selector must select something; an empty selector matches every pod"
}]))]
pub struct DirectorSpec {
    /// Selects the director pods (same namespace). Must not match backend pods.
    pub selector: LabelSelector,
    /// Container to exec into; may be omitted only when the pod has a single container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Optional `doveadm -c` config path in the director container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

/// What to do when sessions still map to a drained backend at the drain ceiling.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DrainTimeoutAction {
    /// Go on to `director down` + `flush`, which kicks and moves the remaining users (the runbook).
    #[default]
    Proceed,
    /// Halt the rollout with the backend drained but running, for a human to decide.
    Fail,
}

/// How WaitSessions empties a drained backend.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DrainStrategy {
    /// Wait for the director's mappings to expire (the runbook), up to the ceiling.
    Wait,
    /// The default. Move what no one would notice: users without a session at once (`director
    /// flush` when the backend has no session and no delivery in flight), IDLE and hibernated
    /// sessions `maxParallel` at a time (`director move` to the user's new hash); sessions in a
    /// command and LMTP deliveries are left to finish. Needs `verbose_proctitle = yes` on the
    /// backends to tell IDLE from a command; without it sessions are waited for as with `Wait`
    /// (status and an Event say so), and users without a session are still moved.
    #[default]
    Move,
}

/// Drain wait: poll the director until the backend has no users, up to a ceiling.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// `Move` (default) or `Wait`.
    #[serde(default)]
    pub strategy: DrainStrategy,
    /// `Move` only: how many IDLE sessions are moved per poll (the way `flush --max-parallel`
    /// paces a flush), so that their reconnects do not all land at once.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 1000))]
    #[schemars(extend("format" = "int64"))]
    pub max_parallel: u32,
    /// How often to read `director status` while waiting, e.g. `5s`.
    #[serde(default = "default_poll")]
    #[schemars(regex(pattern = DURATION))]
    pub poll_interval: String,
    /// Longest wait for mappings to expire; the director's default user expiry is 15m.
    #[serde(default = "default_drain_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub timeout: String,
    /// What happens when users are still mapped at the ceiling.
    #[serde(default)]
    pub on_timeout: DrainTimeoutAction,
}

fn default_max_parallel() -> u32 {
    10
}
fn default_poll() -> String {
    "5s".into()
}
fn default_drain_timeout() -> String {
    "15m".into()
}

impl Default for DrainSpec {
    fn default() -> Self {
        Self {
            strategy: DrainStrategy::Move,
            max_parallel: default_max_parallel(),
            poll_interval: default_poll(),
            timeout: default_drain_timeout(),
            on_timeout: DrainTimeoutAction::Proceed,
        }
    }
}

/// Cache reset run in the backend container while Dovecot is confirmed stopped.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.commands) || self.commands.all(c, size(c) > 0 && !c[0].contains(' ') && !(c[0] in ['sh', 'bash', 'dash', 'zsh', '/bin/sh', '/bin/bash']))",
    "message": "reset.commands are argv lists run without a shell: [\"find\", \"/var/dovecot/vmail\", \"-mindepth\", \"1\", \"-delete\"], not \"rm -rf ...\" or sh -c"
}]))]
pub struct ResetSpec {
    /// Set to false to skip the reset step.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Commands as argv arrays, run in order without a shell. Empty means the defaults, which
    /// remove `/var/lib/dovecot/metacache/metacache-users*` and everything under
    /// `/var/dovecot/vmail`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 64), inner(length(max = 4096)))
    )]
    pub commands: Vec<Vec<String>>,
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_true() -> bool {
    true
}

impl Default for ResetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            commands: Vec::new(),
        }
    }
}

/// The runbook's verification with a test user, run on the upgraded backend itself.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// A real user (no wildcards or whitespace: doveadm `-u` takes masks).
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^*?\s]+$"))]
    pub user: String,
    /// A mailbox that must exist for that user.
    #[serde(default = "default_mailbox")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^*%?\r\n]+$"))]
    pub mailbox: String,
    /// After the doveadm checks, deliver one probe message to the user over LMTP at the new
    /// pod's own IP (not through the director); it is removed right after by its own header
    /// (`X-DBU-Probe`), as are leftovers of an interrupted probe. doveadm talks to the mail
    /// store directly, so a revision whose LMTP service is broken passes it.
    #[serde(default)]
    pub lmtp_probe: LmtpProbeSpec,
    /// After the LMTP probe, log in over IMAP at the new pod's own IP as the verify user, find
    /// the probe message by its Message-ID (or append one when the LMTP probe is off), fetch it
    /// whole and expunge only it (UID EXPUNGE), then LOGOUT. Absent: no IMAP probe (it needs
    /// the verify user's password, from `credentialsSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imap_probe: Option<ImapProbeSpec>,
    /// After RingRestore, the backend must take real traffic before the next one starts:
    /// within `timeout` the director maps users to it (`director status`), or the verify user
    /// is mapped to it (`director status <user>`), while its pod stays Ready. Otherwise it is
    /// drained again (vhost 0, down, flush) and the rollout halts with `SoakFailed`. Turn it
    /// off for a ring without traffic (a lab, a night without users).
    #[serde(default)]
    pub soak: SoakSpec,
}

/// The IMAP probe of Verify.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImapProbeSpec {
    /// Set to false to skip the probe.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The backend's IMAP port; default 143, or 993 with `tls.mode: Implicit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// How the probe secures the connection (required, so that plain text is a choice made
    /// in the manifest); the certificate is checked against `caBundle` for `serverName`,
    /// never skipped unless `insecureSkipVerify` says so.
    pub tls: ImapTlsSpec,
    /// The Secret (in the DBU's namespace) with the verify user's password. The operator reads
    /// only Secrets the chart grants by name (`probeSecrets`), never lists them.
    pub credentials_secret: CredentialsSecretRef,
    /// Limit for each exchange (connect, handshake, every reply).
    #[serde(default = "default_probe_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub timeout: String,
}

/// How the IMAP probe secures its connection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.mode == 'None' || self.insecureSkipVerify || (has(self.caBundle) && has(self.serverName))",
    "message": "TLS needs caBundle and serverName (insecureSkipVerify: true is for labs only)"
}]))]
pub struct ImapTlsSpec {
    /// StartTLS (default), Implicit (imaps) or None (plain text, labs only).
    #[serde(default)]
    pub mode: ImapTlsMode,
    /// The name the backend's certificate must be valid for (the pod IP is never in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// PEM bundle of the CAs the certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,
    /// Accept any certificate. Lab use only: it proves the TLS listener works, not who it is.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ImapTlsMode {
    /// Plain text; the password crosses the pod network in the clear. Labs only.
    None,
    /// Plain connect, STARTTLS before the login.
    #[default]
    StartTLS,
    /// TLS from the first byte (imaps).
    Implicit,
}

/// A key of a ConfigMap or a Secret in the DBU's namespace holding a PEM CA bundle.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.configMap) != has(self.secret)",
    "message": "name exactly one of configMap and secret"
}]))]
pub struct CaBundleRef {
    /// A ConfigMap holding the bundle (granted to the operator by name: chart value
    /// probeConfigMaps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: Option<String>,
    /// A Secret holding the bundle (granted by name: chart value probeSecrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret: Option<String>,
    /// The key with the PEM bundle.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// The Secret with the probe's credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret's name, in the DBU's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key with the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
    /// A key with the login name, when it is not the verify user (e.g. a master user login
    /// `user*master`); the mailbox probed is still the verify user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: Option<String>,
}

fn default_password_key() -> String {
    "password".into()
}

/// The soak after RingRestore.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoakSpec {
    /// Set to false to go on to the next backend right after RingRestore.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long the backend has to take traffic, polled every `drain.pollInterval`.
    #[serde(default = "default_soak_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub timeout: String,
    /// With an IMAP probe: while no user is mapped to the backend yet, move the verify user to
    /// it (`director move`) and log in as that user through a Ready director, which must send
    /// the login there. So a quiet ring soaks too, and the path users take is the one proven.
    #[serde(default)]
    pub director_login: DirectorLoginSpec,
}

impl Default for SoakSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: default_soak_timeout(),
            director_login: DirectorLoginSpec::default(),
        }
    }
}

/// The soak's login through the director.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectorLoginSpec {
    /// Used only with `imapProbe` (it needs the credentials).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The directors' IMAP port; default: `imapProbe`'s port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// How to secure it; default: `imapProbe.tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ImapTlsSpec>,
}

impl Default for DirectorLoginSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
            tls: None,
        }
    }
}

fn default_soak_timeout() -> String {
    "1m".into()
}

/// The LMTP probe of Verify.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LmtpProbeSpec {
    /// Set to false to skip the probe (Verify then runs the doveadm checks only).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The backend's LMTP port.
    #[serde(default = "default_lmtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Limit for each exchange (connect, every reply).
    #[serde(default = "default_probe_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub timeout: String,
}

impl Default for LmtpProbeSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            port: default_lmtp_port(),
            timeout: default_probe_timeout(),
        }
    }
}

fn default_lmtp_port() -> u16 {
    24
}

fn default_probe_timeout() -> String {
    "10s".into()
}

fn default_mailbox() -> String {
    "INBOX".into()
}

/// Time limits.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// Limit for one exec; director commands can block 20-30 s while a ring member is dead.
    #[serde(default = "default_command_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub command: String,
    /// Limit for Dovecot's master to exit after `doveadm stop`.
    #[serde(default = "default_stop_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub stop: String,
    /// Limit for a deleted pod to come back Ready at the target revision, beyond the old pod's
    /// termination grace period (the pod template's `terminationGracePeriodSeconds`, or the
    /// grace its deletion gave it, the longer): a Dovecot that takes its whole grace to stop
    /// does not use up this limit.
    #[serde(default = "default_replace_timeout")]
    #[schemars(regex(pattern = DURATION))]
    pub replace: String,
}

fn default_command_timeout() -> String {
    "60s".into()
}
fn default_stop_timeout() -> String {
    "60s".into()
}
fn default_replace_timeout() -> String {
    "10m".into()
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        Self {
            command: default_command_timeout(),
            stop: default_stop_timeout(),
            replace: default_replace_timeout(),
        }
    }
}
