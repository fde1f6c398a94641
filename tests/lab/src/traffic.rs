//! Mail traffic for the lab: IMAP and LMTP clients, and live load that runs during a rollout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::LAB_PASSWORD;

/// How an LMTP delivery failed, as an MTA must tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LmtpError {
    /// 4xx or a connection failure before the message was sent: retry later.
    #[error("temporary failure: {0}")]
    Temp(String),
    /// 5xx: bounce.
    #[error("permanent failure: {0}")]
    Perm(String),
    /// Lost after the final dot, or a 4xx to the final dot: it may have been delivered (a
    /// director's LMTP proxy can answer 451 after the backend stored the message), so the
    /// MTA's retry may duplicate it. Seen when LMTP and Dovecot stop mid-transaction.
    #[error("outcome unknown: {0}")]
    Uncertain(String),
}

fn read_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {all:?}"),
            ));
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(all);
        }
    }
}

fn judge(reply: String, ok: char) -> Result<(), LmtpError> {
    match reply.chars().next() {
        Some(c) if c == ok => Ok(()),
        Some('5') => Err(LmtpError::Perm(reply.trim().to_string())),
        _ => Err(LmtpError::Temp(reply.trim().to_string())),
    }
}

/// Delivers one message over LMTP (through the director when `ip` is a director's).
pub fn lmtp_deliver(ip: &str, user: &str, subject: &str) -> Result<(), LmtpError> {
    lmtp_deliver_with(ip, user, subject, &[])
}

/// `lmtp_deliver` with extra header lines (`Name: value`).
pub fn lmtp_deliver_with(
    ip: &str,
    user: &str,
    subject: &str,
    headers: &[&str],
) -> Result<(), LmtpError> {
    let temp = |e: std::io::Error| LmtpError::Temp(e.to_string());
    let stream = TcpStream::connect_timeout(
        &(
            ip.parse::<std::net::IpAddr>()
                .map_err(|e| LmtpError::Perm(e.to_string()))?,
            24,
        )
            .into(),
        Duration::from_secs(5),
    )
    .map_err(temp)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(temp)?;
    let mut r = BufReader::new(stream.try_clone().map_err(temp)?);
    let mut w = stream;
    judge(read_reply(&mut r).map_err(temp)?, '2')?;
    for (cmd, ok) in [
        ("LHLO lab.invalid".to_string(), '2'),
        ("MAIL FROM:<lab@lab.invalid>".to_string(), '2'),
        (format!("RCPT TO:<{user}>"), '2'),
        ("DATA".to_string(), '3'),
    ] {
        write!(w, "{cmd}\r\n").map_err(temp)?;
        judge(read_reply(&mut r).map_err(temp)?, ok)?;
    }
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        w,
        "Subject: {subject}\r\nFrom: lab@lab.invalid\r\n{extra}\r\nlab message {subject}\r\n.\r\n"
    )
    .map_err(temp)?;
    let reply = read_reply(&mut r).map_err(|e| LmtpError::Uncertain(e.to_string()))?;
    match judge(reply, '2') {
        Err(LmtpError::Temp(m)) => return Err(LmtpError::Uncertain(m)),
        other => other?,
    }
    let _ = write!(w, "QUIT\r\n");
    Ok(())
}

/// An IMAP session, kept open until dropped or logged out.
pub struct ImapSession {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u32,
}

