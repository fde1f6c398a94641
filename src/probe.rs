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

/// The largest literal the probe reads (its own message is a few hundred bytes).
const MAX_LITERAL: usize = 1 << 20;

/// Runs the IMAP probe against `t`; every exchange within `t.timeout`.
pub async fn imap(t: &ImapTarget, input: dbu_core::imap::ProbeInput) -> Result<(), ProbeFailure> {
    use dbu_core::imap::{ImapProbe, Stage, Tls};
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
    let mut r = BufReader::new(conn);
    let greeting = read_line(&mut r, t.timeout, "greeting").await?;
    p.greeting(&greeting)
        .map_err(|f| failure(&f.command, f.reply, false))?;
    while let Some(cmd) = p.next() {
        let name = cmd.stage.name();
        send(&mut r, t.timeout, name, &cmd.first).await?;
        let mut answer = dbu_core::imap::Answer::default();
        let mut done = false;
        if let Some(then) = &cmd.then {
            // the server either asks for the rest (+) or refuses at once (tagged)
            loop {
                let l = read_line(&mut r, t.timeout, name).await?;
                match dbu_core::imap::line(&l) {
                    dbu_core::imap::Line::Continuation(_) => break,
                    _ => {
                        if absorb(&mut r, t.timeout, name, &cmd.tag, &l, &mut answer).await? {
                            done = true;
                            break;
                        }
                    }
                }
            }
            if !done {
                let then = then.trim_end_matches("\r\n");
                send(&mut r, t.timeout, name, then).await?;
            }
        }
        if !done {
            loop {
                let l = match read_line(&mut r, t.timeout, name).await {
                    Err(e) if cmd.stage == Stage::Logout && e.reply == "connection closed" => {
                        break;
                    }
                    other => other?,
                };
                if absorb(&mut r, t.timeout, name, &cmd.tag, &l, &mut answer).await? {
                    break;
                }
            }
        }
        p.answer(&cmd, &answer)
            .map_err(|f| failure(&f.command, p.scrub(&f.reply), false))?;
        if cmd.stage == Stage::StartTls {
            // nothing may be read ahead of the handshake: injected plain text would be trusted
            if !r.buffer().is_empty() {
                return Err(failure("STARTTLS", "data after the OK, before TLS", false));
            }
            let plain = r.into_inner();
            r = BufReader::new(handshake(tls.as_ref(), t, plain).await?);
        }
        if cmd.stage == Stage::Logout {
            break;
        }
    }
    Ok(())
}

/// Adds one server line (and the literals it announces) to `a`; true once the tagged reply of
/// `tag` is in.
async fn absorb<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
    name: &str,
    tag: &str,
    first: &str,
    a: &mut dbu_core::imap::Answer,
) -> Result<bool, ProbeFailure> {
    use dbu_core::imap::{Line, line, literal};
    let mut l = first.to_string();
    let mut text = String::new();
    // a line may announce a literal, after which the same response goes on
    while let Some(n) = literal(&l) {
        if n > MAX_LITERAL {
            return Err(failure(name, format!("a literal of {n} bytes"), false));
        }
        let mut buf = vec![0; n];
        tokio::time::timeout(timeout, tokio::io::AsyncReadExt::read_exact(r, &mut buf))
            .await
            .map_err(|_| failure(name, format!("no reply within {timeout:?}"), true))?
            .map_err(|e| failure(name, e.to_string(), false))?;
        a.literals.push(buf);
        text.push_str(l.trim_end());
        l = read_line(r, timeout, name).await?;
    }
    text.push_str(&l);
    match line(&text) {
        Line::Tagged {
            tag: t,
            status,
            text,
        } if t == tag => {
            a.status = Some(status);
            a.tagged_text = bounded(&text, 300);
            Ok(true)
        }
        Line::Untagged { status: None, text } => {
            if a.untagged.len() < 1000 {
                a.untagged.push(bounded(&text, 4096));
            }
            Ok(false)
        }
        Line::Untagged { .. } | Line::Continuation(_) => Ok(false),
        Line::Tagged { .. } | Line::Garbage(_) => Err(failure(
            name,
            format!("not IMAP: {}", bounded(text.trim_end(), 200)),
            false,
        )),
    }
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    timeout: Duration,
    name: &str,
    text: &str,
) -> Result<(), ProbeFailure> {
    let out = format!("{text}\r\n");
    tokio::time::timeout(timeout, async {
        w.write_all(out.as_bytes()).await?;
        w.flush().await
    })
    .await
    .map_err(|_| failure(name, "write timed out", true))?
    .map_err(|e| failure(name, e.to_string(), false))
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
    name: &str,
) -> Result<String, ProbeFailure> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(timeout, r.take(64 * 1024).read_until(b'\n', &mut buf))
        .await
        .map_err(|_| failure(name, format!("no reply within {timeout:?}"), true))?
        .map_err(|e| failure(name, e.to_string(), false))?;
    if n == 0 {
        return Err(failure(name, "connection closed", false));
    }
    if !buf.ends_with(b"\n") {
        return Err(failure(name, "a line longer than 64 KiB", false));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
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
