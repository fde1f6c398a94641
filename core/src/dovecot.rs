//! doveadm argv builders, input validation, and parsers for doveadm output and exit codes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// The vhost count a director gives every host it (re)learns from `director_mail_servers`:
/// a restart or reload of a ring's only (or every) director resets each host to it, up
/// (dovecot-2.3-findings).
pub const DEFAULT_VHOSTS: u32 = 100;

/// Exit codes doveadm 2.3 uses (sysexits): see dovecot-2.3-findings.md section 4.
pub const EX_OK: i32 = 0;
pub const EX_USAGE: i32 = 64;
pub const EX_NOUSER: i32 = 67;
pub const EX_NOTFOUND: i32 = 68;
pub const EX_TEMPFAIL: i32 = 75;

/// A value from the spec or the cluster that cannot be passed to doveadm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{0:?} is not an IP address")]
    Ip(String),
    #[error(
        "user {0:?} is empty, longer than 255 bytes, starts with '-' (doveadm would read it as an option), or contains a wildcard, whitespace or control character"
    )]
    User(String),
    #[error(
        "mailbox {0:?} is empty, longer than 255 bytes, starts with '-' (doveadm would read it as an option), or contains a wildcard or control character"
    )]
    Mailbox(String),
    #[error("vhost count {0} is out of range (0..=10000)")]
    Vhosts(u32),
}

/// Output that does not parse as doveadm produced it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse doveadm {what} output: {detail}")]
pub struct ParseError {
    pub what: &'static str,
    pub detail: String,
}

/// Only literal IP addresses: doveadm resolves names, and a name could update several hosts.
pub fn validate_ip(s: &str) -> Result<IpAddr, ArgError> {
    s.parse::<IpAddr>().map_err(|_| ArgError::Ip(s.to_string()))
}

/// `-u` takes a mask (`*`, `?`), so a user id with wildcards would address many users.
pub fn validate_user(s: &str) -> Result<&str, ArgError> {
    let bad = s.is_empty()
        || s.len() > 255
        || s.starts_with('-')
        || s.chars()
            .any(|c| c == '*' || c == '?' || c.is_whitespace() || c.is_control());
    if bad {
        Err(ArgError::User(s.to_string()))
    } else {
        Ok(s)
    }
}

/// Mailbox names are patterns for `mailbox status`; wildcards would match nothing or many.
pub fn validate_mailbox(s: &str) -> Result<&str, ArgError> {
    let bad = s.is_empty()
        || s.len() > 255
        || s.starts_with('-')
        || s.chars()
            .any(|c| c == '*' || c == '%' || c == '?' || c.is_control());
    if bad {
        Err(ArgError::Mailbox(s.to_string()))
    } else {
        Ok(s)
    }
}

/// The director refuses counts it cannot hold ("vhost count too large"); keep them sane.
pub fn validate_vhosts(n: u32) -> Result<u32, ArgError> {
    if n <= 10_000 {
        Ok(n)
    } else {
        Err(ArgError::Vhosts(n))
    }
}

/// Builds doveadm argv for one Dovecot instance (`-c` when the config is not the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doveadm {
    pub config_file: Option<String>,
}

fn s(x: &str) -> String {
    x.to_string()
}

impl Doveadm {
    pub fn new(config_file: Option<String>) -> Self {
        Self { config_file }
    }

    fn cmd(&self, json: bool, rest: &[&str]) -> Vec<String> {
        let mut v = vec![s("doveadm")];
        if let Some(c) = &self.config_file {
            v.push(s("-c"));
            v.push(c.clone());
        }
        if json {
            v.push(s("-f"));
            v.push(s("json"));
        }
        v.extend(rest.iter().map(|x| s(x)));
        v
    }

