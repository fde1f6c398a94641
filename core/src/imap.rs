//! The IMAP probe's dialogue with the new backend: the commands in order, the server's lines, and what each answer must be.
//!
//! doveadm reads the mail store directly; a revision whose IMAP listener, login process, auth
//! or TLS certificate is broken passes it. The probe logs in as the verify user at the new
//! pod's own IP, finds the probe message (delivered over LMTP, or appended here when there is no
//! LMTP probe) by its Message-ID, fetches it whole and removes only it (`UID EXPUNGE`, so no
//! message the user marked deleted is expunged with it). The network edge (src/probe.rs) sends
//! what `ImapProbe::next` says and feeds the answers back; every decision is here.

use crate::probe::PROBE_HEADER;

/// How the probe secures the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain text (lab use; Dovecot then needs `disable_plaintext_auth = no` or a trusted net).
    None,
    /// Plain connect, then STARTTLS before any credential is sent.
    StartTls,
    /// TLS from the first byte (imaps, port 993).
    Implicit,
}

/// The status word of a tagged or untagged response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

/// One line of the server, without its CRLF (and without literals, which the edge reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Tagged {
        tag: String,
        status: Status,
        text: String,
    },
    /// `* OK ...`, `* SEARCH 4`, `* 3 EXISTS`: the status word if there is one, and the rest.
    Untagged {
        status: Option<Status>,
        text: String,
    },
    Continuation(String),
    Garbage(String),
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Bye => "BYE",
            Status::Preauth => "PREAUTH",
        }
    }
}

fn status(word: &str) -> Option<Status> {
    match word.to_ascii_uppercase().as_str() {
        "OK" => Some(Status::Ok),
        "NO" => Some(Status::No),
        "BAD" => Some(Status::Bad),
        "BYE" => Some(Status::Bye),
        "PREAUTH" => Some(Status::Preauth),
        _ => None,
    }
}

pub fn line(l: &str) -> Line {
    let l = l.trim_end_matches(['\r', '\n']);
    if l == "+" || l.starts_with("+ ") {
        return Line::Continuation(l.get(2..).unwrap_or("").to_string());
    }
    let Some((first, rest)) = l.split_once(' ') else {
        return Line::Garbage(l.to_string());
    };
    let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
    if first == "*" {
        return match status(word) {
            Some(s) => Line::Untagged {
                status: Some(s),
                text: text.to_string(),
            },
            None => Line::Untagged {
                status: None,
                text: rest.to_string(),
            },
        };
    }
    match status(word) {
        Some(s) if first.bytes().all(|b| b.is_ascii_alphanumeric()) => Line::Tagged {
            tag: first.to_string(),
            status: s,
            text: text.to_string(),
        },
        _ => Line::Garbage(l.to_string()),
    }
}

/// The size of the literal a line announces at its end (`{412}` or the non-synchronising `{412+}`).
pub fn literal(l: &str) -> Option<usize> {
    let l = l.trim_end_matches(['\r', '\n']);
    let inner = l.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// The UIDs of an untagged `SEARCH` response (`SEARCH` alone: none).
pub fn search_uids(untagged_text: &str) -> Option<Vec<u32>> {
    let mut words = untagged_text.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("SEARCH") {
        return None;
    }
    words.map(|w| w.parse().ok()).collect()
}

/// Standard base64 (RFC 4648) with `=` padding, or IMAP's modified form (`,` for `/`, no padding).
fn base64(bytes: &[u8], modified: bool) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    if modified {
        STANDARD_NO_PAD.encode(bytes).replace('/', ",")
    } else {
        STANDARD.encode(bytes)
    }
}

/// A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3), which every server takes.
pub fn mailbox_utf7(name: &str) -> String {
    let mut out = String::new();
    let mut wide: Vec<u16> = Vec::new();
    let flush = |wide: &mut Vec<u16>, out: &mut String| {
        if !wide.is_empty() {
            let bytes: Vec<u8> = wide.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&base64(&bytes, true));
            out.push('-');
            wide.clear();
        }
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut wide, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut buf = [0u16; 2];
            wide.extend_from_slice(ch.encode_utf16(&mut buf));
        }
    }
    flush(&mut wide, &mut out);
    out
}

