//! Verify as a user would, against real Dovecot: IMAP (STARTTLS) and LMTP probes at the new pod's own IP, and the soak after RingRestore.
//!
//! Needs root (mount namespaces), Debian's dovecot packages and openssl; `.ci/run` installs them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{report, rig};
use dbu_lab::{LAB_PASSWORD, Lab};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::engine::{self, Probes};
use dovecot_upgrade_operator::machine::Note;
use dovecot_upgrade_operator::settings::Settings;
use serde_json::json;

const NAME: &str = "imap.lab.test";

/// A CA and two server certificates it signed: one for `NAME`, one for another name.
struct Certs {
    good: (String, String),
    wrong_name: (String, String),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn certs(lab: &Lab) -> Certs {
    let dir = lab.spec.root.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=lab CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&dir, &ca);
    let issue = |stem: &str, name: &str| {
        let mut req = vec!["req"];
        req.extend(ec);
        let (key, csr, crt, ext) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
            format!("{stem}.ext"),
        );
        req.extend(["-keyout", &key, "-out", &csr, "-subj"]);
        let subj = format!("/CN={name}");
        req.push(&subj);
        openssl(&dir, &req);
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        );
        let p = |f: &str| dir.join(f).display().to_string();
        (p(&crt), p(&key))
    };
    let good = issue("imap", NAME);
    let wrong_name = issue("other", "other.lab.test");
    lab.put_config_map(
        "mail-ca",
        "ca.crt",
        &std::fs::read(dir.join("ca.crt")).unwrap(),
    );
    Certs { good, wrong_name }
}

/// Config lines of a revision that serves IMAP with STARTTLS using `cert`.
fn tls_conf((cert, key): &(String, String)) -> String {
    format!("ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n")
}

/// The probe Secret, as `kubectl create secret generic probe --from-literal=password=...` makes it.
fn put_probe_secret(lab: &Lab) {
    lab.put_secret("probe", "password", LAB_PASSWORD.as_bytes());
}

/// Both probes, IMAP over STARTTLS checked against the lab CA; `extra` merged in.
fn settings(extra: serde_json::Value) -> Settings {
    let mut v = json!({
        "drain": {"pollInterval": "1s", "timeout": "15s"},
        "verify": {
            "imapProbe": {
                "credentialsSecret": {"name": "probe"},
                "tls": {"mode": "StartTLS", "serverName": NAME, "caBundle": {"configMap": "mail-ca"}}
            }
        }
    });
    dbu_core::fixtures::merge_patch(&mut v, extra);
    common::settings(v)
}

/// Messages of the verify user carrying the probe header, on `pod`.
fn probe_mail(lab: &Lab, pod: &str, user: &str) -> String {
    lab.doveadm(
        pod,
        &[
            "search",
            "-u",
            user,
            "mailbox",
            "*",
            "header",
            "X-DBU-Probe",
            "",
        ],
    )
    .unwrap()
}

fn ring_host(lab: &Lab, pod: &str) -> (u32, bool) {
    let ip = lab.pod_ip(pod).unwrap();
    let h = lab
        .ring()
        .unwrap()
        .into_iter()
        .find(|h| h.ip == ip)
        .unwrap();
    (h.vhosts, h.up)
}

