//! The LMTP probe's dialogue with the new backend: what is sent, and what each reply must be.
//!
//! doveadm talks to the mail store directly; a revision whose LMTP service is broken passes it.
//! The probe delivers one message over LMTP to the new pod's own IP (never through the
//! director) and the engine then removes it by its own header, so nothing of it stays.
//!
//! Written here, unlike the IMAP probe's codec: five fixed commands in plain text, no TLS, no
//! authentication, and replies of one code and text. The maintained clients that speak LMTP
//! (mail-send) bring a TLS stack, DKIM and address parsing for that; the reply parsing below is
//! tested against Dovecot's lmtp as captured.

/// Header that marks probe messages; leftovers of an interrupted probe are found by it.
pub const PROBE_HEADER: &str = "X-DBU-Probe";

/// One server reply: its code and its last line (bounded by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub line: String,
}

/// A line of an SMTP/LMTP reply: `250-more` continues, `250 text` ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyLine {
    More,
    Last(Reply),
    Garbage(String),
}

pub fn reply_line(line: &str) -> ReplyLine {
    let line = line.trim_end_matches(['\r', '\n']);
    let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
    match (code, line.as_bytes().get(3)) {
        (Some(_), Some(b'-')) => ReplyLine::More,
        (Some(code), Some(b' ') | None) => ReplyLine::Last(Reply {
            code,
            line: line.to_string(),
        }),
        _ => ReplyLine::Garbage(line.to_string()),
    }
}

/// One exchange: the command sent (None: the greeting) and the reply class it needs (2 or 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub command: Option<String>,
    pub class: u16,
}

/// Why a recipient cannot be written into `RCPT TO:<...>`.
pub fn recipient(user: &str) -> Result<&str, String> {
    if user.is_empty() || user.contains(['<', '>', '\r', '\n', ' ']) {
        return Err(format!("{user:?} cannot be an LMTP recipient"));
    }
    Ok(user)
}

/// The probe message: a unique Message-ID and the probe header carry `token`.
pub fn message(user: &str, token: &str, date_rfc2822: &str) -> String {
    format!(
        "From: dovecot-upgrade-operator <>\r\nTo: <{user}>\r\nSubject: dovecot-upgrade-operator probe\r\nDate: {date_rfc2822}\r\nMessage-ID: <{token}@dovecot-upgrade-operator>\r\n{PROBE_HEADER}: {token}\r\n\r\nDelivered by the upgrade operator to check LMTP on a new backend; removed right after.\r\n"
    )
}

/// The dialogue, in order. DATA's body is sent after its 354 (by the caller), then `.` needs 250.
pub fn dialogue(user: &str) -> Vec<Exchange> {
    let ex = |c: Option<String>, class| Exchange { command: c, class };
    vec![
        ex(None, 2),
        ex(Some("LHLO dovecot-upgrade-operator".into()), 2),
        ex(Some("MAIL FROM:<>".into()), 2),
        ex(Some(format!("RCPT TO:<{user}>")), 2),
        ex(Some("DATA".into()), 3),
        // the message and the final dot: one reply per recipient (one here)
        ex(Some(".".into()), 2),
        ex(Some("QUIT".into()), 2),
    ]
}

/// Whether a reply answers an exchange as required.
pub fn accepted(ex: &Exchange, reply: &Reply) -> bool {
    reply.code / 100 == ex.class
}

/// A dot at the start of a body line is doubled (RFC 5321 4.5.2).
pub fn dot_stuffed(body: &str) -> String {
    body.split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A token unique to this backend and moment (the clock is passed in).
pub fn token(pod: &str, unix_millis: i64) -> String {
    let pod: String = pod
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("{pod}.{unix_millis}")
}

/// How a probe failed: the command (or "connect") and the server's reply line, bounded; no
/// credentials are ever part of either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {reply}")]
pub struct ProbeFailure {
    pub command: String,
    pub reply: String,
    /// The server could not be reached in time (retried), rather than refusing (a failure).
    pub transient: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_dovecot_lmtp_parse() {
        // Dovecot 2.3.19 lmtp: greeting, LHLO (multi-line), RCPT, DATA
        assert_eq!(
            reply_line("220 backend-2 Dovecot (Debian) LMTP ready\r\n"),
            ReplyLine::Last(Reply {
                code: 220,
                line: "220 backend-2 Dovecot (Debian) LMTP ready".into()
            })
        );
        assert_eq!(reply_line("250-8BITMIME\r\n"), ReplyLine::More);
        assert!(matches!(reply_line("250 PIPELINING"), ReplyLine::Last(r) if r.code == 250));
        assert!(matches!(reply_line("354 OK"), ReplyLine::Last(r) if r.code == 354));
        assert!(
            matches!(reply_line("550 5.1.1 <x> User doesn't exist: x"), ReplyLine::Last(r) if r.code == 550)
        );
        assert!(matches!(reply_line("hello"), ReplyLine::Garbage(_)));
        assert!(matches!(reply_line("250"), ReplyLine::Last(r) if r.code == 250));
    }

    #[test]
    fn the_dialogue_needs_2xx_then_354_for_data() {
        let d = dialogue("user1");
        assert_eq!(d[3].command.as_deref(), Some("RCPT TO:<user1>"));
        let data = d
            .iter()
            .find(|e| e.command.as_deref() == Some("DATA"))
            .unwrap();
        let r = |code| Reply {
            code,
            line: String::new(),
        };
        assert!(accepted(data, &r(354)));
        assert!(!accepted(data, &r(250)));
        assert!(accepted(&d[3], &r(250)));
        assert!(!accepted(&d[3], &r(451)));
        assert!(recipient("a b").is_err() && recipient("<x>").is_err());
        assert_eq!(
            recipient("upgrade-probe@example.org"),
            Ok("upgrade-probe@example.org")
        );
    }

    #[test]
    fn the_message_carries_the_token_twice_and_dots_are_stuffed() {
        let t = token("backend-2", 1_800_000_000_123);
        assert_eq!(t, "backend-2.1800000000123");
        let m = message("user1", &t, "Tue, 1 Dec 2026 12:00:00 +0000");
        assert!(m.contains(&format!("Message-ID: <{t}@dovecot-upgrade-operator>")));
        assert!(m.contains(&format!("{PROBE_HEADER}: {t}\r\n")));
        assert_eq!(dot_stuffed("a\r\n.b\r\nc"), "a\r\n..b\r\nc");
    }
}
