//! Speaks LMTP and IMAP to a backend pod's own IP for Verify: the thin network edge of `dbu_core::probe` and `dbu_core::imap`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use dbu_core::probe::{self, Exchange, ReplyLine};
use dbu_core::text::bounded;

pub use dbu_core::probe::ProbeFailure;

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
    let stream = connect(&format!("{ip}:{port}"), timeout).await?;
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

/// A TCP connection within `timeout`: no answer is retried (transient), a refusal is not.
async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ProbeFailure> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(failure(
            "connect",
            format!("{addr}: no answer within {timeout:?}"),
            true,
        )),
        Ok(Err(e)) => Err(failure("connect", format!("{addr}: {e}"), false)),
        Ok(Ok(s)) => Ok(s),
    }
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

pub use dbu_core::imap::ImapTarget;

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The most the probe buffers of the server's answers: its own message and a few lines.
const MAX_BUFFERED: usize = dbu_core::imap::MAX_LITERAL as usize + 64 * 1024;

/// The connection and what was read from it but not yet decoded.
struct Wire {
    conn: Box<dyn Io>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Wire {
    /// Reads more bytes, within the timeout.
    async fn fill(&mut self, name: &str) -> Result<(), ProbeFailure> {
        use tokio::io::AsyncReadExt;
        if self.buf.len() >= MAX_BUFFERED {
            return Err(failure(name, "an answer larger than 1 MiB", false));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(self.timeout, self.conn.read(&mut chunk))
            .await
            .map_err(|_| failure(name, format!("no reply within {:?}", self.timeout), true))?
            .map_err(|e| failure(name, e.to_string(), false))?;
        if n == 0 {
            return Err(failure(name, "connection closed", false));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next response the server sent, decoded by imap-codec (in dbu_core::imap).
    async fn event(&mut self, name: &str) -> Result<dbu_core::imap::Event, ProbeFailure> {
        use dbu_core::imap::{Decoded, MAX_LITERAL, decode};
        loop {
            match decode(&self.buf) {
                Decoded::Event { consumed, event } => {
                    self.buf.drain(..consumed);
                    return Ok(event);
                }
                Decoded::Incomplete { literal: Some(n) } if n > MAX_LITERAL => {
                    return Err(failure(name, format!("a literal of {n} bytes"), false));
                }
                Decoded::Incomplete { .. } => self.fill(name).await?,
                Decoded::NotImap(text) => {
                    return Err(failure(
                        name,
                        format!("not IMAP: {}", bounded(&text, 200)),
                        false,
                    ));
                }
            }
        }
    }

    async fn send(&mut self, name: &str, bytes: &[u8]) -> Result<(), ProbeFailure> {
        let conn = &mut self.conn;
        tokio::time::timeout(self.timeout, async {
            conn.write_all(bytes).await?;
            conn.flush().await
        })
        .await
        .map_err(|_| failure(name, "write timed out", true))?
        .map_err(|e| failure(name, e.to_string(), false))
    }
}

/// Runs the IMAP probe against `t`; every exchange within `t.timeout`. What to send and what the
/// answers mean are `dbu_core::imap`'s; this only moves bytes.
pub async fn imap(t: &ImapTarget, input: dbu_core::imap::ProbeInput) -> Result<(), ProbeFailure> {
    use dbu_core::imap::{Answer, Event, ImapProbe, Part, Stage, Tls};
    let mut p = ImapProbe::new(input).map_err(|r| failure(&r.command, r.reply, false))?;
    let tcp = connect(&format!("{}:{}", t.ip, t.port), t.timeout).await?;
    let tls = if t.tls == Tls::None {
        None
    } else {
        Some(tls_connector(t).map_err(|e| failure("TLS setup", e, false))?)
    };
    let mut conn: Box<dyn Io> = Box::new(tcp);
    if t.tls == Tls::Implicit {
        conn = handshake(tls.as_ref(), t, conn).await?;
    }
    let mut w = Wire {
        conn,
        buf: Vec::new(),
        timeout: t.timeout,
    };
    loop {
        match dbu_core::imap::greeting(&w.buf) {
            Ok(n) => {
                w.buf.drain(..n);
                break;
            }
            Err(None) => w.fill("greeting").await?,
            Err(Some(line)) => {
                return Err(failure("greeting", p.scrub(&bounded(&line, 300)), false));
            }
        }
    }
    while let Some(cmd) = p.next() {
        let name = cmd.stage.name();
        let mut answer = Answer::default();
        let mut done = false;
        for part in &cmd.parts {
            match part {
                Part::Line(bytes) => w.send(name, bytes).await?,
                Part::AfterContinue(bytes) => {
                    // the server either asks for the rest (+) or refuses at once (tagged)
                    loop {
                        match w.event(name).await? {
                            Event::Continue => break,
                            e => {
                                done = answer.absorb(&cmd.tag, e).map_err(|e| {
                                    failure(name, p.scrub(&bounded(&e, 300)), false)
                                })?;
                                if done {
                                    break;
                                }
                            }
                        }
                    }
                    if done {
                        break;
                    }
                    w.send(name, bytes).await?;
                }
            }
        }
        while !done {
            let e = match w.event(name).await {
                // the server may close right after its BYE to LOGOUT
                Err(e) if cmd.stage == Stage::Logout && e.reply == "connection closed" => break,
                Err(e) if answer.bye.is_some() && e.reply == "connection closed" => break,
                other => other?,
            };
            done = answer
                .absorb(&cmd.tag, e)
                .map_err(|e| failure(name, p.scrub(&bounded(&e, 300)), false))?;
        }
        answer.line = bounded(&answer.line, 300);
        p.answer(&cmd, &answer)
            .map_err(|f| failure(&f.command, p.scrub(&f.reply), false))?;
        if cmd.stage == Stage::StartTls {
            // nothing may be read ahead of the handshake: injected plain text would be trusted
            if !w.buf.is_empty() {
                return Err(failure("STARTTLS", "data after the OK, before TLS", false));
            }
            w.conn = handshake(tls.as_ref(), t, w.conn).await?;
        }
        if cmd.stage == Stage::Logout {
            break;
        }
    }
    Ok(())
}

async fn handshake(
    tls: Option<&(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    t: &ImapTarget,
    conn: Box<dyn Io>,
) -> Result<Box<dyn Io>, ProbeFailure> {
    let Some((connector, name)) = tls else {
        return Err(failure("TLS handshake", "no TLS settings", false));
    };
    match tokio::time::timeout(t.timeout, connector.connect(name.clone(), conn)).await {
        Err(_) => Err(failure(
            "TLS handshake",
            format!("no handshake within {:?}", t.timeout),
            true,
        )),
        Ok(Err(e)) => Err(failure("TLS handshake", e.to_string(), false)),
        Ok(Ok(s)) => Ok(Box::new(s)),
    }
}

fn tls_connector(
    t: &ImapTarget,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    String,
> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let name = t.server_name.clone().unwrap_or_else(|| t.ip.clone());
    let name = ServerName::try_from(name).map_err(|e| format!("server name: {e}"))?;
    let config = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let pem = t.ca_pem.as_deref().ok_or("no CA bundle")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("CA bundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("CA bundle: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA bundle holds no certificate".into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// Accepts any certificate but still checks the handshake's signatures: `insecureSkipVerify`.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbu_core::imap::{ProbeInput, Secret, Tls};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A server on loopback that answers each line the probe sends with the next of `script`
    /// (several responses in one write where a script entry holds several).
    async fn server(
        script: Vec<&'static str>,
    ) -> (String, u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut heard = Vec::new();
            let mut script = script.into_iter();
            if let Some(greeting) = script.next() {
                s.write_all(greeting.as_bytes()).await.unwrap();
            }
            let mut buf = vec![0u8; 4096];
            for reply in script {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            heard
        });
        ("127.0.0.1".into(), port, task)
    }

    fn target(ip: String, port: u16, tls: Tls) -> ImapTarget {
        ImapTarget {
            ip,
            port,
            tls,
            server_name: Some("backend.example".into()),
            ca_pem: None,
            insecure_skip_verify: true,
            timeout: Duration::from_secs(5),
        }
    }

    fn input(tls: Tls) -> ProbeInput {
        ProbeInput {
            tls,
            login: "user1".into(),
            password: Secret("pw".into()),
            verify_mailbox: "INBOX".into(),
            token: "t".into(),
            append: None,
            login_only: true,
        }
    }

    #[tokio::test]
    async fn plain_text_after_the_starttls_ok_is_refused_before_any_credential() {
        // CVE-2011-0411's shape: a response injected behind the OK, read before the handshake
        let (ip, port, task) = server(vec![
            "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready.\r\n",
            "p1 OK Begin TLS negotiation now.\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n",
        ])
        .await;
        let err = imap(&target(ip, port, Tls::StartTls), input(Tls::StartTls))
            .await
            .unwrap_err();
        assert_eq!(
            (err.command.as_str(), err.reply.as_str()),
            ("STARTTLS", "data after the OK, before TLS")
        );
        let heard = task.await.unwrap();
        assert_eq!(heard, vec!["p1 STARTTLS\r\n"]);
    }

    #[tokio::test]
    async fn a_refused_login_names_the_command_and_the_reply_and_a_good_one_logs_out() {
        let (ip, port, task) = server(vec![
            "* OK ready.\r\n",
            "+ \r\n",
            "p1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ])
        .await;
        let err = imap(&target(ip, port, Tls::None), input(Tls::None))
            .await
            .unwrap_err();
        assert_eq!(err.command, "AUTHENTICATE PLAIN");
        assert_eq!(
            err.reply,
            "p1 NO [AUTHENTICATIONFAILED] Authentication failed."
        );
        assert!(!err.transient);
        // the SASL response went only after the continuation request
        assert_eq!(
            task.await.unwrap(),
            vec!["p1 AUTHENTICATE PLAIN\r\n", "AHVzZXIxAHB3\r\n"]
        );
        let (ip, port, task) = server(vec![
            "* OK ready.\r\n",
            "+ \r\n",
            "p1 OK Logged in\r\n",
            "* BYE Logging out\r\np2 OK Logout completed.\r\n",
        ])
        .await;
        imap(&target(ip, port, Tls::None), input(Tls::None))
            .await
            .unwrap();
        assert_eq!(
            task.await.unwrap().last().map(String::as_str),
            Some("p2 LOGOUT\r\n")
        );
    }

    #[tokio::test]
    async fn something_that_is_not_imap_is_said_so() {
        let (ip, port, _task) = server(vec!["SSH-2.0-OpenSSH_9.2\r\n"]).await;
        let err = imap(&target(ip, port, Tls::None), input(Tls::None))
            .await
            .unwrap_err();
        assert_eq!(err.command, "greeting");
        assert_eq!(err.reply, "SSH-2.0-OpenSSH_9.2");
    }
}