fn stalled(st: &DovecotBackendUpgradeStatus) -> (String, String, String) {
    let c = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Nothing the operator wrote or said holds the probe password.
fn no_password(st: &DovecotBackendUpgradeStatus, notes: &[Note]) {
    let status = serde_json::to_string(st).unwrap();
    assert!(!status.contains(LAB_PASSWORD), "password in status");
    for n in notes {
        assert!(!n.message.contains(LAB_PASSWORD), "password in {n:?}");
    }
}

/// Each broken revision passes the doveadm checks (they read the store) and the LMTP probe,
/// but fails the IMAP probe at the new pod's own IP: the backend stays out of the ring, the
/// rollout halts naming protocol, command and reply, and no probe mail stays. A fixed
/// revision and a retry then pass both probes and the soak, and the next backends follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_imap_revisions_fail_the_probe_and_a_good_one_passes_probe_and_soak() {
    let started = Instant::now();
    let rig = rig(38);
    let lab = &rig.lab;
    let certs = certs(lab);
    put_probe_secret(lab);
    let s = settings(json!({"verify": {"soak": {
        "enabled": true, "timeout": "20s", "directorLogin": {"tls": {"mode": "None"}}
    }}}));
    let user = s.user.clone();
    // a message the user marked deleted but did not expunge must survive the probe's expunge
    lab.doveadm(
        "backend-1",
        &[
            "flags",
            "add",
            "-u",
            &user,
            "\\Deleted",
            "mailbox",
            "INBOX",
            "1",
        ],
    )
    .unwrap();
    let count = |lab: &Lab| lab.inbox_count("backend-1", &user).unwrap();
    let before = count(lab);
    let tls = tls_conf(&certs.good);
    let broken = [
        (
            "rev-2",
            format!(
                "{tls}service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n}}\n"
            ),
            "connect",
            "refused",
        ),
        (
            "rev-3",
            tls.clone(),
            "AUTHENTICATE PLAIN",
            "AUTHENTICATIONFAILED",
        ),
        (
            "rev-4",
            tls_conf(&certs.wrong_name),
            "TLS handshake",
            "not valid for name",
        ),
    ];
    lab.revision_password("rev-3", &user, "not-the-probe-password");
    let mut st = DovecotBackendUpgradeStatus::default();
    let mut all = Vec::new();
    let mut seen = Vec::new();
    for (i, (rev, conf, command, reply)) in broken.iter().enumerate() {
        lab.new_revision(rev, conf);
        let mut retry = s.clone();
        retry.retry_token = (i > 0).then(|| i.to_string());
        let (next, notes) = common::finish(&retry, &lab.exec(), lab, st).await;
        st = next;
        all.extend(notes);
        let (status, reason, message) = stalled(&st);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "ProbeFailed"),
            "{rev}: {st:#?}"
        );
        assert!(
            message.contains("step Verify")
                && message.contains("IMAP")
                && message.contains(command)
                && message.contains(reply),
            "{rev}: {message}"
        );
        let rec = &st.backends[0];
        assert_eq!((rec.step, rec.failed), (Step::Verify, true));
        assert_eq!(
            ring_host(lab, &rec.pod),
            (0, false),
            "{rev}: kept out of the ring"
        );
        assert_eq!(st.backends.len(), 1, "{rev}: no other backend started");
        assert_eq!(count(lab), before, "{rev}: no probe mail left");
        seen.push(format!(
            "{rev}: {}",
            message.split(": ").last().unwrap_or("")
        ));
    }
    lab.new_revision("rev-5", &tls);
    let mut retry = s.clone();
    retry.retry_token = Some("fixed".into());
    let (st, notes) = common::finish(&retry, &lab.exec(), lab, st).await;
    all.extend(notes.iter().cloned());
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}\n{notes:#?}");
    for pod in ["backend-0", "backend-1", "backend-2"] {
        let ok = |step: &str, text: &str| {
            notes.iter().any(|n| {
                n.reason == "StepSucceeded"
                    && n.message.contains(pod)
                    && n.message.contains(step)
                    && n.message.contains(text)
            })
        };
        assert!(
            ok("Verify", "IMAP on port 143 (StartTls) logged in"),
            "{pod}: {notes:#?}"
        );
        assert!(
            ok("Soak", "through the director landed on") || ok("Soak", "users to"),
            "{pod}: {notes:#?}"
        );
    }
    // one at a time: each backend's soak ended before the next one started
    let order: Vec<&str> = notes
        .iter()
        .filter(|n| {
            n.reason == "BackendStarted"
                || (n.reason == "StepSucceeded" && n.message.contains("Soak"))
        })
        .map(|n| {
            if n.reason == "BackendStarted" {
                "start"
            } else {
                "soaked"
            }
        })
        .collect();
    assert_eq!(
        order,
        ["soaked", "start", "soaked", "start", "soaked"],
        "{notes:#?}"
    );
    assert_eq!(
        count(lab),
        before,
        "message count unchanged, the \\Deleted one kept"
    );
    assert_eq!(
        probe_mail(lab, "backend-1", &user).trim(),
        "",
        "no probe mail"
    );
    for pod in ["backend-0", "backend-1", "backend-2"] {
        assert!(ring_host(lab, pod).1, "{pod} back up");
    }
    no_password(&st, &all);
    for n in notes.iter().filter(|n| {
        n.reason == "StepSucceeded" && (n.message.contains("Soak") || n.message.contains("Verify"))
    }) {
        eprintln!("{}", n.message);
    }
    report(
        "IMAP probe: listener, auth, TLS name; good revision with soak",
        started,
        &seen.join("; "),
    );
}

