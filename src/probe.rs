//! Speaks LMTP to a backend pod's own IP for Verify: the thin network edge of `dbu_core::probe`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use dbu_core::probe::{self, Exchange, ReplyLine};
use dbu_core::text::bounded;

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

fn failure(command: &str, reply: impl Into<String>, transient: bool) -> ProbeFailure {
    ProbeFailure {
        command: command.to_string(),
        reply: bounded(&reply.into(), 300),
        transient,
    }
}

/// Delivers `message` to `user` over LMTP at `ip:port`; every exchange within `timeout`.
pub async fn lmtp(
    ip: &str,
    port: u16,
    timeout: Duration,
    user: &str,
    message: &str,
) -> Result<(), ProbeFailure> {
    let user = probe::recipient(user).map_err(|e| failure("RCPT", e, false))?;
    let addr = format!("{ip}:{port}");
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Err(_) => {
            return Err(failure(
                "connect",
                format!("{addr}: no answer within {timeout:?}"),
                true,
            ));
        }
        Ok(Err(e)) => return Err(failure("connect", format!("{addr}: {e}"), false)),
        Ok(Ok(s)) => s,
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    for ex in probe::dialogue(user) {
        let name = ex.command.clone().unwrap_or_else(|| "greeting".into());
        if let Some(cmd) = &ex.command {
            let out = if cmd == "." {
                format!(
                    "{}\r\n.\r\n",
                    probe::dot_stuffed(message.trim_end_matches("\r\n"))
                )
            } else {
                format!("{cmd}\r\n")
            };
            tokio::time::timeout(timeout, w.write_all(out.as_bytes()))
                .await
                .map_err(|_| failure(&name, "write timed out", true))?
                .map_err(|e| failure(&name, e.to_string(), false))?;
        }
        let reply = read_reply(&mut r, timeout, &name).await?;
        if !probe::accepted(&ex, &reply) {
            return Err(failure(&name, reply.line, false));
        }
        if is_quit(&ex) {
            break;
        }
    }
    Ok(())
}

fn is_quit(ex: &Exchange) -> bool {
    ex.command.as_deref() == Some("QUIT")
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
    name: &str,
) -> Result<probe::Reply, ProbeFailure> {
    // a reply of more than 100 lines is not LMTP
    for _ in 0..100 {
        let mut line = String::new();
        let n = tokio::time::timeout(timeout, r.read_line(&mut line))
            .await
            .map_err(|_| failure(name, format!("no reply within {timeout:?}"), true))?
            .map_err(|e| failure(name, e.to_string(), false))?;
        if n == 0 {
            return Err(failure(name, "connection closed", false));
        }
        match probe::reply_line(&line) {
            ReplyLine::More => {}
            ReplyLine::Last(reply) => return Ok(reply),
            ReplyLine::Garbage(l) => return Err(failure(name, format!("not LMTP: {l}"), false)),
        }
    }
    Err(failure(name, "reply too long", false))
}
