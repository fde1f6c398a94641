//! The `DovecotBackendUpgrade` custom resource: spec, status and the step enum, with no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube_derive::CustomResource;
use schemars::JsonSchema;

/// A Go-style duration (`30s`, `15m`, `1h30m`, `500ms`), as the API server checks it; the
/// operator reads it with `settings::parse_duration`.
const DURATION: &str = r"^([0-9]+(ms|s|m|h))+$";
use serde::{Deserialize, Serialize};

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
pub struct DovecotBackendUpgradeSpec {
    /// The backend StatefulSet whose pods are upgraded.
    pub backends: BackendsSpec,
    /// Where the Dovecot directors run.
    pub director: DirectorSpec,
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
    #[default]
    Wait,
    /// Move what no one would notice: users without a session at once (`director flush` when
    /// the backend has no session and no delivery in flight), IDLE and hibernated sessions
    /// `maxParallel` at a time (`director move` to the user's new hash); sessions in a command
    /// and LMTP deliveries are left to finish. Needs `verbose_proctitle = yes` on the backends
    /// to tell IDLE from a command; without it sessions are waited for as with `Wait`.
    Move,
}

/// Drain wait: poll the director until the backend has no users, up to a ceiling.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// `Wait` (default) or `Move`.
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
            strategy: DrainStrategy::Wait,
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

fn is_zero(n: &u64) -> bool {
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
    /// Limit for a deleted pod to come back Ready at the target revision.
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

/// Observed state of a rollout.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DovecotBackendUpgradeStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, in kstatus style.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Summary for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Backends at the target revision over all backends, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The StatefulSet's update revision this rollout moves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// The backend pod in flight (first one when several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The step of `current`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// Users the director still maps to `current` while it drains (`kubectl get dbu`'s Users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub drain_users: Option<u64>,
    /// One record per backend this rollout has started.
    #[serde(default)]
    pub backends: Vec<BackendStatus>,
    /// The last `mailops.io/retry` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,
    /// Seconds the last backends took from Drain to Done (newest last, at most 5): the basis of
    /// the maintenance-window prediction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "integer", "format": "int64"}))]
    pub recent_backend_seconds: Vec<u32>,
    /// Since when `spec.paused` holds in-flight backends; when the pause ends their step clocks
    /// (drain ceiling, stop and replace timeouts) move on by its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<Time>,
    /// With `spec.dryRun`: what the rollout would do, without doing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RolloutPlan>,
    /// Backend pods this DBU has registered in its director ring's lock (a Lease shared by every
    /// DBU of the ring): a backend is drained only once it is registered there, and it is
    /// released after it is back. Written after the lock, so a restart re-syncs it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub ring_held: Vec<String>,
    /// How many times the operator wrote this status. It remembers the last number it wrote
    /// and never decides from a copy with a smaller one (a watch that resumed from an old
    /// version): status is its only memory.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int64"))]
    pub write_seq: u64,
}

/// The dry-run plan: backend order, and the exact commands for the first backends.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// Outdated backends in the order they would start (at most 100 listed).
    pub order: Vec<PlannedBackend>,
    /// Outdated backends not listed in `order` because of the cap.
    #[serde(default)]
    pub more: i64,
    /// Commands of each step for the first backend of `order`; the others differ only by pod
    /// and IP.
    pub steps: Vec<PlannedStep>,
    /// Why nothing could start now, if so (guard, window, hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// One backend in the plan.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedBackend {
    /// Backend pod name.
    pub pod: String,
    /// Its pod IP: its host entry in the director ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Users mapped to it in the director.
    pub users: i64,
    /// Its vhost count in the ring, restored at the end.
    pub vhosts: i64,
}

/// One step's commands in the plan.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    pub step: Step,
    /// `director` or `backend`: the pod the commands are exec'd in.
    pub target: String,
    /// argv arrays, run without a shell; empty for steps that are Kubernetes calls or waits.
    pub commands: Vec<Vec<String>>,
    /// What the step does besides commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Rollout phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Paused,
    Completed,
    Failed,
    /// `spec.abort`: stopped, drained backends put back.
    Aborted,
    /// `spec.dryRun`: the plan is in `status.plan`; nothing ran.
    Planned,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Completed,
        Phase::Failed,
        Phase::Aborted,
        Phase::Planned,
    ];
}

