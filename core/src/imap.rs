//! The IMAP probe's dialogue with the new backend: the commands in order, the server's lines, and what each answer must be.
//!
//! doveadm reads the mail store directly; a revision whose IMAP listener, login process, auth
//! or TLS certificate is broken passes it. The probe logs in as the verify user at the new
//! pod's own IP, finds the probe message (delivered over LMTP, or appended here when there is no
//! LMTP probe) by its Message-ID, fetches it whole and removes only it (`UID EXPUNGE`, so no
//! message the user marked deleted is expunged with it). The network edge (src/probe.rs) sends
//! what `ImapProbe::next` says and feeds the answers back; every decision is here.

use std::num::NonZeroU32;

use imap_codec::decode::{Decoder, GreetingDecodeError, ResponseDecodeError};
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command as ImapCommand, CommandBody};
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::fetch::{MessageDataItem, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::response::{Data, GreetingKind, Response, Status as ImapStatus};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::secret::Secret as CodecSecret;
use imap_codec::{AuthenticateDataCodec, CommandCodec, GreetingCodec, ResponseCodec};

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

/// The status word of a tagged response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// One server response, decoded by imap-codec and reduced to what the probe judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The tagged completion of a command; `line` is the server's line as it sent it.
    Tagged {
        tag: String,
        status: Status,
        line: String,
    },
    /// `* SEARCH ...`: the UIDs found.
    Search(Vec<u32>),
    /// `* n FETCH (... BODY[] ...)`: the message bodies it carried.
    Fetched(Vec<Vec<u8>>),
    /// `* BYE ...`: the server is closing.
    Bye(String),
    /// `+ ...`: the server asks for the rest of the command.
    Continue,
    /// Any other untagged response (EXISTS, FLAGS, OK [UIDNEXT ...], CAPABILITY ...).
    Other,
}

/// What the bytes read so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// One response, `consumed` bytes long.
    Event { consumed: usize, event: Event },
    /// More bytes are needed; `literal` when the response announces one of that size.
    Incomplete { literal: Option<u32> },
    /// Not an IMAP response (the text, bounded by the caller).
    NotImap(String),
}

/// The largest literal the probe accepts (its own message is a few hundred bytes).
pub const MAX_LITERAL: u32 = 1 << 20;

/// Decodes the server's greeting: it must be `* OK` (`* PREAUTH` would skip the login this probe
/// is about; `* BYE` refuses). Ok(consumed), or Err(None) for more bytes, Err(Some(line)) for a
/// refusal or garbage.
pub fn greeting(buf: &[u8]) -> Result<usize, Option<String>> {
    match GreetingCodec::default().decode(buf) {
        Ok((rest, g)) if g.kind == GreetingKind::Ok => Ok(buf.len() - rest.len()),
        Ok((rest, _)) => Err(Some(text(&buf[..buf.len() - rest.len()]))),
        Err(GreetingDecodeError::Incomplete) => Err(None),
        Err(GreetingDecodeError::Failed) => Err(Some(text(buf))),
    }
}

/// Decodes the next response in `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    let (rest, response) = match ResponseCodec::default().decode(buf) {
        Ok(ok) => ok,
        Err(ResponseDecodeError::Incomplete) => return Decoded::Incomplete { literal: None },
        Err(ResponseDecodeError::LiteralFound { length }) => {
            return Decoded::Incomplete {
                literal: Some(length),
            };
        }
        Err(ResponseDecodeError::Failed) => return Decoded::NotImap(text(buf)),
    };
    let consumed = buf.len() - rest.len();
    let event = match response {
        Response::CommandContinuationRequest(_) => Event::Continue,
        Response::Status(s) => match s {
            ImapStatus::Ok { tag: Some(t), .. } => tagged(t.inner(), Status::Ok, &buf[..consumed]),
            ImapStatus::No { tag: Some(t), .. } => tagged(t.inner(), Status::No, &buf[..consumed]),
            ImapStatus::Bad { tag: Some(t), .. } => {
                tagged(t.inner(), Status::Bad, &buf[..consumed])
            }
            ImapStatus::Bye { .. } => Event::Bye(text(&buf[..consumed])),
            _ => Event::Other,
        },
        Response::Data(Data::Search(uids)) => Event::Search(uids.iter().map(|u| u.get()).collect()),
        Response::Data(Data::Fetch { items, .. }) => Event::Fetched(
            items
                .as_ref()
                .iter()
                .filter_map(|i| match i {
                    MessageDataItem::BodyExt { data, .. } => {
                        data.0.as_ref().map(|s| s.as_ref().to_vec())
                    }
                    _ => None,
                })
                .collect(),
        ),
        Response::Data(_) => Event::Other,
    };
    Decoded::Event { consumed, event }
}