    /// `doveadm -f json director status`: every host with vhosts, state and mapped users.
    /// (Read-only: see `changes_state`.)
    pub fn director_status(&self) -> Vec<String> {
        self.cmd(true, &["director", "status"])
    }
    /// `doveadm -f json director status <user>`: where the user is mapped now (a read-only
    /// lookup: it creates no mapping).
    pub fn director_user_status(&self, user: &str) -> Vec<String> {
        self.cmd(true, &["director", "status", user])
    }
    /// `doveadm -f json director map <ip>`: the users the director maps to that host, named
    /// by iterating the userdb (`<unknown>` where it cannot); costly on a large userdb.
    pub fn director_map(&self, ip: IpAddr) -> Vec<String> {
        self.cmd(true, &["director", "map", &ip.to_string()])
    }
    /// `director move <user> <ip>`: maps the user to that host (kicking its sessions); the
    /// soak moves only the verify user, a probe account.
    pub fn director_move(&self, user: &str, ip: IpAddr) -> Vec<String> {
        self.cmd(false, &["director", "move", user, &ip.to_string()])
    }
    /// `doveadm -f json director ring status`: this director's view of the ring's sync state.
    pub fn director_ring_status(&self) -> Vec<String> {
        self.cmd(true, &["director", "ring", "status"])
    }
    pub fn director_update(&self, ip: IpAddr, vhosts: u32) -> Vec<String> {
        self.cmd(
            false,
            &["director", "update", &ip.to_string(), &vhosts.to_string()],
        )
    }
    pub fn director_up(&self, ip: IpAddr) -> Vec<String> {
        self.cmd(false, &["director", "up", &ip.to_string()])
    }
    pub fn director_down(&self, ip: IpAddr) -> Vec<String> {
        self.cmd(false, &["director", "down", &ip.to_string()])
    }
    /// Without `-F`: kicks and re-assigns the host's users (`-F` silently loses live sessions).
    pub fn director_flush(&self, ip: IpAddr) -> Vec<String> {
        self.cmd(false, &["director", "flush", &ip.to_string()])
    }
    /// `add` of an existing host updates its vhost count (exit 0), so it is idempotent.
    pub fn director_add(&self, ip: IpAddr, vhosts: u32) -> Vec<String> {
        self.cmd(
            false,
            &["director", "add", &ip.to_string(), &vhosts.to_string()],
        )
    }
    pub fn director_remove(&self, ip: IpAddr) -> Vec<String> {
        self.cmd(false, &["director", "remove", &ip.to_string()])
    }
    pub fn service_stop_lmtp(&self) -> Vec<String> {
        self.cmd(false, &["service", "stop", "lmtp"])
    }
    pub fn reload(&self) -> Vec<String> {
        self.cmd(false, &["reload"])
    }
    pub fn stop(&self) -> Vec<String> {
        self.cmd(false, &["stop"])
    }
    /// `who -1` is the only `who` whose JSON is valid with several users.
    pub fn who(&self) -> Vec<String> {
        self.cmd(true, &["who", "-1"])
    }
    /// `doveadm -f json who -1 <user>`: one user's sessions (the user is checked: no mask).
    pub fn who_user(&self, user: &str) -> Vec<String> {
        self.cmd(true, &["who", "-1", user])
    }
    /// `doveadm -f json process status`: every process of the instance with its service name
    /// and whether it is idle (`idle_start` 0: it serves a client).
    pub fn process_status(&self) -> Vec<String> {
        self.cmd(true, &["process", "status"])
    }
    pub fn mailbox_list(&self, user: &str) -> Vec<String> {
        self.cmd(true, &["mailbox", "list", "-u", user])
    }
    /// Names the mailbox: `"*"` prints nothing with exit 0 for a never-used account.
    pub fn mailbox_status(&self, user: &str, mailbox: &str) -> Vec<String> {
        self.cmd(
            true,
            &["mailbox", "status", "-u", user, "messages", mailbox],
        )
    }
    /// Removes the probe message this operator delivered as `token` (by its Message-ID), in
    /// every mailbox of `user` (exit 0 also when there is none): never another message, not
    /// even another DBU's probe to the same user.
    pub fn expunge_probe(&self, user: &str, token: &str) -> Vec<String> {
        self.cmd(
            false,
            &[
                "expunge",
                "-u",
                user,
                "mailbox",
                "*",
                "header",
                "Message-ID",
                &crate::imap::message_id(token),
            ],
        )
    }
    /// `doveadm -f json user <user>`: the userdb fields, with `home` and `mail` expanded.
    /// Needs the auth service, so it is read while Dovecot runs.
    pub fn user_lookup(&self, user: &str) -> Vec<String> {
        self.cmd(true, &["user", user])
    }
    /// `doveconf -h base_dir`: where Dovecot keeps master.pid and its sockets.
    pub fn doveconf_base_dir(&self) -> Vec<String> {
        let mut v = vec![s("doveconf")];
        if let Some(c) = &self.config_file {
            v.push(s("-c"));
            v.push(c.clone());
        }
        v.extend([s("-h"), s("base_dir")]);
        v
    }
    /// `doveconf -h mail_location mail_home`: the templates, readable with Dovecot stopped.
    pub fn doveconf_mail(&self) -> Vec<String> {
        let mut v = vec![s("doveconf")];
        if let Some(c) = &self.config_file {
            v.push(s("-c"));
            v.push(c.clone());
        }
        v.extend([s("-h"), s("mail_location"), s("mail_home")]);
        v
    }
    /// The runbook's `fetch -u <uid> text all`, limited to the verify mailbox.
    pub fn fetch_text(&self, user: &str, mailbox: &str) -> Vec<String> {
        self.cmd(
            false,
            &["fetch", "-u", user, "text", "mailbox", mailbox, "all"],
        )
    }
}

/// Argv that reads the master PID file; exit 1 (no such file) means Dovecot is stopped.
pub fn read_master_pid(base_dir: &str) -> Vec<String> {
    vec![
        s("cat"),
        format!("{}/master.pid", base_dir.trim_end_matches('/')),
    ]
}

/// Argv that prints the titles of these processes, each after a `==> /proc/N/cmdline <==`
/// header (head, not a shell glob: no shell runs). A process gone by then is an error line on
/// stderr and exit 1; the others are still printed.
pub fn process_titles(pids: &[u32]) -> Vec<String> {
    let mut v = vec![s("head"), s("-v"), s("-c"), s("512")];
    v.extend(pids.iter().map(|p| format!("/proc/{p}/cmdline")));
    v
}

/// Argv that exits 0 while the process exists (a stale PID file survives a crash).
pub fn process_alive(pid: u32) -> Vec<String> {
    vec![s("test"), s("-e"), format!("/proc/{pid}")]
}