impl ImapSession {
    pub fn login(ip: &str, user: &str) -> Result<Self, String> {
        let stream = TcpStream::connect((ip, 143)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut s = ImapSession {
            r: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
            w: stream,
            tag: 0,
        };
        let mut greeting = String::new();
        s.r.read_line(&mut greeting).map_err(|e| e.to_string())?;
        if !greeting.starts_with("* OK") {
            return Err(greeting);
        }
        s.command(&format!("LOGIN {user} {LAB_PASSWORD}"))?;
        Ok(s)
    }

    /// Sends a command and reads to its tagged reply; Err on NO/BAD or a closed connection.
    pub fn command(&mut self, cmd: &str) -> Result<Vec<String>, String> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        write!(self.w, "{tag} {cmd}\r\n").map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).map_err(|e| e.to_string())?;
            if line.is_empty() {
                return Err(format!("connection closed: {lines:?}"));
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") {
                    Ok(lines)
                } else {
                    Err(rest.trim().to_string())
                };
            }
            lines.push(line);
        }
    }

    pub fn logout(mut self) {
        let _ = self.command("LOGOUT");
    }

    /// APPENDs `message` to `mailbox` as a slow client would: half of the literal, a pause of
    /// `hold` (the session's title says APPEND meanwhile), then the rest.
    pub fn append_slowly(
        &mut self,
        mailbox: &str,
        message: &str,
        hold: Duration,
    ) -> Result<(), String> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let io = |e: std::io::Error| e.to_string();
        write!(self.w, "{tag} APPEND {mailbox} {{{}}}\r\n", message.len()).map_err(io)?;
        let mut line = String::new();
        self.r.read_line(&mut line).map_err(io)?;
        if !line.starts_with('+') {
            return Err(format!("APPEND refused: {}", line.trim()));
        }
        let (a, b) = message.split_at(message.len() / 2);
        self.w.write_all(a.as_bytes()).map_err(io)?;
        std::thread::sleep(hold);
        write!(self.w, "{b}\r\n").map_err(io)?;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).map_err(io)?;
            if line.is_empty() {
                return Err("connection closed during APPEND".into());
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") {
                    Ok(())
                } else {
                    Err(rest.trim().to_string())
                };
            }
        }
    }

    /// Enters IDLE (RFC 2177): the client then only listens, as mail clients park a folder.
    pub fn idle(&mut self) -> Result<(), String> {
        self.tag += 1;
        write!(self.w, "a{} IDLE\r\n", self.tag).map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.r.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.starts_with('+') {
            Ok(())
        } else {
            Err(format!("IDLE refused: {}", line.trim()))
        }
    }

    /// Listens in IDLE for at most `limit`: Ok(true) while the connection stays (untagged
    /// updates such as EXISTS are read and dropped), Ok(false) when the server closed it.
    pub fn listen(&mut self, limit: Duration) -> Result<bool, String> {
        self.w
            .set_read_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => Ok(false),
            // "* BYE" is the server's goodbye (a kick ends with it, or with a bare close)
            Ok(_) => Ok(!line.starts_with("* BYE")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Who does what during a rollout.
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    /// Directors to connect to, used in turn.
    pub directors: Vec<String>,
    /// Users that hold one IMAP session open (like IDLE), reconnecting when kicked.
    pub long_lived: Vec<String>,
    /// Users that log in, select INBOX and log out in a loop.
    pub loopers: Vec<String>,
    /// Users that receive a steady stream of LMTP deliveries, in turn.
    pub recipients: Vec<String>,
    pub lmtp_interval: Duration,
    /// Hard stop for every loop, whatever happens.
    pub max_duration: Duration,
}

/// What the clients saw.
#[derive(Debug, Clone, Default)]
pub struct TrafficStats {
    /// Messages accepted (250) per user.
    pub accepted: BTreeMap<String, u64>,
    /// Deliveries lost after the final dot (maybe delivered, then retried).
    pub uncertain: u64,
    /// 4xx answers and connection failures, each retried.
    pub temp_failures: u64,
    pub perm_failures: Vec<String>,
    /// Messages still not accepted when the sender gave up.
    pub given_up: u64,
    pub logins_ok: u64,
    pub logins_failed: u64,
    /// Each failed login, when and why (the first `MAX_FAILURES_KEPT`): a soak attributes
    /// them to the fault in force.
    pub login_failures: Vec<LoginFailure>,
    /// Long-lived sessions that were cut (kicked by flush) and came back.
    pub reconnects: u64,
}

/// At most this many failed logins are kept with their time and error.
pub const MAX_FAILURES_KEPT: usize = 20_000;

/// One failed login.
#[derive(Debug, Clone)]
pub struct LoginFailure {
    pub at: Instant,
    pub user: String,
    /// The director's IP it went to.
    pub director: String,
    pub error: String,
}

impl TrafficStats {
    fn login_failed(&mut self, user: &str, director: &str, error: String) {
        self.logins_failed += 1;
        if self.login_failures.len() < MAX_FAILURES_KEPT {
            self.login_failures.push(LoginFailure {
                at: Instant::now(),
                user: user.to_string(),
                director: director.to_string(),
                error,
            });
        }
    }
}

/// Live traffic in background threads, bounded in count and time; `stop` joins them.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    stats: Arc<Mutex<TrafficStats>>,
}

