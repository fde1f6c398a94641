//! The IMAP probe's inputs: the password (and login, CA bundle) read by name from the DBU's
//! namespace when a connection is made, held only for that connection.

use crate::imap::{self, ImapTarget, ProbeInput, Secret};
use crate::settings::{ObjectKey, Tls};

use super::{Cx, Run};

/// An IMAP connection's target and input. `Ok(Err((what, transient)))`: what is missing, and
/// whether a retry may help (the API unreachable) rather than a human (a missing key).
pub fn imap_inputs(
    cx: &mut Cx<'_>,
    tls: &Tls,
    ip: &str,
    port: u16,
    token: String,
    append: Option<String>,
) -> Run<Result<(ImapTarget, ProbeInput), (String, bool)>> {
    let s = cx.s;
    let Some(p) = &s.imap_probe else {
        return Ok(Err(("no IMAP probe".into(), false)));
    };
    let read = |cx: &mut Cx<'_>, key: ObjectKey| -> Run<Result<String, (String, bool)>> {
        Ok(match cx.read_key(&key)? {
            Ok(Some(v)) => text(&key, v),
            Ok(None) => Err((format!("{} not found", describe(&key)), false)),
            Err(e) => Err((format!("reading {}: {e}", describe(&key)), e.transient)),
        })
    };
    let secret = |key: &str| ObjectKey::Secret {
        name: p.secret.clone(),
        key: key.to_string(),
    };
    let password = match read(cx, secret(&p.password_key))? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let login = match &p.username_key {
        Some(k) => match read(cx, secret(k))? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        },
        None => s.user.clone(),
    };
    // a CA bundle matters only where a certificate is checked
    let ca_pem = match &tls.ca {
        Some(k) if tls.mode != imap::Tls::None && !tls.insecure_skip_verify => {
            match cx.read_key(k)? {
                Ok(Some(v)) => Some(v),
                Ok(None) => return Ok(Err((format!("{} not found", describe(k)), false))),
                Err(e) => {
                    return Ok(Err((format!("reading {}: {e}", describe(k)), e.transient)));
                }
            }
        }
        _ => None,
    };
    Ok(Ok((
        ImapTarget {
            ip: ip.to_string(),
            port,
            tls: tls.mode,
            server_name: tls.server_name.clone(),
            ca_pem,
            insecure_skip_verify: tls.insecure_skip_verify,
            timeout: p.timeout,
        },
        ProbeInput {
            tls: tls.mode,
            login,
            password: Secret(password),
            verify_mailbox: s.mailbox.clone(),
            token,
            append,
            login_only: false,
        },
    )))
}

fn text(key: &ObjectKey, v: Vec<u8>) -> Result<String, (String, bool)> {
    String::from_utf8(v)
        .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|_| (format!("{} is not UTF-8 text", describe(key)), false))
}

/// Before a backend is drained: whether Verify's IMAP probe (and the soak's login) will find
/// what they read (the password, the login, the CA bundles). Draining a backend whose Verify
/// cannot pass would leave it out of the ring.
pub fn credentials(cx: &mut Cx<'_>) -> Run<Result<(), String>> {
    let s = cx.s;
    let Some(p) = &s.imap_probe else {
        return Ok(Ok(()));
    };
    if let Err((m, _)) = imap_inputs(cx, &p.tls, "", p.port, String::new(), None)? {
        return Ok(Err(m));
    }
    if let Some(l) = &s.director_login
        && let Err((m, _)) = imap_inputs(cx, &l.tls, "", l.port, String::new(), None)?
    {
        return Ok(Err(m));
    }
    Ok(Ok(()))
}

/// A key as it is named in a failure (the value never is).
fn describe(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Secret { name, key } => format!("key {key:?} of Secret {name:?}"),
        ObjectKey::ConfigMap { name, key } => format!("key {key:?} of ConfigMap {name:?}"),
    }
}
