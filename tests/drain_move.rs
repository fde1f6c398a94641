//! The Move drain against real Dovecot 2.3.19 under a realistic workload: what moves, what waits.
//!
//! Director and backends run on 127.0.5x.0/24 with the production user expiry (15 minutes), so a
//! drain that ends before its ceiling ended because the operator moved the users, not because
//! their mappings expired. Needs root (see tests/lab).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rig, report, rig_with, settings};
use dbu_lab::workload::{Workload, WorkloadSpec, prime};
use dbu_lab::{self as lab, ImapSession, LabSpec, LocalExec};
use dovecot_upgrade_operator::api::{DovecotBackendUpgradeStatus, Phase, Step};
use dovecot_upgrade_operator::dovecot;
use dovecot_upgrade_operator::exec::{ExecRequest, PodExec};
use serde_json::json;

fn busy_rig(net: u8, users: u32) -> Rig {
    rig_with(|d| {
        let mut spec = LabSpec::new(d, net, vec![100, 100, 100]);
        spec.users = users;
        spec.user_expire = "15m".into();
        spec.hibernate_after = Some("2s".into());
        spec
    })
}

/// Users seen on more than one backend in one sample of `who -1` on every backend.
#[derive(Default)]
struct TwoBackends {
    samples: u64,
    seen_twice: Vec<String>,
    /// The widest sample: from the first `who` sent to the last answer received.
    max_skew: Duration,
}