/// Steps of one backend, in runbook order. The recorded step is the one intended or in progress;
/// it is advanced only after it succeeded, so a restart re-runs it (every step is idempotent).
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::Display,
)]
pub enum Step {
    Drain,
    WaitSessions,
    StopLmtp,
    StopDovecot,
    RingRemove,
    Reset,
    Replace,
    Verify,
    RingRestore,
    Soak,
    Done,
}

impl Step {
    /// Every step, in the order a backend goes through them.
    pub const ALL: &'static [Step] = <Step as strum::VariantArray>::VARIANTS;

    /// The step after this one (Done stays Done).
    pub fn next(self) -> Step {
        let i = self as usize;
        Step::ALL[(i + 1).min(Step::ALL.len() - 1)]
    }

    /// The name in status and Events (the variant's, as serde writes it).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Progress of one backend pod through the steps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// Pod name (stable across replacement in a StatefulSet).
    pub pod: String,
    /// Pod IP when the rollout of this backend started: its entry in the director ring.
    pub ip: String,
    /// Pod IP after replacement, when it differs from `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_ip: Option<String>,
    /// Revision the pod had when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    /// The step intended or in progress; `Done` when finished.
    pub step: Step,
    /// When `step` was entered, moved later by any pause since (its timeouts do not count it).
    pub step_started: Time,
    /// The vhost count the backend had in the ring before Drain; restored by RingRestore.
    // Kubernetes knows int32/int64 formats only; "uint32" draws an API server warning
    #[schemars(extend("format" = "int64"))]
    pub original_vhosts: u32,
    /// Whether the backend was `up` in the ring before Drain. False: a human had taken it out
    /// (`director down`); it is upgraded but left down. Unset in older records: up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_up: Option<bool>,
    /// Failed attempts of the current step.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub attempts: u32,
    /// UID of the pod whose Dovecot StopDovecot stopped; Replace deletes that pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_pod_uid: Option<String>,
    /// After a transient failure: not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// Set when the backend failed and halted the rollout; it stays out of the ring.
    #[serde(default)]
    pub failed: bool,
    /// The pod is gone for good (the StatefulSet was scaled below its ordinal): the record is
    /// closed; its ring entry stays as it was (drained or down), for a human to remove.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Last thing worth knowing about this backend (e.g. users kicked at the drain ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last step failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<StepError>,
    /// When the backend started (Drain); with the time it reached Done this gives its duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// Where the backend keeps the verify user's mail, as Dovecot said before it was stopped
    /// (StopLmtp); Reset refuses to delete any of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_layout: Option<MailLayout>,
    /// Time spent in steps, without pauses, failures and waits for a retry (the maintenance
    /// window's prediction uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub active_seconds: Option<u64>,
    /// WaitSessions' last look at the backend (kept once it is done, for the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
}

/// How far a backend's drain is, as WaitSessions last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainProgress {
    /// Users the director still maps to the backend.
    #[schemars(extend("format" = "int64"))]
    pub users_left: u64,
    /// Of those, users without a live session on the backend (strategy Move only; unknown
    /// with Wait, which does not look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub without_session: Option<u64>,
    /// Live sessions on the backend (`doveadm who -1`), when they were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub sessions: Option<u64>,
    /// IDLE or hibernated sessions moved to another backend so far (each one a reconnect): the
    /// sessions of the users moved with `director move`, which closes all of a user's sessions.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub sessions_moved: u64,
    /// Users moved without a session so far (by `director flush` with no session left).
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub users_moved: u64,
    /// When the drain is expected to end: the ceiling while sessions nobody may move remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_end: Option<Time>,
    /// When this was seen.
    pub observed: Time,
}