/// The runbook's steps 9 and 10 without a shell: `rm -f .../metacache-users*` and
/// `rm -rf /var/dovecot/vmail/*`. Searching from /var/lib/dovecot keeps the first a no-op
/// (exit 0) where metacache does not exist, as in community Dovecot 2.3.
pub fn default_reset_commands() -> Vec<Vec<String>> {
    vec![
        vec![
            s("find"),
            s("/var/lib/dovecot"),
            s("-path"),
            s("/var/lib/dovecot/metacache/metacache-users*"),
            s("-delete"),
        ],
        vec![
            s("find"),
            s("/var/dovecot/vmail"),
            s("-mindepth"),
            s("1"),
            s("-delete"),
        ],
    ]
}

/// One host row of `director status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingHost {
    pub ip: String,
    pub vhosts: u32,
    pub up: bool,
    /// User mappings, not live sessions.
    pub users: u64,
}

fn json_records(
    what: &'static str,
    stdout: &str,
) -> Result<Vec<BTreeMap<String, String>>, ParseError> {
    let t = stdout.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(t).map_err(|e| ParseError {
        what,
        detail: e.to_string(),
    })
}

fn field<'a>(
    what: &'static str,
    rec: &'a BTreeMap<String, String>,
    key: &str,
) -> Result<&'a str, ParseError> {
    rec.get(key).map(String::as_str).ok_or_else(|| ParseError {
        what,
        detail: format!("record without {key:?}"),
    })
}

fn num<T: std::str::FromStr>(what: &'static str, key: &str, v: &str) -> Result<T, ParseError> {
    v.parse().map_err(|_| ParseError {
        what,
        detail: format!("{key} {v:?} is not a number"),
    })
}

/// Parses `doveadm -f json director status` (all values are strings).
pub fn parse_director_status(stdout: &str) -> Result<Vec<RingHost>, ParseError> {
    const W: &str = "director status";
    // a row read in place (only the four fields a decision reads, borrowed where doveadm
    // escaped nothing): every pass reads every director's list, a map per row cost the most
    #[derive(serde::Deserialize)]
    struct Row<'a> {
        #[serde(rename = "mail server ip", borrow)]
        ip: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        vhosts: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        state: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        users: std::borrow::Cow<'a, str>,
    }
    let t = stdout.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = serde_json::from_str(t).map_err(|e| ParseError {
        what: W,
        detail: e.to_string(),
    })?;
    rows.into_iter()
        .map(|r| {
            let state = r.state.as_ref();
            if state != "up" && state != "down" {
                return Err(ParseError {
                    what: W,
                    detail: format!("unknown state {state:?}"),
                });
            }
            Ok(RingHost {
                ip: r.ip.into_owned(),
                vhosts: num(W, "vhosts", &r.vhosts)?,
                up: state == "up",
                users: num(W, "users", &r.users)?,
            })
        })
        .collect()
}

/// The host `doveadm -f json director status <user>` says the user is mapped to now (None:
/// `n/a`, not mapped).
pub fn parse_user_current(stdout: &str) -> Result<Option<String>, ParseError> {
    const W: &str = "director status <user>";
    let recs = json_records(W, stdout)?;
    let Some(r) = recs.first() else {
        return Err(ParseError {
            what: W,
            detail: "no record".into(),
        });
    };
    let current = field(W, r, "status")?;
    Ok(validate_ip(current).ok().map(|ip| ip.to_string()))
}

/// Where `doveadm -f json director status <user>` says the user is mapped now and where its
/// hash points (after `update 0` of its host: another host); None where it says none.
pub fn parse_user_placement(stdout: &str) -> Result<(Option<String>, Option<String>), ParseError> {
    const W: &str = "director status <user>";
    let recs = json_records(W, stdout)?;
    let r = recs.first().ok_or_else(|| ParseError {
        what: W,
        detail: "no record".into(),
    })?;
    let ip = |k: &str| -> Result<Option<String>, ParseError> {
        Ok(validate_ip(field(W, r, k)?).ok().map(|ip| ip.to_string()))
    };
    Ok((ip("status")?, ip("hashed")?))
}

/// Whether `director ring status` says `ring synced` on its `self` row. Other self states are
/// `ring handshaking` and `ring syncing - last sync N secs ago`.
pub fn parse_ring_synced(stdout: &str) -> Result<bool, ParseError> {
    const W: &str = "director ring status";
    let rows = json_records(W, stdout)?;
    let me = rows
        .iter()
        .find(|r| r.get("type").map(String::as_str) == Some("self"))
        .ok_or_else(|| ParseError {
            what: W,
            detail: "no row of type self".into(),
        })?;
    Ok(field(W, me, "status")? == "ring synced")
}

/// The directors one director's `director ring status` names, by IP: `connected` when it has a
/// connection to it (type `left` or `right`) or is itself (`self`); a known director without a
/// connection has an empty type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    pub ip: String,
    pub connected: bool,
}

/// Every director `director ring status` lists (a director appears once per connection).
pub fn parse_ring_members(stdout: &str) -> Result<Vec<RingMember>, ParseError> {
    const W: &str = "director ring status";
    let mut members: Vec<RingMember> = Vec::new();
    for r in json_records(W, stdout)? {
        let ip = field(W, &r, "director ip")?.to_string();
        let connected = !field(W, &r, "type")?.is_empty();
        match members.iter_mut().find(|m| m.ip == ip) {
            Some(m) => m.connected |= connected,
            None => members.push(RingMember { ip, connected }),
        }
    }
    Ok(members)
}