/// Samples `who -1` on every backend every 100 ms until `stop`, all backends at once (one
/// snapshot, its time skew kept): a short overlap cannot fall between one backend's look and
/// the next one's.
fn watch_two_backends(
    exec: LocalExec,
    pods: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<TwoBackends>>) {
    let found = Arc::new(Mutex::new(TwoBackends::default()));
    let f = found.clone();
    let argv = dovecot::Doveadm::default().who();
    let h = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let mut on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let sent = Instant::now();
            let looks = pods.iter().map(|pod| {
                let (exec, argv) = (&exec, &argv);
                async move {
                    let req = ExecRequest {
                        pod,
                        container: None,
                        argv,
                        timeout: Duration::from_secs(5),
                    };
                    (pod, exec.exec(req).await)
                }
            });
            let answers = futures::future::join_all(looks).await;
            let skew = sent.elapsed();
            for (pod, out) in answers {
                // a stopped or replaced backend answers nothing: it serves nobody
                let Ok(out) = out else {
                    continue;
                };
                for s in dovecot::parse_who_sessions(&out.stdout).unwrap_or_default() {
                    on.entry(s.user).or_default().insert(pod.clone());
                }
            }
            {
                let mut f = f.lock().unwrap();
                f.samples += 1;
                f.max_skew = f.max_skew.max(skew);
                for (user, pods) in on {
                    if pods.len() > 1 {
                        f.seen_twice.push(format!("{user} on {pods:?}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (h, found)
}

/// Users 2-40 that the director maps to `ip` after one login and logout each (no session left).
fn users_mapped_to(lab: &lab::Lab, ip: &str) -> Vec<String> {
    let dip = lab.spec.director_ip();
    (2..=40)
        .map(|i| format!("user{i}"))
        .filter(|u| {
            ImapSession::login(&dip, u).unwrap().logout();
            lab.user_host(u).unwrap().as_deref() == Some(ip)
        })
        .collect()
}

fn who_users(lab: &lab::Lab, pod: &str) -> BTreeSet<String> {
    lab.doveadm(pod, &["-f", "json", "who", "-1"])
        .ok()
        .and_then(|o| dovecot::parse_who_sessions(&o).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.user)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_drain_under_a_realistic_workload_moves_everyone_before_the_ceiling() {
    let t0 = Instant::now();
    let rig = busy_rig(50, 150);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    let spec = WorkloadSpec::mix(&dip, 120, Duration::from_secs(20));
    // mail for every IDLE user before anything starts, read back as the baseline
    for u in &spec.idle {
        lab::lmtp_deliver(&dip, u, "before").unwrap();
    }
    prime(&dip, &spec.recent).unwrap();
    let idle: Vec<String> = spec.idle.clone();
    let work = Workload::start(spec).unwrap();
    // IDLE sessions hibernate after 2 s; let some do so
    tokio::time::sleep(Duration::from_secs(3)).await;
    lab.new_revision("rev-2", "");
    // Fail at the ceiling: a drain that ends must have ended by moving
    let s = settings(json!({"drain": {"maxParallel": 5, "timeout": "150s", "onTimeout": "Fail"}}));
    let exec = lab.exec();
    let stop = Arc::new(AtomicBool::new(false));
    let (sampler, twice) = watch_two_backends(exec.clone(), lab.backend_names(), stop.clone());

    let mut status = DovecotBackendUpgradeStatus::default();
    let mut drained: Vec<(String, Duration)> = Vec::new();
    let mut waits: BTreeMap<String, Instant> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(900);
    loop {
        let before: BTreeMap<String, Step> = status
            .backends
            .iter()
            .map(|r| (r.pod.clone(), r.step))
            .collect();
        let out = common::once(&s, status, &exec, lab).await;
        status = out.status;
        for r in &status.backends {
            let was = before.get(&r.pod).copied();
            if r.step == Step::WaitSessions && was != Some(Step::WaitSessions) {
                waits.insert(r.pod.clone(), Instant::now());
            }
            if was == Some(Step::WaitSessions) && r.step != Step::WaitSessions {
                let took = waits[&r.pod].elapsed();
                drained.push((r.pod.clone(), took));
                // nobody left there, and every IDLE client that was there is connected again
                // elsewhere within the director's kick delay and a reconnect
                assert!(
                    who_users(lab, &r.pod).is_empty(),
                    "{}: sessions left",
                    r.pod
                );
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let mut everywhere = BTreeSet::new();
                    for b in lab.backend_names() {
                        everywhere.extend(who_users(lab, &b));
                    }
                    let missing: Vec<&String> =
                        idle.iter().filter(|u| !everywhere.contains(*u)).collect();
                    if missing.is_empty() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: IDLE users not back: {missing:?}",
                        r.pod
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for u in &idle {
                    let host = lab.user_host(u).unwrap();
                    assert_ne!(
                        host.as_deref(),
                        Some(r.ip.as_str()),
                        "{u} still mapped to {}",
                        r.pod
                    );
                }
            }
        }
        if matches!(status.phase, Some(Phase::Completed | Phase::Failed)) {
            break;
        }
        assert!(Instant::now() < end, "rollout did not end: {status:#?}");
        let wait = out.requeue.unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let stats = work.stop();
    assert_eq!(status.phase, Some(Phase::Completed), "{status:#?}");
    let moved: u64 = status
        .backends
        .iter()
        .filter_map(|r| r.drain.as_ref())
        .map(|d| d.sessions_moved)
        .sum();
    let flushed: u64 = status
        .backends
        .iter()
        .filter_map(|r| r.drain.as_ref())
        .map(|d| d.users_moved)
        .sum();
    let twice = twice.lock().unwrap();
    assert!(twice.samples > 20, "too few samples: {}", twice.samples);
    assert!(
        twice.seen_twice.is_empty(),
        "served by two backends at once: {:?}",
        twice.seen_twice
    );
    assert_eq!(stats.failed_logins(), 0, "{:?}", stats.noticed);
    assert_eq!(stats.bounced(), 0, "{:?}", stats.noticed);
    // every IDLE user sat on one of the three backends: each was moved once, with one kick
    assert!(
        moved >= idle.len() as u64,
        "moved {moved} of {} IDLE users",
        idle.len()
    );
    assert!(
        stats.kicks() as u64 <= moved,
        "kicks {} > moves {moved}",
        stats.kicks()
    );
    assert!(flushed > 0, "no sessionless user moved at once");
    // mail intact: the message from before, and every delivery since, in each IDLE user's INBOX
    let backend = lab.backend_names()[0].clone();
    for u in &idle {
        let n = lab.inbox_count(&backend, u).unwrap();
        let want = 1 + stats.delivered.get(u).copied().unwrap_or(0);
        assert!(n >= want, "{u}: {n} messages, expected at least {want}");
    }
    report(
        "move drain, realistic workload (15m expiry, 120 users)",
        t0,
        &format!(
            "drains {:?}; {moved} sessions moved, {flushed} sessionless users moved, {} kicks, 0 failed logins, {} who snapshots of all backends at once (widest {} ms), never on two backends",
            drained
                .iter()
                .map(|(p, d)| format!("{p} {:.1}s", d.as_secs_f64()))
                .collect::<Vec<_>>(),
            stats.kicks(),
            twice.samples,
            twice.max_skew.as_millis()
        ),
    );
}

/// An LMTP delivery through the director that waits `hold` before its final dot; the reply
/// and when it came.
fn slow_delivery(director: &str, user: &str, hold: Duration) -> (String, Instant) {
    let s = TcpStream::connect((director, 24)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    reply();
    for c in [
        "LHLO lab.invalid".to_string(),
        "MAIL FROM:<lab@lab.invalid>".into(),
        format!("RCPT TO:<{user}>"),
        "DATA".into(),
    ] {
        write!(w, "{c}\r\n").unwrap();
        reply();
    }
    write!(w, "Subject: slow\r\n\r\nslow\r\n").unwrap();
    std::thread::sleep(hold);
    write!(w, ".\r\n").unwrap();
    let got = reply();
    let at = Instant::now();
    let _ = write!(w, "QUIT\r\n");
    (got, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_in_flight_holds_the_move_until_it_is_stored() {
    let t0 = Instant::now();
    let rig = busy_rig(51, 40);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    // Ordinal order: backend-2 drains first; find users mapped to it, no session left
    let target = lab.pod_ip("backend-2").unwrap();
    let mapped = users_mapped_to(lab, &target);
    assert!(mapped.len() >= 2, "users on backend-2: {mapped:?}");
    let before = lab.inbox_count("backend-2", &mapped[0]).unwrap_or(0);
    let (dip2, user) = (dip.clone(), mapped[0].clone());
    let delivery = std::thread::spawn(move || slow_delivery(&dip2, &user, Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"strategy": "Move", "timeout": "60s", "onTimeout": "Fail"}}));
    let exec = lab.exec();
    let mut status = DovecotBackendUpgradeStatus::default();
    let mut held = Vec::new();
    let mut moved_at = None;
    let end = Instant::now() + Duration::from_secs(120);
    while moved_at.is_none() {
        assert!(Instant::now() < end, "no move: {status:#?}");
        let out = common::once(&s, status, &exec, lab).await;
        status = out.status;
        if let Some(r) = status.backends.iter().find(|r| r.pod == "backend-2") {
            if r.step == Step::WaitSessions
                && let Some(m) = &r.message
                && m.contains("deliveries in flight")
            {
                held.push(m.clone());
            }
            if r.drain.as_ref().is_some_and(|d| d.users_moved > 0) {
                moved_at = Some(Instant::now());
            }
        }
        tokio::time::sleep(
            out.requeue
                .unwrap_or_default()
                .min(Duration::from_millis(500)),
        )
        .await;
    }
    let (reply, stored_at) = delivery.join().unwrap();
    let moved_at = moved_at.unwrap();
    assert!(reply.starts_with("250"), "delivery: {reply}");
    assert!(
        !held.is_empty(),
        "the drain never said it waited for the delivery"
    );
    // the flush came only after the delivery was stored (its reply may trail by a hop)
    assert!(
        moved_at + Duration::from_millis(300) >= stored_at,
        "moved {:?} before the delivery was stored",
        stored_at - moved_at
    );
    assert_eq!(
        lab.inbox_count("backend-2", &mapped[0]).unwrap(),
        before + 1
    );
    // the rest of the rollout is the usual one
    let (status, _) = common::finish(&s, &exec, lab, status).await;
    assert_eq!(status.phase, Some(Phase::Completed), "{status:#?}");
    report(
        "move drain waits for an LMTP delivery in flight",
        t0,
        &format!("{} polls held by the delivery, then the flush", held.len()),
    );
}

/// A user being moved has an APPEND in progress and an LMTP delivery in flight: the drain
/// leaves the user until both are done, then moves the IDLE session that follows. Both
/// messages are stored, nothing is lost, and no login fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_and_a_delivery_in_progress_complete_before_their_user_moves() {
    let t0 = Instant::now();
    let rig = busy_rig(57, 40);
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    // Ordinal order: backend-2 drains first; a user mapped to it
    let target = lab.pod_ip("backend-2").unwrap();
    let user = users_mapped_to(lab, &target)
        .into_iter()
        .next()
        .expect("a user on backend-2");
    let before = lab.inbox_count("backend-2", &user).unwrap_or(0);
    let mut session = ImapSession::login(&dip, &user).unwrap();
    session.command("SELECT INBOX").unwrap();
    let hold = Duration::from_secs(5);
    // the client: a slow APPEND, then IDLE until the server closes the connection
    let client = std::thread::spawn(move || {
        let message = "Subject: appended while draining\r\n\r\nkept\r\n";
        let appended = session.append_slowly("INBOX", message, hold);
        let appended_at = Instant::now();
        session.idle().unwrap();
        while session.listen(Duration::from_secs(1)).unwrap_or(false) {
            if appended_at.elapsed() > Duration::from_secs(90) {
                break;
            }
        }
        (appended, appended_at, Instant::now())
    });
    let (dip2, u2) = (dip.clone(), user.clone());
    let delivery = std::thread::spawn(move || slow_delivery(&dip2, &u2, hold));
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"timeout": "60s", "onTimeout": "Fail"}}));
    let exec = lab.exec();
    let mut status = DovecotBackendUpgradeStatus::default();
    let mut held = Vec::new();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < end, "no move: {status:#?}");
        let out = common::once(&s, status, &exec, lab).await;
        status = out.status;
        let r = status.backends.iter().find(|r| r.pod == "backend-2");
        if let Some(r) = r
            && r.step == Step::WaitSessions
            && let Some(m) = &r.message
            && (m.contains("in a command") || m.contains("deliveries in flight"))
        {
            held.push(m.clone());
        }
        if r.is_some_and(|r| r.step > Step::WaitSessions) {
            break;
        }
        tokio::time::sleep(
            out.requeue
                .unwrap_or_default()
                .min(Duration::from_millis(500)),
        )
        .await;
    }
    let (appended, appended_at, closed_at) = client.join().unwrap();
    let (reply, stored_at) = delivery.join().unwrap();
    assert_eq!(appended, Ok(()), "the APPEND completed");
    assert!(reply.starts_with("250"), "delivery: {reply}");
    assert!(!held.is_empty(), "the drain never said it waited");
    // the session was closed (moved) only after both were done
    assert!(
        closed_at >= appended_at && closed_at + Duration::from_millis(300) >= stored_at,
        "moved before the APPEND or the delivery was done"
    );
    let rec = status
        .backends
        .iter()
        .find(|r| r.pod == "backend-2")
        .unwrap();
    assert!(
        rec.drain.as_ref().is_some_and(|d| d.sessions_moved >= 1),
        "{rec:#?}"
    );
    // the user logs in again at once, elsewhere, and finds both messages
    let again = ImapSession::login(&dip, &user).expect("no failed login");
    again.logout();
    assert_ne!(
        lab.user_host(&user).unwrap().as_deref(),
        Some(target.as_str())
    );
    let (status, _) = common::finish(&s, &exec, lab, status).await;
    assert_eq!(status.phase, Some(Phase::Completed), "{status:#?}");
    let after = lab.inbox_count("backend-0", &user).unwrap();
    assert_eq!(
        after,
        before + 2,
        "the APPEND and the delivery are both stored"
    );
    report(
        "APPEND and delivery in progress on a user being moved",
        t0,
        &format!(
            "{} polls held by them, then the IDLE session moved; both messages stored",
            held.len()
        ),
    );
}

/// A client that stays connected between commands holds the flush until the ceiling; users
/// without a session are not held with it: `director map` names them and each is moved at once
/// (real Dovecot: a director whose userdb lists its users, `who -1 <user>` shows none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_a_session_move_while_a_connected_client_holds_the_flush() {
    let t0 = Instant::now();
    let rig = rig_with(|d| {
        let mut spec = LabSpec::new(d, 58, vec![100, 100, 100]);
        spec.users = 40;
        spec.user_expire = "15m".into();
        spec.director_userdb = true;
        spec
    });
    let lab = &rig.lab;
    let dip = lab.spec.director_ip();
    let target = lab.pod_ip("backend-2").unwrap();
    // users mapped to backend-2: one keeps a session open between commands, the others left
    let mapped = users_mapped_to(lab, &target);
    assert!(mapped.len() >= 3, "users on backend-2: {mapped:?}");
    let mut connected = ImapSession::login(&dip, &mapped[0]).unwrap();
    connected.command("SELECT INBOX").unwrap();
    lab.new_revision("rev-2", "");
    let s = settings(json!({"drain": {"timeout": "20s", "onTimeout": "Proceed"}}));
    let exec = lab.exec();
    let mut status = DovecotBackendUpgradeStatus::default();
    let end = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        assert!(Instant::now() < end, "nobody moved: {status:#?}");
        let out = common::once(&s, status, &exec, lab).await;
        status = out.status;
        let r = status.backends.iter().find(|r| r.pod == "backend-2");
        assert!(
            r.is_none_or(|r| r.step <= Step::WaitSessions),
            "the drain ended before anyone without a session moved: {status:#?}"
        );
        if let Some(d) = r.and_then(|r| r.drain.as_ref())
            && d.users_moved > 0
        {
            break d.users_moved;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // the connected client is still there (only its client or the ceiling ends it) ...
    assert!(
        who_users(lab, "backend-2").contains(&mapped[0]),
        "the connected session was left alone"
    );
    // ... while those without a session now go elsewhere
    let elsewhere = mapped[1..]
        .iter()
        .filter(|u| lab.user_host(u).unwrap().as_deref() != Some(target.as_str()))
        .count();
    assert!(elsewhere >= 1, "{mapped:?}");
    let rec = status
        .backends
        .iter()
        .find(|r| r.pod == "backend-2")
        .unwrap();
    let m = rec.message.as_deref().unwrap();
    assert!(m.contains("without a session moved"), "{m}");
    drop(connected);
    let (status, _) = common::finish(&s, &exec, lab, status).await;
    assert_eq!(status.phase, Some(Phase::Completed), "{status:#?}");
    report(
        "users without a session move while a connected client holds the flush",
        t0,
        &format!(
            "{moved} users without a session moved (director map), {elsewhere} of {} seen elsewhere, the connected client left to the ceiling",
            mapped.len() - 1
        ),
    );
}