/// The mail settings of one user on one backend: `doveadm user` fields, or the raw
/// `mail_location` and `mail_home` from doveconf when Dovecot could not be asked.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailLayout {
    /// The user the settings are for (`spec.verify.user`).
    pub user: String,
    /// The user's home (`doveadm user` field `home`, or `mail_home`); may be unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// The mail location (`doveadm user` field `mail`, or `mail_location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    /// Whether the values are expanded for the user (false: doveconf's `%u` templates).
    #[serde(default)]
    pub expanded: bool,
}

/// A failed command, bounded for status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepError {
    pub step: Step,
    /// The argv that failed (empty when the failure was not a command, e.g. a timeout).
    #[serde(default)]
    pub argv: Vec<String>,
    /// The command's exit code; absent when it did not run to an exit (timeout, dropped exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// First bytes of stderr, or the failure's description.
    #[serde(default)]
    pub stderr: String,
    /// The Stalled reason when it is more specific than BackendFailed (e.g.
    /// ResetWouldDeleteMailData).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl BackendStatus {
    /// Whether the operator puts the backend `up` when it restores it: only if it was up before.
    pub fn restores_up(&self) -> bool {
        self.original_up != Some(false)
    }

    /// A record of a backend that starts now, at Drain, keeping the vhost count to restore.
    pub fn begin(
        pod: &str,
        ip: &str,
        from_revision: Option<String>,
        original_vhosts: u32,
        now: Time,
    ) -> Self {
        Self {
            pod: pod.to_string(),
            ip: ip.to_string(),
            new_ip: None,
            from_revision,
            step: Step::Drain,
            step_started: now.clone(),
            original_vhosts,
            original_up: Some(true),
            attempts: 0,
            retry_after: None,
            stopped_pod_uid: None,
            failed: false,
            removed: false,
            message: None,
            last_error: None,
            started: Some(now),
            mail_layout: None,
            active_seconds: None,
            drain: None,
        }
    }
}

impl DrainProgress {
    /// A backend's first look at its drain: nothing moved yet.
    pub fn start(users_left: u64, observed: Time) -> Self {
        Self {
            users_left,
            without_session: None,
            sessions: None,
            sessions_moved: 0,
            users_moved: 0,
            predicted_end: None,
            observed,
        }
    }
}

/// Annotation whose new value asks to retry failed backends (works from Git, unlike a status edit).
pub const RETRY_ANNOTATION: &str = "mailops.io/retry";

/// Annotation (`true`) that lets a DBU be deleted although backends it took out could not be
/// put back (e.g. no director answers): they stay as they are, and the next DBU of the
/// StatefulSet takes them over from the ring's lock.
pub const FORCE_DELETE_ANNOTATION: &str = "mailops.io/force-delete";

/// Pod template annotation of the backend StatefulSet that `spec.revision` names.
pub const REVISION_ANNOTATION: &str = "mailops.io/revision";

/// Annotation naming the target revision a human approved after the canary.
pub const APPROVE_ANNOTATION: &str = "mailops.io/approve";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_in_runbook_order_and_next_saturates() {
        let mut s = Step::Drain;
        let mut seen = vec![s];
        while s != Step::Done {
            s = s.next();
            seen.push(s);
        }
        assert_eq!(seen, Step::ALL.to_vec());
        assert_eq!(Step::Done.next(), Step::Done);
        assert!(
            Step::StopDovecot < Step::RingRemove,
            "stop before down+flush"
        );
    }

    #[test]
    fn spec_defaults_fill_in() {
        let spec: DovecotBackendUpgradeSpec = crate::fixtures::spec(serde_json::json!({}));
        assert_eq!(spec.max_unavailable, 1);
        assert_eq!(spec.drain.timeout, "15m");
        assert_eq!(spec.drain.on_timeout, DrainTimeoutAction::Proceed);
        assert!(spec.reset.enabled);
        assert_eq!(spec.verify.mailbox, "INBOX");
        assert_eq!(spec.backends.base_dir, "/run/dovecot");
        assert!(!spec.paused);
    }
}