/// A quoted string; text with CR, LF, NUL or non-ASCII cannot be one.
pub fn quoted(s: &str) -> Result<String, String> {
    if s.bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0 || !b.is_ascii())
    {
        return Err(format!("{s:?} cannot be an IMAP quoted string"));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The SASL PLAIN response (RFC 4616): authorization id empty, then login and password.
pub fn plain_response(login: &str, password: &str) -> String {
    base64(format!("\0{login}\0{password}").as_bytes(), false)
}

/// The Message-ID the probe message carries for `token`.
pub fn message_id(token: &str) -> String {
    format!("<{token}@dovecot-upgrade-operator>")
}

/// The probe's stages in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    StartTls,
    Authenticate,
    /// Opens the verify mailbox read-only when the probe message is looked for elsewhere.
    Examine,
    Append,
    Select,
    Search,
    Fetch,
    Delete,
    Expunge,
    Logout,
}

impl Stage {
    /// The command as it is named in a failure: never with its arguments' secrets.
    pub fn name(self) -> &'static str {
        match self {
            Stage::StartTls => "STARTTLS",
            Stage::Authenticate => "AUTHENTICATE PLAIN",
            Stage::Examine => "EXAMINE",
            Stage::Append => "APPEND",
            Stage::Select => "SELECT",
            Stage::Search => "UID SEARCH",
            Stage::Fetch => "UID FETCH",
            Stage::Delete => "UID STORE",
            Stage::Expunge => "UID EXPUNGE",
            Stage::Logout => "LOGOUT",
        }
    }
}

/// One command to send: `first` (with CRLF), then, after the server's `+`, `then` if any.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    pub stage: Stage,
    pub tag: String,
    pub first: String,
    /// Sent after the continuation request: the SASL response or the APPEND literal.
    pub then: Option<String>,
}

impl std::fmt::Debug for Command {
    // the SASL response carries the password
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.tag, self.stage.name())
    }
}

/// A failed exchange: the command's name and the server's line (or what was wrong), bounded
/// by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub command: String,
    pub reply: String,
}

/// What an answer to one command holds: the tagged line, the untagged lines before it and the
/// literals they carried, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub status: Option<Status>,
    pub tagged_text: String,
    pub untagged: Vec<String>,
    pub literals: Vec<Vec<u8>>,
}

/// The probe: what to send next, and whether an answer is right.
#[derive(Debug, Clone)]
pub struct ImapProbe {
    stages: Vec<Stage>,
    at: usize,
    login: String,
    password: Secret,
    verify_mailbox: String,
    /// Where the probe message is: INBOX when LMTP delivered it, else the verify mailbox.
    probe_mailbox: String,
    token: String,
    message: String,
    uid: Option<u32>,
}

/// Text kept out of Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where and how the IMAP probe connects.
#[derive(Debug, Clone)]
pub struct ImapTarget {
    pub ip: String,
    pub port: u16,
    pub tls: Tls,
    /// The name the certificate must be valid for.
    pub server_name: Option<String>,
    /// PEM bundle of the CAs the certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any certificate (lab use only; the handshake's signatures are still checked).
    pub insecure_skip_verify: bool,
    pub timeout: std::time::Duration,
}

/// What the probe needs to run.
#[derive(Debug, Clone)]
pub struct ProbeInput {
    pub tls: Tls,
    pub login: String,
    pub password: Secret,
    pub verify_mailbox: String,
    pub token: String,
    /// The message to append; None: LMTP has delivered it to INBOX already.
    pub append: Option<String>,
    /// Log in and out only (the soak's login through a director).
    pub login_only: bool,
}