/// Number of connections in `doveadm -f json who -1` (one record per connection).
pub fn parse_who_connections(stdout: &str) -> Result<usize, ParseError> {
    Ok(json_records("who -1", stdout)?.len())
}

/// Whether an argv the operator runs may change something (the director ring, a service,
/// files, mail): every command but the known reads. Unknown is a change, so that a fence
/// against a deposed leader fails closed.
pub fn changes_state(argv: &[String]) -> bool {
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["cat" | "test" | "head" | "doveconf", ..] => false,
        // the reset guard's read-only twin of a delete
        ["find", rest @ ..] => !rest.contains(&"-print") || rest.contains(&"-delete"),
        ["doveadm", rest @ ..] => {
            let mut verb = rest;
            // global options before the verb: -c <file>, -f <format>
            while let ["-c" | "-f", _, tail @ ..] = verb {
                verb = tail;
            }
            !matches!(
                verb,
                ["director", "status", ..]
                    | ["director", "ring", "status", ..]
                    | ["who", ..]
                    | ["process", "status", ..]
                    | ["user", ..]
                    | ["mailbox", "list" | "status", ..]
                    | ["fetch", ..]
            )
        }
        _ => true,
    }
}

/// How long after the in-pod bound's TERM its KILL follows (`timeout -k`): a command that
/// ignores TERM is gone this long later.
pub const IN_POD_KILL_AFTER: Duration = Duration::from_secs(5);

/// `argv` bounded in time inside the pod by the coreutils (or toybox, busybox >= 1.30)
/// `timeout` at path `timeout`: TERM after `limit` (whole seconds, rounded up), KILL
/// `IN_POD_KILL_AFTER` later. A command whose exec the operator gave up on then cannot land
/// later, beside the retry (the operator waits `exec_limit(limit)`, longer than both).
pub fn bounded(timeout: &str, limit: Duration, argv: &[String]) -> Vec<String> {
    let secs = limit.as_millis().div_ceil(1000).max(1);
    let mut out = vec![
        timeout.to_string(),
        "-k".into(),
        IN_POD_KILL_AFTER.as_secs().to_string(),
        secs.to_string(),
    ];
    out.extend(argv.iter().cloned());
    out
}

/// How long the operator waits for a command `bounded` by `limit` in the pod: past the in-pod
/// KILL, so that when it gives up the command is no longer running.
pub fn exec_limit(limit: Duration) -> Duration {
    Duration::from_millis(limit.as_millis().div_ceil(1000).max(1) as u64 * 1000)
        + IN_POD_KILL_AFTER
        + Duration::from_secs(5)
}

/// Whether an exit code of a `bounded` command is its bound's: 124 (TERM sent at the limit)
/// or 137 (KILL after it). Its outcome is unknown (it may have acted before it was stopped),
/// so it is a timeout to re-read after, never a verdict on the command.
pub fn stopped_by_bound(exit_code: i32) -> bool {
    matches!(exit_code, 124 | 137)
}

/// One connection of `doveadm -f json who -1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// `imap`, `pop3`, ...
    pub service: String,
    pub pid: u32,
}

/// The connections of `doveadm -f json who -1` (one record per connection).
pub fn parse_who_sessions(stdout: &str) -> Result<Vec<Session>, ParseError> {
    const W: &str = "who -1";
    json_records(W, stdout)?
        .iter()
        .map(|r| {
            Ok(Session {
                user: field(W, r, "username")?.to_string(),
                service: field(W, r, "service")?.to_string(),
                pid: num(W, "pid", field(W, r, "pid")?)?,
            })
        })
        .collect()
}

/// The users of `doveadm -f json director map <ip>` whose names the userdb gave (not
/// `<unknown>`, and names doveadm takes as a user).
pub fn parse_director_map(stdout: &str) -> Result<Vec<String>, ParseError> {
    const W: &str = "director map";
    let mut users = Vec::new();
    for r in json_records(W, stdout)? {
        let user = field(W, &r, "user")?;
        if validate_user(user).is_ok() && user != "<unknown>" {
            users.push(user.to_string());
        }
    }
    Ok(users)
}

/// One process of `doveadm -f json process status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The service: `imap`, `imap-hibernate`, `lmtp`, ...
    pub service: String,
    pub pid: u32,
    /// `idle_start` is 0 while the process serves a client.
    pub busy: bool,
}

pub fn parse_process_status(stdout: &str) -> Result<Vec<Process>, ParseError> {
    const W: &str = "process status";
    json_records(W, stdout)?
        .iter()
        .map(|r| {
            Ok(Process {
                service: field(W, r, "name")?.to_string(),
                pid: num(W, "pid", field(W, r, "pid")?)?,
                busy: field(W, r, "idle_start")? == "0",
            })
        })
        .collect()
}

/// Process titles from `head -v` of `/proc/N/cmdline` files: pid to title (the NULs that
/// separate argv are spaces; a title set by `verbose_proctitle` is one string).
pub fn parse_process_titles(stdout: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for part in stdout.split("==> /proc/").skip(1) {
        let Some((pid, rest)) = part.split_once("/cmdline <==\n") else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let title: String = rest
            .trim_end_matches('\n')
            .chars()
            .map(|c| if c == '\0' { ' ' } else { c })
            .collect();
        out.insert(pid, title.trim().to_string());
    }
    out
}