/// A restored backend that takes no traffic within the soak time (no users, and no login
/// through a director to send one) is drained again and the rollout halts: it is never left
/// in the ring unproven, and the next backend does not start. A retry verifies it again,
/// restores it and soaks anew (before, the retry found the host drained, took that for a
/// human's doing, and completed with the backend at 0 vhosts, down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_without_traffic_drains_the_backend_again_halts_and_a_retry_verifies_it_again() {
    let started = Instant::now();
    let rig = rig(39);
    let lab = &rig.lab;
    put_probe_secret(lab);
    let s = settings(json!({"verify": {
        "imapProbe": {"tls": {"mode": "None"}},
        "soak": {"enabled": true, "timeout": "3s", "directorLogin": {"enabled": false}}
    }}));
    lab.new_revision("rev-2", "");
    let (st, _notes) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    let (status, reason, message) = stalled(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SoakFailed"),
        "{st:#?}"
    );
    assert!(
        message.contains("step Soak") && message.contains("drained again"),
        "{message}"
    );
    let rec = &st.backends[0];
    assert_eq!((rec.step, rec.failed), (Step::Soak, true));
    assert_eq!(ring_host(lab, &rec.pod), (0, false), "drained again");
    assert_eq!(st.backends.len(), 1, "the next backend did not start");
    let (pod, want) = (rec.pod.clone(), rec.original_vhosts);
    // a retry goes through Verify and RingRestore again, and soaks anew: still no traffic, so
    // it fails again and is drained again (never completes on a soak that finds it out)
    let mut retry = s.clone();
    retry.retry_token = Some("1".into());
    let (st, notes) = common::finish(&retry, &lab.exec(), lab, st).await;
    let steps_done = |notes: &[Note]| -> Vec<String> {
        notes
            .iter()
            .filter(|n| n.reason == "StepSucceeded")
            .filter_map(|n| n.message.split(' ').nth(1).map(str::to_string))
            .collect()
    };
    assert_eq!(steps_done(&notes), ["Verify", "RingRestore"], "{notes:#?}");
    let (_, reason, again) = stalled(&st);
    assert_eq!(reason, "SoakFailed", "{st:#?}");
    assert_eq!(ring_host(lab, &pod), (0, false), "drained again");
    // the author turns the soak off and retries: verified again, back in the ring, completed
    let mut off = settings(json!({"verify": {"imapProbe": {"tls": {"mode": "None"}}}}));
    off.retry_token = Some("2".into());
    let (st, notes) = common::finish(&off, &lab.exec(), lab, st).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
    assert_eq!(
        steps_done(&notes)[..3],
        ["Verify", "RingRestore", "Soak"],
        "{notes:#?}"
    );
    assert_eq!(ring_host(lab, &pod), (want, true), "back at its count");
    report(
        "soak without traffic",
        started,
        &format!(
            "{message}; retried: Verify, RingRestore, soak failed again ({}); soak off and retried: verified, back at {want} vhosts, completed",
            dbu_core::text::bounded(&again, 80)
        ),
    );
}

/// The probes, except that the first IMAP probe never answers: the operator is killed there,
/// after LMTP delivered the probe message and before IMAP removed it.
struct HangFirstImap {
    hang: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Probes for HangFirstImap {
    async fn lmtp(
        &self,
        ip: &str,
        port: u16,
        timeout: Duration,
        user: &str,
        message: &str,
    ) -> Result<(), dovecot_upgrade_operator::probe::ProbeFailure> {
        engine::NetProbes
            .lmtp(ip, port, timeout, user, message)
            .await
    }
    async fn imap(
        &self,
        target: &dovecot_upgrade_operator::probe::ImapTarget,
        input: dbu_core::imap::ProbeInput,
    ) -> Result<(), dovecot_upgrade_operator::probe::ProbeFailure> {
        if self.hang.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        engine::NetProbes.imap(target, input).await
    }
}

/// The operator dies in the middle of Verify's probes: the restarted one runs Verify again
/// (its intent was recorded), removes the leftover probe message first, finishes, and leaves
/// no probe mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_probe_finishes_verify_and_leaves_no_probe_mail() {
    let started = Instant::now();
    let rig = rig(40);
    let lab = &rig.lab;
    put_probe_secret(lab);
    let s = settings(json!({"verify": {"imapProbe": {"tls": {"mode": "None"}}}}));
    let user = s.user.clone();
    let before = lab.inbox_count("backend-1", &user).unwrap();
    lab.new_revision("rev-2", "");
    let hanging = HangFirstImap {
        hang: std::sync::atomic::AtomicBool::new(true),
        entered: tokio::sync::Notify::new(),
    };
    let mut last = DovecotBackendUpgradeStatus::default();
    {
        let now = common::now;
        let exec = lab.exec();
        let drive = engine::drive(
            &s,
            DovecotBackendUpgradeStatus::default(),
            &exec,
            lab,
            &hanging,
            &now,
            Duration::from_secs(300),
            |o| last = o.status.clone(),
        );
        tokio::select! {
            r = drive => panic!("the rollout ended without an IMAP probe: {r:?}"),
            _ = hanging.entered.notified() => {}
        }
    }
    // killed: what was written last is what the restarted operator reads
    assert_eq!(last.backends[0].step, Step::Verify, "{last:#?}");
    assert!(
        !probe_mail(lab, "backend-1", &user).trim().is_empty(),
        "the LMTP probe message is there while the operator is dead"
    );
    let (st, notes) = common::finish(&s, &lab.exec(), lab, last).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}\n{notes:#?}");
    assert_eq!(lab.inbox_count("backend-1", &user).unwrap(), before);
    assert_eq!(
        probe_mail(lab, "backend-1", &user).trim(),
        "",
        "no probe mail"
    );
    report(
        "operator killed mid-probe",
        started,
        "Verify re-run after restart; leftover expunged; no probe mail",
    );
}