impl ImapProbe {
    pub fn new(p: ProbeInput) -> Result<Self, Refusal> {
        let refuse = |command: &str, reply: String| Refusal {
            command: command.into(),
            reply,
        };
        quoted(&mailbox_utf7(&p.verify_mailbox)).map_err(|e| refuse("SELECT", e))?;
        if p.login.is_empty() || p.login.contains('\0') || p.password.0.contains('\0') {
            return Err(refuse(
                "AUTHENTICATE PLAIN",
                "the probe login and password must be non-empty text without NUL".into(),
            ));
        }
        let probe_mailbox = if p.append.is_some() {
            p.verify_mailbox.clone()
        } else {
            "INBOX".to_string()
        };
        let mut stages = Vec::new();
        if p.tls == Tls::StartTls {
            stages.push(Stage::StartTls);
        }
        stages.push(Stage::Authenticate);
        if p.login_only {
            stages.push(Stage::Logout);
        } else if !probe_mailbox.eq_ignore_ascii_case(&p.verify_mailbox) {
            stages.push(Stage::Examine);
        }
        if p.append.is_some() && !p.login_only {
            stages.push(Stage::Append);
        }
        if !p.login_only {
            stages.extend([
                Stage::Select,
                Stage::Search,
                Stage::Fetch,
                Stage::Delete,
                Stage::Expunge,
                Stage::Logout,
            ]);
        }
        Ok(Self {
            stages,
            at: 0,
            login: p.login,
            password: p.password,
            verify_mailbox: p.verify_mailbox,
            probe_mailbox,
            token: p.token,
            message: p.append.unwrap_or_default(),
            uid: None,
        })
    }

    /// The greeting must be `* OK` (`* PREAUTH` would skip the login this probe is about).
    pub fn greeting(&self, l: &str) -> Result<(), Refusal> {
        match line(l) {
            Line::Untagged {
                status: Some(Status::Ok),
                ..
            } => Ok(()),
            _ => Err(Refusal {
                command: "greeting".into(),
                reply: self.scrub(l.trim_end()),
            }),
        }
    }