/// Every stderr line of `find` says a starting point does not exist.
pub fn find_only_missing(stderr: &str) -> bool {
    let mut lines = stderr.lines().filter(|l| !l.trim().is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|l| l.starts_with("find: ") && l.ends_with("No such file or directory"))
}

/// Connections in a `who -1` output cut at the capture bound: at least the records begun.
pub fn count_cut_who(stdout: &str) -> usize {
    stdout.matches("\"username\":").count().max(1)
}

/// `home` and `mail` of `doveadm -f json user <user>` (field/value records).
pub fn parse_user_lookup(user: &str, stdout: &str) -> Result<crate::api::MailLayout, ParseError> {
    const W: &str = "user";
    let mut layout = crate::api::MailLayout {
        user: user.to_string(),
        home: None,
        mail: None,
        expanded: true,
    };
    for r in json_records(W, stdout)? {
        let value = field(W, &r, "value")?.to_string();
        match field(W, &r, "field")? {
            "home" => layout.home = Some(value),
            "mail" => layout.mail = Some(value),
            _ => {}
        }
    }
    Ok(layout)
}

/// The two lines of `doveconf -h mail_location mail_home` (either may be empty).
pub fn parse_doveconf_mail(user: &str, stdout: &str) -> crate::api::MailLayout {
    let mut lines = stdout.lines().map(str::trim);
    let mut next = || lines.next().filter(|l| !l.is_empty()).map(str::to_string);
    let mail = next();
    let home = next();
    crate::api::MailLayout {
        user: user.to_string(),
        home,
        mail,
        expanded: false,
    }
}

/// Mailbox names from `doveadm -f json mailbox list`.
pub fn parse_mailbox_list(stdout: &str) -> Result<Vec<String>, ParseError> {
    const W: &str = "mailbox list";
    json_records(W, stdout)?
        .iter()
        .map(|r| field(W, r, "mailbox").map(str::to_string))
        .collect()
}

/// (mailbox, messages) pairs from `doveadm -f json mailbox status ... messages <box>`.
pub fn parse_mailbox_messages(stdout: &str) -> Result<Vec<(String, u64)>, ParseError> {
    const W: &str = "mailbox status";
    json_records(W, stdout)?
        .iter()
        .map(|r| {
            Ok((
                field(W, r, "mailbox")?.to_string(),
                num(W, "messages", field(W, r, "messages")?)?,
            ))
        })
        .collect()
}

/// The PID in master.pid.
pub fn parse_pid(stdout: &str) -> Result<u32, ParseError> {
    num("master.pid", "pid", stdout.trim())
}

/// What a finished command means for the step that ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It did what was asked.
    Ok,
    /// Nothing to do: the state asked for was already there (safe to go on).
    AlreadyDone,
    /// It failed; the step fails.
    Failed,
    /// It could not complete for a reason that passes (the director ring could not sync within
    /// the director's own 30 s limit): retried with backoff like a dropped connection.
    Retry,
}

/// Commands whose exit codes carry more than success/failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// `doveadm stop`: 75 "not running" means already stopped.
    Stop,
    /// `service stop lmtp`: 75 with the master socket refused means Dovecot is down, so LMTP is too.
    ServiceStop,
    /// `director remove`: 68 means the host is already gone.
    DirectorRemove,
    /// `cat master.pid`: 1 means no PID file, so Dovecot is stopped.
    ReadPid,
    /// A reset command: `find` on a folder that does not exist has nothing to delete (the
    /// runbook's `rm -rf` succeeds there too).
    Reset,
    /// Anything else: 0 or failure.
    Plain,
}