/// Without the verify user's Secret the IMAP probe could never log in, so no backend is
/// drained: the rollout stalls before the first one, naming the Secret and key (never a
/// value). Once the Secret exists the rollout goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_probe_secret_stalls_before_any_backend_is_drained() {
    let rig = rig(41);
    let lab = &rig.lab;
    let s = settings(json!({"verify": {"imapProbe": {"tls": {"mode": "None"}}}}));
    lab.new_revision("rev-2", "");
    let ring_before = lab.ring().unwrap();
    let (st, _) =
        common::finish(&s, &lab.exec(), lab, DovecotBackendUpgradeStatus::default()).await;
    let (status, reason, message) = stalled(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ProbeCredentialsUnreadable"),
        "{st:#?}"
    );
    assert!(
        message.contains("key \"password\" of Secret \"probe\" not found"),
        "{message}"
    );
    assert!(st.backends.is_empty(), "no backend started: {st:#?}");
    assert_eq!(lab.ring().unwrap(), ring_before, "the ring untouched");
    put_probe_secret(lab);
    let (st, _) = common::finish(&s, &lab.exec(), lab, st).await;
    assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
}

/// A revision on which every login fails (its passdb has other passwords), with users logging
/// in and mail arriving through the director all the while. Verify passes (doveadm, and the
/// probe user's own login). The director maps users to the restored backend (deliveries, and
/// logins it proxies there), but no login is served: the soak fails and drains it again.
/// Before, the mappings alone passed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_where_every_login_fails_does_not_pass_the_soak_on_director_mappings() {
    let started = Instant::now();
    let rig = rig(55);
    let lab = &rig.lab;
    put_probe_secret(lab);
    // the probe user (user1) keeps its password: Verify's IMAP login passes on the new pod
    let users: Vec<String> = (2..=30).map(|u| format!("user{u}")).collect();
    for u in &users {
        lab.revision_password("rev-2", u, "not-the-users-password");
    }
    lab.new_revision("rev-2", "");
    let s = settings(json!({"verify": {
        "imapProbe": {"tls": {"mode": "None"}},
        "soak": {"enabled": true, "timeout": "8s", "directorLogin": {"enabled": false}}
    }}));
    let exec = lab.exec();
    let st = common::until_step(&s, &exec, lab, Step::Soak).await;
    // users come (their earlier mappings expired): logins and mail through the director
    let traffic = dbu_lab::traffic::Traffic::start(dbu_lab::traffic::TrafficSpec {
        directors: vec![lab.spec.director_ip()],
        long_lived: Vec::new(),
        loopers: users.clone(),
        recipients: users.clone(),
        lmtp_interval: Duration::from_millis(100),
        max_duration: Duration::from_secs(240),
    });
    let (st, notes) = common::finish(&s, &exec, lab, st).await;
    let stats = traffic.stop();
    let (status, reason, message) = stalled(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SoakFailed"),
        "{st:#?}\n{notes:#?}"
    );
    assert!(
        message.contains("serves no session") && !message.contains("maps 0 users"),
        "the director mapped users to it, and no login was served: {message}"
    );
    assert_eq!(st.backends.len(), 1, "held at the first backend: {st:#?}");
    let rec = &st.backends[0];
    assert_eq!(ring_host(lab, &rec.pod), (0, false), "drained again");
    assert!(stats.logins_failed > 0, "logins failed on it: {stats:?}");
    report(
        "soak on a backend where every login fails",
        started,
        &format!(
            "{message}; traffic: {} logins ok, {} failed",
            stats.logins_ok, stats.logins_failed
        ),
    );
}