fn tagged(tag: &str, status: Status, raw: &[u8]) -> Event {
    Event::Tagged {
        tag: tag.to_string(),
        status,
        line: text(raw),
    }
}

/// Bytes as text for a message: lossy, without the line end.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3), which every server takes. Our own:
/// imap-types leaves it to the caller, and the crate that does it (utf7-imap) pulls in regex and
/// encoding_rs and lets DEL through unencoded.
pub fn mailbox_utf7(name: &str) -> String {
    use base64::Engine;
    let modified = |bytes: &[u8]| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(bytes)
            .replace('/', ",")
    };
    let mut out = String::new();
    let mut wide: Vec<u16> = Vec::new();
    let flush = |wide: &mut Vec<u16>, out: &mut String| {
        if !wide.is_empty() {
            let bytes: Vec<u8> = wide.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&modified(&bytes));
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

/// The SASL PLAIN message (RFC 4616): authorization id empty, then login and password. The
/// codec sends it in base64.
fn plain(login: &str, password: &str) -> Vec<u8> {
    format!("\0{login}\0{password}").into_bytes()
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

/// One part of a command on the wire.
#[derive(Clone, PartialEq, Eq)]
pub enum Part {
    /// Sent at once.
    Line(Vec<u8>),
    /// Sent after the server's continuation request (`+`): a synchronizing literal, or the SASL
    /// response. The server may refuse instead, with the command's tagged reply.
    AfterContinue(Vec<u8>),
}

/// One command to send, as imap-codec encodes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    pub stage: Stage,
    pub tag: String,
    pub parts: Vec<Part>,
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

/// What the server answered to one command: its tagged line, and what the untagged responses
/// before it carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub status: Option<Status>,
    /// The tagged line as the server sent it.
    pub line: String,
    pub search: Vec<u32>,
    pub bodies: Vec<Vec<u8>>,
    /// A `* BYE` before the tagged reply.
    pub bye: Option<String>,
}

impl Answer {
    /// Takes one event of the answer to the command tagged `tag`; true once its tagged reply
    /// is in. Err: a tagged reply to another command (not the server this probe talks to).
    pub fn absorb(&mut self, tag: &str, event: Event) -> Result<bool, String> {
        match event {
            Event::Tagged {
                tag: t,
                status,
                line,
            } => {
                if t != tag {
                    return Err(format!("a reply to {t}, not to {tag}: {line}"));
                }
                self.status = Some(status);
                self.line = line;
                return Ok(true);
            }
            Event::Search(uids) => self.search.extend(uids),
            Event::Fetched(bodies) => self.bodies.extend(bodies),
            Event::Bye(line) => self.bye = Some(line),
            Event::Continue | Event::Other => {}
        }
        Ok(false)
    }
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

/// A command: imap-codec's, or one it does not know.
enum Body<'a> {
    Codec(CommandBody<'a>),
    UidExpunge(NonZeroU32),
}

impl ImapProbe {
    pub fn new(p: ProbeInput) -> Result<Self, Refusal> {
        let refuse = |command: &str, reply: String| Refusal {
            command: command.into(),
            reply,
        };
        // control characters would need a literal no server reads as a mailbox name
        if p.verify_mailbox.chars().any(char::is_control)
            || CommandBody::select(mailbox_utf7(&p.verify_mailbox)).is_err()
        {
            return Err(refuse(
                "SELECT",
                format!("{:?} cannot be an IMAP mailbox name", p.verify_mailbox),
            ));
        }
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

    /// The next command, or None when the probe is through.
    pub fn next(&self) -> Option<Command> {
        let stage = *self.stages.get(self.at)?;
        let tag = format!("p{}", self.at + 1);
        let body = self.body(stage)?;
        let mut parts: Vec<Part> = match body {
            Body::Codec(body) => {
                let cmd = ImapCommand::new(tag.as_str(), body).ok()?;
                CommandCodec::default()
                    .encode(&cmd)
                    .map(|f| match f {
                        Fragment::Line { data } => Part::Line(data),
                        // never LITERAL+: a refusal then comes before the data is sent
                        Fragment::Literal { data, .. } => Part::AfterContinue(data),
                    })
                    .collect()
            }
            // UIDPLUS (RFC 4315): imap-types 1.0 has no UID EXPUNGE; a tag and a number only
            Body::UidExpunge(uid) => vec![Part::Line(
                format!("{tag} UID EXPUNGE {uid}\r\n").into_bytes(),
            )],
        };
        if stage == Stage::Authenticate {
            let data = AuthenticateData(CodecSecret::new(plain(&self.login, &self.password.0)));
            parts.push(Part::AfterContinue(
                AuthenticateDataCodec::default().encode(&data).dump(),
            ));
        }
        Some(Command { stage, tag, parts })
    }

    /// The command of `stage`, as imap-types builds it.
    fn body(&self, stage: Stage) -> Option<Body<'_>> {
        let mbox = |m: &str| mailbox_utf7(m);
        let uid = NonZeroU32::new(self.uid.unwrap_or(0));
        let body = match stage {
            Stage::StartTls => CommandBody::StartTLS,
            Stage::Authenticate => CommandBody::authenticate(AuthMechanism::Plain),
            Stage::Examine => CommandBody::examine(mbox(&self.verify_mailbox)).ok()?,
            Stage::Append => CommandBody::append(
                mbox(&self.probe_mailbox),
                vec![Flag::Seen],
                None,
                self.message.as_bytes().to_vec(),
            )
            .ok()?,
            Stage::Select => CommandBody::select(mbox(&self.probe_mailbox)).ok()?,
            Stage::Search => CommandBody::search(
                None,
                SearchKey::Header(
                    AString::try_from("Message-ID").ok()?,
                    AString::try_from(message_id(&self.token)).ok()?,
                ),
                true,
            ),
            Stage::Fetch => CommandBody::fetch(
                uid?,
                vec![MessageDataItemName::BodyExt {
                    section: None,
                    partial: None,
                    peek: true,
                }],
                true,
            )
            .ok()?,
            Stage::Delete => CommandBody::store(
                uid?,
                StoreType::Add,
                StoreResponse::Silent,
                vec![Flag::Deleted],
                true,
            )
            .ok()?,
            Stage::Expunge => return Some(Body::UidExpunge(uid?)),
            Stage::Logout => CommandBody::Logout,
        };
        Some(Body::Codec(body))
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
            let text = match (a.status, &a.bye) {
                (Some(_), _) => a.line.clone(),
                (None, Some(bye)) => bye.clone(),
                (None, None) => "no tagged reply".to_string(),
            };
            return Err(refuse(self.scrub(&text)));
        }
        match cmd.stage {
            Stage::Search => {
                let Some(uid) = a.search.iter().copied().max() else {
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
                    .bodies
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
        use base64::Engine;
        let sasl =
            base64::engine::general_purpose::STANDARD.encode(plain(&self.login, &self.password.0));
        for s in [self.password.0.as_str(), sasl.as_str()] {
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
            line: "pN OK done".into(),
            ..Answer::default()
        }
    }

    /// The bytes a command puts on the wire, `+` parts marked.
    fn wire(c: &Command) -> String {
        c.parts
            .iter()
            .map(|p| match p {
                Part::Line(b) => String::from_utf8_lossy(b).into_owned(),
                Part::AfterContinue(b) => format!("<+>{}", String::from_utf8_lossy(b)),
            })
            .collect()
    }

    fn event(bytes: &[u8]) -> Event {
        match decode(bytes) {
            Decoded::Event { consumed, event } => {
                assert_eq!(
                    consumed,
                    bytes.len(),
                    "{:?}",
                    String::from_utf8_lossy(bytes)
                );
                event
            }
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn responses_of_dovecot_imap_decode() {
        // verbatim from Dovecot 2.3.19 imap-login and imap
        let greet = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n";
        assert_eq!(greeting(greet), Ok(greet.len()));
        assert_eq!(greeting(&greet[..30]), Err(None));
        assert!(
            greeting(b"* BYE Too many connections\r\n")
                .unwrap_err()
                .is_some()
        );
        assert!(greeting(b"* PREAUTH logged in\r\n").unwrap_err().is_some());
        assert!(greeting(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap_err().is_some());
        assert_eq!(
            event(b"p2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
            Event::Tagged {
                tag: "p2".into(),
                status: Status::No,
                line: "p2 NO [AUTHENTICATIONFAILED] Authentication failed.".into()
            }
        );
        assert_eq!(event(b"+ \r\n"), Event::Continue);
        assert_eq!(event(b"* SEARCH 3 7\r\n"), Event::Search(vec![3, 7]));
        assert_eq!(event(b"* SEARCH\r\n"), Event::Search(vec![]));
        for other in [
            &b"* 3 EXISTS\r\n"[..],
            b"* 0 RECENT\r\n",
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
            b"* OK [UIDVALIDITY 1764959488] UIDs valid\r\n",
            b"* OK [UIDNEXT 10] Predicted next UID\r\n",
            b"* OK [HIGHESTMODSEQ 5] Highest\r\n",
            b"* 1 EXPUNGE\r\n",
        ] {
            assert_eq!(event(other), Event::Other, "{}", String::from_utf8_lossy(other));
        }
        assert_eq!(
            event(b"* BYE Logging out\r\n"),
            Event::Bye("* BYE Logging out".into())
        );
        // a literal: announced, then read whole
        let fetch = b"* 1 FETCH (UID 9 BODY[] {12}\r\nX-DBU: a\r\n\r\n)\r\n";
        assert_eq!(
            decode(&fetch[..30]),
            Decoded::Incomplete { literal: Some(12) }
        );
        assert_eq!(
            event(fetch),
            Event::Fetched(vec![b"X-DBU: a\r\n\r\n".to_vec()])
        );
        assert_eq!(
            decode(b"* 1 FETCH (UID"),
            Decoded::Incomplete { literal: None }
        );
        assert!(matches!(decode(b"hello\r\n"), Decoded::NotImap(_)));
        // two responses in one read: one at a time
        let two = b"* 2 EXISTS\r\np3 OK Select completed.\r\n";
        assert_eq!(
            decode(two),
            Decoded::Event {
                consumed: 12,
                event: Event::Other
            }
        );
    }

    #[test]
    fn mailbox_names_are_modified_utf7() {
        // RFC 3501 5.1.3 examples
        assert_eq!(mailbox_utf7("INBOX"), "INBOX");
        assert_eq!(
            mailbox_utf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(mailbox_utf7("A&B"), "A&-B");
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
        let login = ImapProbe::new(ProbeInput {
            tls: Tls::StartTls,
            login: "user1".into(),
            password: Secret("x".into()),
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
        let mut p = probe(Tls::StartTls, false, "Entwürfe & Co");
        let mut sent = Vec::new();
        while let Some(cmd) = p.next() {
            sent.push(wire(&cmd));
            let mut a = ok();
            match cmd.stage {
                Stage::Search => a.search = vec![9],
                Stage::Fetch => {
                    a.bodies = vec![b"X-DBU-Probe: backend-1.1800000000000\r\n\r\nx".to_vec()]
                }
                _ => {}
            }
            p.answer(&cmd, &a).unwrap();
        }
        assert_eq!(
            sent,
            vec![
                "p1 STARTTLS\r\n",
                // SASL PLAIN of "\0user1\0s3cr\"et", in base64 after the server's +
                "p2 AUTHENTICATE PLAIN\r\n<+>AHVzZXIxAHMzY3IiZXQ=\r\n",
                "p3 EXAMINE \"Entw&APw-rfe &- Co\"\r\n",
                "p4 SELECT INBOX\r\n",
                "p5 UID SEARCH HEADER Message-ID <backend-1.1800000000000@dovecot-upgrade-operator>\r\n",
                "p6 UID FETCH 9 BODY.PEEK[]\r\n",
                "p7 UID STORE 9 +FLAGS.SILENT (\\Deleted)\r\n",
                "p8 UID EXPUNGE 9\r\n",
                "p9 LOGOUT\r\n",
            ]
        );
    }

    #[test]
    fn failures_name_the_command_and_reply_never_the_password() {
        let mut p = probe(Tls::None, false, "INBOX");
        let cmd = p.next().unwrap();
        assert!(wire(&cmd).contains("AHVzZXIxAHMzY3IiZXQ="));
        assert!(!format!("{cmd:?}").contains("AHVzZXIx"));
        assert!(!format!("{p:?}").contains("s3cr"));
        let no = Answer {
            status: Some(Status::No),
            line: "p1 NO [AUTHENTICATIONFAILED] Authentication failed for s3cr\"et (AHVzZXIxAHMzY3IiZXQ=).".into(),
            ..Answer::default()
        };
        let r = p.answer(&cmd, &no).unwrap_err();
        assert_eq!(r.command, "AUTHENTICATE PLAIN");
        assert_eq!(
            r.reply,
            "p1 NO [AUTHENTICATIONFAILED] Authentication failed for <redacted> (<redacted>)."
        );
        // the server hung up with a BYE: that is the reply named
        let bye = Answer {
            bye: Some("* BYE Disconnected for inactivity.".into()),
            ..Answer::default()
        };
        assert_eq!(
            p.answer(&cmd, &bye).unwrap_err().reply,
            "* BYE Disconnected for inactivity."
        );
    }

    #[test]
    fn answers_gather_their_untagged_data_until_their_own_tag() {
        let mut a = Answer::default();
        assert_eq!(a.absorb("p3", Event::Search(vec![4])), Ok(false));
        assert_eq!(a.absorb("p3", Event::Other), Ok(false));
        assert!(a.absorb("p3", event(b"p2 OK late\r\n")).is_err());
        assert_eq!(
            a.absorb("p3", event(b"p3 OK Search completed.\r\n")),
            Ok(true)
        );
        assert_eq!(a.search, vec![4]);
        assert_eq!(a.status, Some(Status::Ok));
        assert_eq!(a.line, "p3 OK Search completed.");
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
        let r = p.answer(&search, &a).unwrap_err();
        assert_eq!(r.command, "UID SEARCH");
        assert!(r.reply.contains("no message with Message-ID"), "{r:?}");
        a.search = vec![4];
        p.answer(&search, &a).unwrap();
        let fetch = p.next().unwrap();
        a.bodies = vec![b"Subject: other\r\n\r\n".to_vec()];
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
        assert_eq!(c.stage, Stage::Append);
        assert_eq!(
            wire(&c),
            "p3 APPEND INBOX (\\Seen) {20}\r\n<+>Subject: x\r\n\r\nbody\r\n\r\n"
        );
    }

    #[test]
    fn a_mailbox_name_no_imap_string_can_hold_is_refused_up_front() {
        let bad = ImapProbe::new(ProbeInput {
            tls: Tls::None,
            login: "user1".into(),
            password: Secret("x".into()),
            verify_mailbox: "a\0b".into(),
            token: "t".into(),
            append: None,
            login_only: false,
        });
        assert_eq!(bad.unwrap_err().command, "SELECT");
    }
}