/// Maps exit code and stderr to a verdict, from the behaviour observed on 2.3.19.
pub fn classify(kind: CommandKind, exit_code: i32, stderr: &str) -> Verdict {
    if exit_code == EX_OK {
        return Verdict::Ok;
    }
    // a director command that waited for the ring longer than the director allows (30 s):
    // nothing was refused, the ring was busy; the command is idempotent and is retried
    if exit_code == EX_TEMPFAIL && stderr.contains("Ring sync timed out") {
        return Verdict::Retry;
    }
    match kind {
        CommandKind::Stop if exit_code == EX_TEMPFAIL && stderr.contains("is not running") => {
            Verdict::AlreadyDone
        }
        CommandKind::ServiceStop
            if exit_code == EX_TEMPFAIL
                && (stderr.contains("/master) failed") || stderr.contains("is not running")) =>
        {
            Verdict::AlreadyDone
        }
        // a config without the service (e.g. a revision without LMTP): nothing to stop
        CommandKind::ServiceStop
            if exit_code == EX_NOTFOUND && stderr.contains("Unknown service") =>
        {
            Verdict::AlreadyDone
        }
        CommandKind::DirectorRemove if exit_code == EX_NOTFOUND => Verdict::AlreadyDone,
        CommandKind::ReadPid if exit_code == 1 => Verdict::AlreadyDone,
        CommandKind::Reset if exit_code == 1 && find_only_missing(stderr) => Verdict::AlreadyDone,
        _ => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    // Captured from doveadm 2.3.19.1 (see dovecot-2.3-findings.md and the lab runs in tests/).
    const STATUS_3: &str = r#"[{"mail server ip":"127.0.0.11","tag":"","vhosts":"100","state":"up","state-changed":"-","users":"5"},{"mail server ip":"127.0.0.12","tag":"","vhosts":"100","state":"up","state-changed":"-","users":"5"},{"mail server ip":"127.0.0.13","tag":"","vhosts":"100","state":"up","state-changed":"-","users":"5"}]"#;
    const STATUS_DOWN: &str = r#"[{"mail server ip":"127.0.0.11","tag":"","vhosts":"100","state":"down","state-changed":"2026-11-28 19:33:02","users":"5"}]"#;
    const STATUS_ADDED: &str = r#"[{"mail server ip":"127.0.0.11","tag":"","vhosts":"100","state":"up","state-changed":"-","users":"1"},{"mail server ip":"127.0.0.21","tag":"","vhosts":"70","state":"up","state-changed":"-","users":"0"}]"#;
    const WHO_1: &str = r#"[{"username":"user5","service":"imap","pid":"10823","ip":"127.0.0.1"},{"username":"user1","service":"imap","pid":"10820","ip":"127.0.0.1"}]"#;
    const MAILBOXES: &str =
        r#"[{"mailbox":"Drafts"},{"mailbox":"Sent"},{"mailbox":"Trash"},{"mailbox":"INBOX"}]"#;
    const INBOX_4: &str = r#"[{"mailbox":"INBOX","messages":"4"}]"#;

    #[test]
    fn user_status_says_where_a_user_is_mapped() {
        // verbatim from Dovecot 2.3.19 (findings section 4)
        assert_eq!(
            parse_user_current(
                r#"[{"status":"n/a","expires":"-1","hashed":"127.0.0.11","initial-config":"127.0.0.11"}]"#
            ),
            Ok(None)
        );
        assert_eq!(
            parse_user_current(
                r#"[{"status":"127.0.0.11","expires":"1795894268","hashed":"127.0.0.11","initial-config":"127.0.0.11"}]"#
            ),
            Ok(Some("127.0.0.11".into()))
        );
        assert!(parse_user_current("[]").is_err());
    }

    #[test]
    fn director_status_parses_real_output() {
        let hosts = parse_director_status(STATUS_3).unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(
            hosts[0],
            RingHost {
                ip: "127.0.0.11".into(),
                vhosts: 100,
                up: true,
                users: 5
            }
        );
        let down = parse_director_status(STATUS_DOWN).unwrap();
        assert!(!down[0].up);
        assert_eq!(parse_director_status(STATUS_ADDED).unwrap()[1].vhosts, 70);
    }

    #[test]
    fn ring_status_reads_the_self_row() {
        // verbatim from dovecot-2.3-findings.md §5 (one director), then a ring of 2 mid-sync
        let one = r#"[{"director ip":"127.0.0.10","port":"9090","type":"self","last failed":"never","status":"ring synced","ping ms":"0","input":"-","output":"-","buffered":"-","buffered peak":"-","last read":"-","last write":"-"}]"#;
        assert_eq!(parse_ring_synced(one), Ok(true));
        let syncing = r#"[{"director ip":"127.0.1.9","port":"9090","type":"","last failed":"never","status":"","ping ms":"-","input":"-","output":"-","buffered":"-","buffered peak":"-","last read":"-","last write":"-"},{"director ip":"127.0.1.10","port":"9090","type":"self","last failed":"never","status":"ring syncing - last sync 3 secs ago","ping ms":"0","input":"-","output":"-","buffered":"-","buffered peak":"-","last read":"-","last write":"-"}]"#;
        assert_eq!(parse_ring_synced(syncing), Ok(false));
        assert!(parse_ring_synced("[]").is_err());
        assert!(parse_ring_synced("not json").is_err());
        // the ring of 2 from the findings (tab there, the same records as JSON): the other
        // director twice (left and right connections), then self
        let two = r#"[{"director ip":"127.0.1.9","port":"9090","type":"right","last failed":"never","status":"synced","ping ms":"0","input":"91","output":"371","buffered":"0","buffered peak":"141","last read":"2026-11-28 19:38:48","last write":"2026-11-28 19:38:48"},{"director ip":"127.0.1.9","port":"9090","type":"left","last failed":"never","status":"synced","ping ms":"0","input":"550","output":"92","buffered":"0","buffered peak":"18","last read":"2026-11-28 19:38:48","last write":"2026-11-28 19:38:48"},{"director ip":"127.0.1.10","port":"9090","type":"self","last failed":"never","status":"ring synced","ping ms":"0","input":"-","output":"-","buffered":"-","buffered peak":"-","last read":"-","last write":"-"}]"#;
        let m = |ip: &str, connected| RingMember {
            ip: ip.into(),
            connected,
        };
        assert_eq!(
            parse_ring_members(two),
            Ok(vec![m("127.0.1.9", true), m("127.0.1.10", true)])
        );
        // mid-sync: a known director without a connection
        assert_eq!(
            parse_ring_members(syncing),
            Ok(vec![m("127.0.1.9", false), m("127.0.1.10", true)])
        );
    }

    #[test]
    fn director_status_handles_empty_and_error_forms() {
        // handled errors print "[]"; Fatal errors print nothing (exit code tells the rest)
        assert_eq!(parse_director_status("[]").unwrap(), vec![]);
        assert_eq!(parse_director_status("").unwrap(), vec![]);
        for bad in [
            "mail server ip tag vhosts",
            r#"[{"mail server ip":"1.2.3.4","vhosts":"x","state":"up","users":"0"}]"#,
            r#"[{"mail server ip":"1.2.3.4","vhosts":"1","state":"weird","users":"0"}]"#,
            r#"[{"vhosts":"1","state":"up","users":"0"}]"#,
        ] {
            assert!(parse_director_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_parsers_read_real_output() {
        assert_eq!(parse_who_connections(WHO_1).unwrap(), 2);
        assert_eq!(parse_who_connections("[]").unwrap(), 0);
        assert_eq!(
            parse_mailbox_list(MAILBOXES).unwrap(),
            vec!["Drafts", "Sent", "Trash", "INBOX"]
        );
        assert_eq!(
            parse_mailbox_messages(INBOX_4).unwrap(),
            vec![("INBOX".to_string(), 4)]
        );
        assert_eq!(parse_pid("8170\n").unwrap(), 8170);
        assert!(parse_pid("").is_err());
    }

    #[test]
    fn only_the_known_reads_leave_state_alone() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        for d in [
            Doveadm::new(None),
            Doveadm::new(Some("/etc/dovecot/d.conf".into())),
        ] {
            let reads = [
                d.director_status(),
                d.director_user_status("u"),
                d.director_ring_status(),
                d.who(),
                d.process_status(),
                d.mailbox_list("u"),
                d.mailbox_status("u", "INBOX"),
                d.user_lookup("u"),
                d.doveconf_mail(),
                d.fetch_text("u", "INBOX"),
                read_master_pid("/run/dovecot"),
                process_alive(42),
            ];
            for argv in &reads {
                assert!(!changes_state(argv), "{argv:?}");
            }
            let changes = [
                d.director_update(ip, 0),
                d.director_down(ip),
                d.director_up(ip),
                d.director_flush(ip),
                d.director_add(ip, 100),
                d.director_remove(ip),
                d.director_move("u", ip),
                d.service_stop_lmtp(),
                d.reload(),
                d.stop(),
                d.expunge_probe("u", "t"),
            ];
            for argv in &changes {
                assert!(changes_state(argv), "{argv:?}");
            }
        }
        let words = |w: &[&str]| w.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // the reset guard's read-only twin, and the delete it guards
        assert!(!changes_state(&words(&[
            "find",
            "/v",
            "-mindepth",
            "1",
            "-print",
            "-quit"
        ])));
        assert!(changes_state(&words(&[
            "find",
            "/v",
            "-mindepth",
            "1",
            "-delete"
        ])));
        // anything unknown is a change: the fence fails closed
        assert!(changes_state(&words(&["rm", "-rf", "/x"])));
        assert!(changes_state(&words(&[
            "doveadm", "-f", "json", "kick", "u"
        ])));
        assert!(changes_state(&[]));
    }

    #[test]
    fn director_map_names_the_users_the_userdb_gave() {
        // captured from doveadm 2.3.19.1 (dovecot-2.3-findings.md)
        let two = r#"[{"user":"user3","hash":"2458352375","mail server ip":"127.0.0.13","expire time":"2026-11-28 19:30:57"},{"user":"user2","hash":"2119751227","mail server ip":"127.0.0.12","expire time":"2026-11-28 19:30:57"}]"#;
        assert_eq!(parse_director_map(two).unwrap(), ["user3", "user2"]);
        assert!(parse_director_map("[]").unwrap().is_empty());
        assert!(parse_director_map("").unwrap().is_empty());
        // a userdb that cannot list its users names none; names doveadm would misread are
        // never returned
        let unknown = r#"[{"user":"<unknown>","hash":"617210206","mail server ip":"127.0.0.11","expire time":"2026-11-28 19:50:20"},{"user":"-A","hash":"1","mail server ip":"127.0.0.11","expire time":"-"}]"#;
        assert!(parse_director_map(unknown).unwrap().is_empty());
        assert!(parse_director_map("user\thash").is_err());
    }

    #[test]
    fn a_bounded_command_is_killed_in_the_pod_before_the_operator_gives_up() {
        let argv: Vec<String> = ["doveadm", "director", "update", "10.0.0.1", "100"]
            .map(String::from)
            .to_vec();
        let table = [
            (
                Duration::from_secs(40),
                "timeout -k 5 40 doveadm director update 10.0.0.1 100",
                50,
            ),
            (
                Duration::from_millis(1500),
                "timeout -k 5 2 doveadm director update 10.0.0.1 100",
                12,
            ),
            (
                Duration::ZERO,
                "timeout -k 5 1 doveadm director update 10.0.0.1 100",
                11,
            ),
        ];
        for (limit, want, operator_waits) in table {
            assert_eq!(bounded("timeout", limit, &argv).join(" "), want);
            let waits = exec_limit(limit);
            assert_eq!(waits, Duration::from_secs(operator_waits));
            // past the in-pod TERM and KILL
            assert!(waits > limit.max(Duration::from_secs(1)) + IN_POD_KILL_AFTER);
        }
        // the bound's own exit codes are an unknown outcome; the command's own are verdicts
        for (code, bound) in [
            (124, true),
            (137, true),
            (0, false),
            (75, false),
            (68, false),
        ] {
            assert_eq!(stopped_by_bound(code), bound, "{code}");
        }
    }

    #[test]
    fn argv_builders_pass_values_as_whole_elements() {
        let d = Doveadm::new(None);
        let ip = validate_ip("127.0.0.11").unwrap();
        let table: Vec<(Vec<String>, &str)> = vec![
            (d.director_status(), "doveadm -f json director status"),
            (
                d.director_update(ip, 0),
                "doveadm director update 127.0.0.11 0",
            ),
            (d.director_up(ip), "doveadm director up 127.0.0.11"),
            (d.director_down(ip), "doveadm director down 127.0.0.11"),
            (d.director_flush(ip), "doveadm director flush 127.0.0.11"),
            (d.director_add(ip, 50), "doveadm director add 127.0.0.11 50"),
            (d.director_remove(ip), "doveadm director remove 127.0.0.11"),
            (d.service_stop_lmtp(), "doveadm service stop lmtp"),
            (d.stop(), "doveadm stop"),
            (d.who(), "doveadm -f json who -1"),
            (d.mailbox_list("u1"), "doveadm -f json mailbox list -u u1"),
            (
                d.mailbox_status("u1", "INBOX"),
                "doveadm -f json mailbox status -u u1 messages INBOX",
            ),
            (
                d.fetch_text("u1", "INBOX"),
                "doveadm fetch -u u1 text mailbox INBOX all",
            ),
        ];
        for (argv, want) in table {
            assert_eq!(argv.join(" "), want);
        }
        let c = Doveadm::new(Some("/etc/x/dovecot.conf".into()));
        assert_eq!(
            c.director_status(),
            vec![
                "doveadm",
                "-c",
                "/etc/x/dovecot.conf",
                "-f",
                "json",
                "director",
                "status"
            ]
        );
        // a mailbox with a space stays one argv element
        assert_eq!(d.mailbox_status("u1", "My Box").last().unwrap(), "My Box");
        assert_eq!(
            read_master_pid("/run/dovecot/"),
            vec!["cat", "/run/dovecot/master.pid"]
        );
        assert_eq!(process_alive(42), vec!["test", "-e", "/proc/42"]);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        for ip in [
            "",
            "1",
            "localhost",
            "127.0.0.1; rm -rf /",
            "127.0.0.1 ",
            "300.1.1.1",
        ] {
            assert!(validate_ip(ip).is_err(), "{ip:?}");
        }
        assert!(validate_ip("::1").is_ok());
        for u in [
            "",
            "user*",
            "us?r",
            "a b",
            "a\nb",
            "a\tb",
            "-A",
            &"x".repeat(256),
        ] {
            assert!(validate_user(u).is_err(), "{u:?}");
        }
        assert!(validate_user("probe@example.org").is_ok());
        for m in ["", "*", "IN%", "a\nb", "-x"] {
            assert!(validate_mailbox(m).is_err(), "{m:?}");
        }
        assert!(validate_mailbox("Sent Items").is_ok());
        assert!(validate_vhosts(10_001).is_err());
        assert_eq!(validate_vhosts(100), Ok(100));
    }

    #[test]
    fn exit_codes_classify_as_observed() {
        use CommandKind::*;
        let t = [
            (Stop, 0, "", Verdict::Ok),
            (
                Stop,
                75,
                "Fatal: Dovecot is not running (read from /run/dovecot/master.pid)",
                Verdict::AlreadyDone,
            ),
            (Stop, 75, "Fatal: something else", Verdict::Failed),
            (
                Plain,
                75,
                "Error: 127.0.0.11: Ring sync timed out",
                Verdict::Retry,
            ),
            (Plain, 1, "Error: Ring sync timed out", Verdict::Failed),
            (
                ServiceStop,
                75,
                "Fatal: net_connect_unix(/run/dovecot/master) failed: Connection refused",
                Verdict::AlreadyDone,
            ),
            // a revision without LMTP (protocols = imap): there is no LMTP to stop
            (
                ServiceStop,
                68,
                "Error: Unknown service: lmtp",
                Verdict::AlreadyDone,
            ),
            (ServiceStop, 68, "Error: something else", Verdict::Failed),
            (
                Reset,
                1,
                "find: '/var/dovecot/vmail': No such file or directory\n",
                Verdict::AlreadyDone,
            ),
            (
                Reset,
                1,
                "find: '/var/dovecot/vmail/x': Permission denied\n",
                Verdict::Failed,
            ),
            (
                DirectorRemove,
                68,
                "Error: 127.0.0.21: doesn't exist",
                Verdict::AlreadyDone,
            ),
            (DirectorRemove, 75, "Fatal: x", Verdict::Failed),
            (
                ReadPid,
                1,
                "cat: /run/dovecot/master.pid: No such file",
                Verdict::AlreadyDone,
            ),
            (ReadPid, 2, "", Verdict::Failed),
            (
                Plain,
                75,
                "Error: 127.0.0.99: doesn't exist",
                Verdict::Failed,
            ),
            (Plain, 0, "", Verdict::Ok),
        ];
        for (kind, code, err, want) in t {
            assert_eq!(classify(kind, code, err), want, "{kind:?} {code} {err}");
        }
    }

    #[test]
    fn default_reset_has_no_shell_and_no_glob_expansion_needed() {
        for argv in default_reset_commands() {
            assert_eq!(argv[0], "find");
            assert!(argv.iter().all(|a| !a.contains(';') && !a.contains('&')));
        }
    }
}