impl Traffic {
    pub fn start(spec: TrafficSpec) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(TrafficStats::default()));
        let end = Instant::now() + spec.max_duration;
        let running = {
            let stop = stop.clone();
            move || !stop.load(Ordering::Relaxed) && Instant::now() < end
        };
        let mut handles = Vec::new();
        for (i, user) in spec.long_lived.iter().cloned().enumerate() {
            let (stats, running) = (stats.clone(), running.clone());
            let dirs = spec.directors.clone();
            handles.push(std::thread::spawn(move || {
                let mut attempt = i;
                let mut first = true;
                while running() {
                    attempt += 1;
                    let dir = &dirs[attempt % dirs.len()];
                    let mut s = match ImapSession::login(dir, &user) {
                        Ok(s) => s,
                        Err(e) => {
                            stats.lock().unwrap().login_failed(&user, dir, e);
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    };
                    stats.lock().unwrap().logins_ok += 1;
                    if !first {
                        stats.lock().unwrap().reconnects += 1;
                    }
                    first = false;
                    while running() && s.command("NOOP").is_ok() {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }));
        }
        for (i, user) in spec.loopers.iter().cloned().enumerate() {
            let (stats, running) = (stats.clone(), running.clone());
            let dirs = spec.directors.clone();
            handles.push(std::thread::spawn(move || {
                let mut n = i;
                while running() {
                    n += 1;
                    let dir = &dirs[n % dirs.len()];
                    match ImapSession::login(dir, &user)
                        .and_then(|mut s| s.command("SELECT INBOX").map(|_| s))
                    {
                        Ok(s) => {
                            s.logout();
                            stats.lock().unwrap().logins_ok += 1;
                        }
                        Err(e) => stats.lock().unwrap().login_failed(&user, dir, e),
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }));
        }
        if !spec.recipients.is_empty() {
            let (stats, running) = (stats.clone(), running.clone());
            let stop2 = stop.clone();
            let spec2 = spec.clone();
            handles.push(std::thread::spawn(move || {
                let mut seq = 0u64;
                while running() {
                    seq += 1;
                    let user = &spec2.recipients[seq as usize % spec2.recipients.len()];
                    let subject = format!("live-{seq}");
                    // an MTA retries a temporary failure; after stop it keeps trying a while
                    let give_up = Instant::now() + spec2.max_duration;
                    let mut tries = 0u64;
                    loop {
                        tries += 1;
                        let dir = &spec2.directors[(seq + tries) as usize % spec2.directors.len()];
                        match lmtp_deliver(dir, user, &subject) {
                            Ok(()) => {
                                *stats
                                    .lock()
                                    .unwrap()
                                    .accepted
                                    .entry(user.clone())
                                    .or_insert(0) += 1;
                                break;
                            }
                            Err(LmtpError::Temp(_)) => {
                                stats.lock().unwrap().temp_failures += 1;
                            }
                            Err(LmtpError::Perm(e)) => {
                                stats
                                    .lock()
                                    .unwrap()
                                    .perm_failures
                                    .push(format!("{user}: {e}"));
                                break;
                            }
                            Err(LmtpError::Uncertain(_)) => {
                                stats.lock().unwrap().uncertain += 1;
                            }
                        }
                        let stopped = stop2.load(Ordering::Relaxed);
                        if Instant::now() > give_up || (stopped && tries > 60) {
                            stats.lock().unwrap().given_up += 1;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    std::thread::sleep(spec2.lmtp_interval);
                }
            }));
        }
        Traffic {
            stop,
            handles,
            stats,
        }
    }

    /// A snapshot while running.
    pub fn stats(&self) -> TrafficStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stops every client and returns what they saw.
    pub fn stop(self) -> TrafficStats {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
        self.stats.lock().unwrap().clone()
    }
}