    /// The next command, or None when the probe is through.
    pub fn next(&self) -> Option<Command> {
        let stage = *self.stages.get(self.at)?;
        let tag = format!("p{}", self.at + 1);
        let mbox = |m: &str| quoted(&mailbox_utf7(m)).unwrap_or_default();
        let uid = self.uid.unwrap_or(0);
        let (first, then) = match stage {
            Stage::StartTls => ("STARTTLS".to_string(), None),
            Stage::Authenticate => (
                "AUTHENTICATE PLAIN".to_string(),
                Some(plain_response(&self.login, &self.password.0)),
            ),
            Stage::Examine => (format!("EXAMINE {}", mbox(&self.verify_mailbox)), None),
            Stage::Append => (
                format!(
                    "APPEND {} (\\Seen) {{{}}}",
                    mbox(&self.probe_mailbox),
                    self.message.len()
                ),
                Some(self.message.clone()),
            ),
            Stage::Select => (format!("SELECT {}", mbox(&self.probe_mailbox)), None),
            Stage::Search => (
                format!(
                    "UID SEARCH HEADER Message-ID {}",
                    quoted(&message_id(&self.token)).unwrap_or_default()
                ),
                None,
            ),
            Stage::Fetch => (format!("UID FETCH {uid} (BODY.PEEK[])"), None),
            Stage::Delete => (format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"), None),
            Stage::Expunge => (format!("UID EXPUNGE {uid}"), None),
            Stage::Logout => ("LOGOUT".to_string(), None),
        };
        Some(Command {
            stage,
            first: format!("{tag} {first}"),
            tag,
            then,
        })
    }

    /// Judges the answer to the command `next` gave, and moves on.
    pub fn answer(&mut self, cmd: &Command, a: &Answer) -> Result<(), Refusal> {
        let refuse = |reply: String| Refusal {
            command: cmd.stage.name().into(),
            reply,
        };
        // LOGOUT: the server may close right after its BYE
        if cmd.stage == Stage::Logout && a.status.is_none() {
            self.at += 1;
            return Ok(());
        }
        if a.status != Some(Status::Ok) {
            let text = match a.status {
                Some(s) => format!("{} {} {}", cmd.tag, s.as_str(), a.tagged_text),
                None => "no tagged reply".to_string(),
            };
            return Err(refuse(self.scrub(&text)));
        }
        match cmd.stage {
            Stage::Search => {
                let uids: Vec<u32> = a
                    .untagged
                    .iter()
                    .filter_map(|u| search_uids(u))
                    .flatten()
                    .collect();
                let Some(uid) = uids.into_iter().max() else {
                    return Err(refuse(format!(
                        "no message with Message-ID {} in {}",
                        message_id(&self.token),
                        self.probe_mailbox
                    )));
                };
                self.uid = Some(uid);
            }
            Stage::Fetch => {
                let want = format!("{PROBE_HEADER}: {}", self.token);
                let found = a
                    .literals
                    .iter()
                    .any(|l| String::from_utf8_lossy(l).contains(&want));
                if !found {
                    return Err(refuse(format!(
                        "the fetched message has no {want:?} header"
                    )));
                }
            }
            _ => {}
        }
        self.at += 1;
        Ok(())
    }

    /// Server text with the credentials taken out, should a server ever echo them.
    pub fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in [
            self.password.0.as_str(),
            &plain_response(&self.login, &self.password.0),
        ] {
            if !s.is_empty() {
                t = t.replace(s, "<redacted>");
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(tls: Tls, append: bool, mailbox: &str) -> ImapProbe {
        ImapProbe::new(ProbeInput {
            tls,
            login: "user1".into(),
            password: Secret("s3cr\"et".into()),
            verify_mailbox: mailbox.into(),
            token: "backend-1.1800000000000".into(),
            append: append.then(|| "Subject: x\r\n\r\nbody\r\n".into()),
            login_only: false,
        })
        .unwrap()
    }

    fn ok() -> Answer {
        Answer {
            status: Some(Status::Ok),
            tagged_text: "done".into(),
            ..Answer::default()
        }
    }

    #[test]
    fn lines_of_dovecot_imap_parse() {
        // verbatim from Dovecot 2.3.19 imap-login and imap
        assert_eq!(
            line("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n"),
            Line::Untagged {
                status: Some(Status::Ok),
                text: "[CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.".into()
            }
        );
        assert_eq!(
            line("p2 NO [AUTHENTICATIONFAILED] Authentication failed."),
            Line::Tagged {
                tag: "p2".into(),
                status: Status::No,
                text: "[AUTHENTICATIONFAILED] Authentication failed.".into()
            }
        );
        assert_eq!(line("+ "), Line::Continuation(String::new()));
        assert_eq!(line("+"), Line::Continuation(String::new()));
        assert_eq!(
            line("* SEARCH 3 7"),
            Line::Untagged {
                status: None,
                text: "SEARCH 3 7".into()
            }
        );
        assert_eq!(search_uids("SEARCH 3 7"), Some(vec![3, 7]));
        assert_eq!(search_uids("SEARCH"), Some(vec![]));
        assert_eq!(search_uids("3 EXISTS"), None);
        assert!(matches!(line("hello"), Line::Garbage(_)));
        assert!(matches!(line("SSH-2.0-OpenSSH_9.2"), Line::Garbage(_)));
        assert_eq!(literal("* 1 FETCH (UID 5 BODY[] {412}\r\n"), Some(412));
        assert_eq!(literal("* 1 FETCH (UID 5 BODY[] {412+}"), Some(412));
        assert_eq!(literal("* 1 FETCH (UID 5 FLAGS (\\Seen))"), None);
    }

    #[test]
    fn encodings_match_the_rfcs() {
        assert_eq!(base64(b"", false), "");
        assert_eq!(base64(b"f", false), "Zg==");
        assert_eq!(base64(b"fo", false), "Zm8=");
        assert_eq!(base64(b"foobar", false), "Zm9vYmFy");
        // RFC 4616's example shape
        assert_eq!(
            plain_response("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
        // RFC 3501 5.1.3 examples
        assert_eq!(mailbox_utf7("INBOX"), "INBOX");
        assert_eq!(
            mailbox_utf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(mailbox_utf7("A&B"), "A&-B");
        assert_eq!(quoted("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert!(quoted("a\r\nb").is_err());
    }

    #[test]
    fn the_dialogue_follows_tls_mode_and_where_the_message_is() {
        let stages = |p: &ImapProbe| -> Vec<Stage> { p.stages.clone() };
        use Stage::*;
        assert_eq!(
            stages(&probe(Tls::StartTls, false, "INBOX")),
            vec![
                StartTls,
                Authenticate,
                Select,
                Search,
                Fetch,
                Delete,
                Expunge,
                Logout
            ]
        );
        assert_eq!(
            stages(&probe(Tls::Implicit, false, "Archive")),
            vec![
                Authenticate,
                Examine,
                Select,
                Search,
                Fetch,
                Delete,
                Expunge,
                Logout
            ]
        );
        assert_eq!(
            stages(&probe(Tls::None, true, "Archive")),
            vec![
                Authenticate,
                Append,
                Select,
                Search,
                Fetch,
                Delete,
                Expunge,
                Logout
            ]
        );
        let mut login = probe(Tls::StartTls, true, "INBOX");
        login = ImapProbe::new(ProbeInput {
            tls: Tls::StartTls,
            login: login.login,
            password: login.password,
            verify_mailbox: "INBOX".into(),
            token: String::new(),
            append: None,
            login_only: true,
        })
        .unwrap();
        assert_eq!(stages(&login), vec![StartTls, Authenticate, Logout]);
    }

    #[test]
    fn a_good_run_finds_fetches_and_expunges_only_its_uid() {
        let mut p = probe(Tls::None, false, "INBOX");
        p.greeting("* OK Dovecot ready.").unwrap();
        let mut sent = Vec::new();
        while let Some(cmd) = p.next() {
            sent.push(cmd.first.clone());
            let mut a = ok();
            match cmd.stage {
                Stage::Search => a.untagged = vec!["SEARCH 9".into()],
                Stage::Fetch => {
                    a.literals = vec![b"X-DBU-Probe: backend-1.1800000000000\r\n\r\nx".to_vec()]
                }
                _ => {}
            }
            p.answer(&cmd, &a).unwrap();
        }
        assert_eq!(
            sent,
            vec![
                "p1 AUTHENTICATE PLAIN",
                "p2 SELECT \"INBOX\"",
                "p3 UID SEARCH HEADER Message-ID \"<backend-1.1800000000000@dovecot-upgrade-operator>\"",
                "p4 UID FETCH 9 (BODY.PEEK[])",
                "p5 UID STORE 9 +FLAGS.SILENT (\\Deleted)",
                "p6 UID EXPUNGE 9",
                "p7 LOGOUT",
            ]
        );
    }

    #[test]
    fn failures_name_the_command_and_reply_never_the_password() {
        let mut p = probe(Tls::None, false, "INBOX");
        let cmd = p.next().unwrap();
        assert_eq!(
            cmd.then.as_deref(),
            Some(plain_response("user1", "s3cr\"et").as_str())
        );
        assert!(!format!("{cmd:?}").contains(&plain_response("user1", "s3cr\"et")));
        assert!(!format!("{p:?}").contains("s3cr"));
        let no = Answer {
            status: Some(Status::No),
            tagged_text: "[AUTHENTICATIONFAILED] Authentication failed for s3cr\"et.".into(),
            ..Answer::default()
        };
        let r = p.answer(&cmd, &no).unwrap_err();
        assert_eq!(r.command, "AUTHENTICATE PLAIN");
        assert_eq!(
            r.reply,
            "p1 NO [AUTHENTICATIONFAILED] Authentication failed for <redacted>."
        );
        assert!(p.greeting("* BYE Too many connections").is_err());
        assert!(p.greeting("* PREAUTH logged in").is_err());
    }

    #[test]
    fn a_missing_or_wrong_message_fails_search_or_fetch() {
        let mut p = probe(Tls::None, false, "INBOX");
        for _ in 0..2 {
            let c = p.next().unwrap();
            p.answer(&c, &ok()).unwrap();
        }
        let search = p.next().unwrap();
        let mut a = ok();
        a.untagged = vec!["SEARCH".into()];
        let r = p.answer(&search, &a).unwrap_err();
        assert_eq!(r.command, "UID SEARCH");
        assert!(r.reply.contains("no message with Message-ID"), "{r:?}");
        a.untagged = vec!["SEARCH 4".into()];
        p.answer(&search, &a).unwrap();
        let fetch = p.next().unwrap();
        a.literals = vec![b"Subject: other\r\n\r\n".to_vec()];
        assert_eq!(p.answer(&fetch, &a).unwrap_err().command, "UID FETCH");
    }

    #[test]
    fn append_sends_the_literal_after_the_continuation() {
        let mut p = probe(Tls::StartTls, true, "INBOX");
        for _ in 0..2 {
            let c = p.next().unwrap();
            p.answer(&c, &ok()).unwrap();
        }
        let c = p.next().unwrap();
        assert_eq!(c.first, "p3 APPEND \"INBOX\" (\\Seen) {20}");
        assert_eq!(c.then.as_deref(), Some("Subject: x\r\n\r\nbody\r\n"));
    }
}
