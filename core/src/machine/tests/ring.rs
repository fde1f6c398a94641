//! The director ring: drift reasserted, the ring-wide lock, every director's view, its sync state.

use super::*;
use pretty_assertions::assert_eq;

#[test]
fn ring_drift_is_reasserted_before_anything_else() {
    let s = settings();
    // director restarted: forgot update 0 and down
    let forgot = Some(vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 100, true, 0),
    ]);
    let t = [
        (
            Step::WaitSessions,
            vec!["doveadm director update 127.0.0.13 0"],
        ),
        (
            Step::StopDovecot,
            vec!["doveadm director update 127.0.0.13 0"],
        ),
        (
            Step::Reset,
            vec![
                "doveadm director update 127.0.0.13 0",
                "doveadm director down 127.0.0.13",
                "doveadm director flush 127.0.0.13",
            ],
        ),
        (
            Step::Verify,
            vec![
                "doveadm director update 127.0.0.13 0",
                "doveadm director down 127.0.0.13",
                "doveadm director flush 127.0.0.13",
            ],
        ),
    ];
    for (step, want) in t {
        let mut obs = world();
        obs.ring = forgot.clone();
        obs.pods[2] = pod(2, NEW);
        let d = decide(&s, &status(vec![rec(2, step, 0)]), &obs, ts(1));
        let Decision::Reassert { pod, commands, .. } = d else {
            panic!("{step}: {d:?}")
        };
        assert_eq!(pod, "backend-2");
        let got: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(got, want, "{step}");
    }
    // Drain has not acted yet and RingRestore is putting it back: no drift there
    for step in [Step::Drain, Step::RingRestore] {
        let mut obs = world();
        obs.ring_lock = Some(Ok(RingLock::default()));
        obs.ring = forgot.clone();
        obs.pods[2] = pod(2, NEW);
        let d = decide(&s, &status(vec![rec(2, step, 0)]), &obs, ts(1));
        assert_eq!(d, run(2, step));
    }
    // a failed backend is kept out too
    let mut f = rec(2, Step::Verify, 0);
    f.failed = true;
    let mut obs = world();
    obs.ring = forgot;
    assert_eq!(
        reason(&decide(&s, &status(vec![f]), &obs, ts(1))),
        "Reassert"
    );
}

#[test]
fn a_stopped_backend_a_human_opened_is_zeroed_and_flushed_first() {
    let s = settings();
    // backend-2's Dovecot was stopped here (its pod still runs under the same UID); a human
    // gave it 40 vhosts: users sent there fail until it is zeroed and they are flushed
    // (pod stopped here?, count shown) -> the commands of the first decision, if a re-assert
    let t: [(bool, u32, Option<Vec<&str>>); 3] = [
        (
            true,
            40,
            Some(vec![
                "doveadm director update 127.0.0.13 0",
                "doveadm director flush 127.0.0.13",
            ]),
        ),
        // zeroed already: nothing to close
        (true, 0, None),
        // the pod was recreated since: its Dovecot runs, the last-serving hold and the drift
        // judge it, not this
        (
            false,
            40,
            Some(vec!["doveadm director update 127.0.0.13 0"]),
        ),
    ];
    for (stopped_here, shown, want) in t {
        let mut obs = world();
        let mut ring = obs.ring.clone().unwrap();
        ring[2].vhosts = shown;
        obs.ring = Some(ring);
        let mut r = rec(2, Step::StopDovecot, 0);
        r.stopped_pod_uid = obs.pods[2].uid.clone();
        if !stopped_here {
            obs.pods[2] = pod(2, NEW);
        }
        let d = decide(&s, &status(vec![r]), &obs, ts(1));
        let got = match &d {
            Decision::Reassert { commands, .. } => {
                Some(commands.iter().map(|c| c.join(" ")).collect::<Vec<_>>())
            }
            _ => None,
        };
        assert_eq!(
            got,
            want.map(|w| w.iter().map(|c| c.to_string()).collect()),
            "stopped here {stopped_here}, shown {shown}: {d:?}"
        );
    }
}

/// The entry a stopped backend left is not closed for it once another backend stands for it:
/// users sent there go to that backend (found by the model: the stopped pod was recreated at a
/// new IP mid-drain, another pod took its old entry and was put back there, and the entry was
/// zeroed under it).
#[test]
fn a_stopped_backends_old_entry_another_backend_has_now_is_left_open() {
    let s = settings();
    for (other_there, closed) in [(false, true), (true, false)] {
        let mut obs = world();
        obs.pods[2].ip = Some("127.0.0.99".into());
        if other_there {
            obs.ring_pods = vec![("mx-3".into(), Some("127.0.0.13".into()))];
        }
        let mut ring = obs.ring.clone().unwrap();
        ring[2].vhosts = 50;
        obs.ring = Some(ring);
        let mut r = rec(2, Step::StopDovecot, 0);
        r.stopped_pod_uid = obs.pods[2].uid.clone();
        let d = decide(&s, &status(vec![r]), &obs, ts(1));
        let zeroes = matches!(&d, Decision::Reassert { commands, .. }
            if commands.iter().any(|c| c.join(" ") == "doveadm director update 127.0.0.13 0"));
        assert_eq!(zeroes, closed, "another backend there {other_there}: {d:?}");
    }
}

#[test]
fn drift_at_the_new_ip_of_a_replaced_backend_is_reasserted() {
    let s = settings();
    // Replace gave backend-2 127.0.0.99; a director re-resolved it and shows it up at 100
    let mut ring = world().ring.unwrap();
    ring[2].vhosts = 0;
    ring[2].up = false;
    ring.push(RingHost {
        ip: "127.0.0.99".into(),
        vhosts: 100,
        up: true,
        users: 0,
    });
    for failed in [false, true] {
        let mut r = rec(2, Step::Verify, 0);
        r.new_ip = Some("127.0.0.99".into());
        r.failed = failed;
        let mut obs = world();
        obs.ring = Some(ring.clone());
        obs.pods[2] = pod(2, NEW);
        obs.pods[2].ip = Some("127.0.0.99".into());
        let d = decide(&s, &status(vec![r.clone()]), &obs, ts(1));
        let Decision::Reassert { commands, .. } = d else {
            panic!("failed={failed}: {d:?}")
        };
        // its pod gone on to another IP: the entry it left is not the record's any more
        // (found by the model: it was another backend's old entry, and that backend came back
        // to it left out)
        let mut moved_on = obs.clone();
        moved_on.pods[2].ip = Some("127.0.0.77".into());
        let d = decide(&s, &status(vec![r]), &moved_on, ts(1));
        assert!(
            !matches!(d, Decision::Reassert { .. }),
            "failed={failed}: {d:?}"
        );
        let got: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            got,
            [
                "doveadm director update 127.0.0.99 0",
                "doveadm director down 127.0.0.99",
                "doveadm director flush 127.0.0.99",
            ],
            "failed={failed}"
        );
    }
}

#[test]
fn an_ip_another_backend_has_now_is_never_taken_out_or_removed_for_a_record() {
    let s = settings();
    // backend-2 failed at Verify after Replace moved it to 127.0.0.99; its old IP
    // (127.0.0.13) now belongs to mx-0 of the ring's other StatefulSet, up at 100
    let mut ring = world().ring.unwrap();
    ring[2].vhosts = 100;
    ring.push(RingHost {
        ip: "127.0.0.99".into(),
        vhosts: 0,
        up: false,
        users: 0,
    });
    let mut r = rec(2, Step::Verify, 0);
    r.new_ip = Some("127.0.0.99".into());
    r.failed = true;
    let mut obs = world();
    obs.ring = Some(ring.clone());
    obs.pods[2] = pod(2, NEW);
    obs.pods[2].ip = Some("127.0.0.99".into());
    let st = status(vec![r.clone()]);
    // without knowing whose the IP is, the record's drift would take the old IP out
    assert_eq!(reason(&decide(&s, &st, &obs, ts(1))), "Reassert");
    obs.ring_pods = vec![("mx-0".into(), Some("127.0.0.13".into()))];
    let d = decide(&s, &st, &obs, ts(1));
    assert!(!matches!(d, Decision::Reassert { .. }), "{d:?}");
    // RingRestore at the new IP keeps the other backend's entry
    let old = "127.0.0.13".parse().unwrap();
    let new = "127.0.0.99".parse().unwrap();
    let cmds: Vec<String> = judge::ring_restore_commands(&s, &r, old, new, true)
        .iter()
        .map(|c| c.argv.join(" "))
        .collect();
    assert!(cmds.iter().all(|c| !c.contains("remove")), "{cmds:?}");
    assert!(cmds[0].contains("add 127.0.0.99"), "{cmds:?}");
    assert_eq!(
        obs.ip_held_by_other("127.0.0.13", "backend-2"),
        Some("mx-0")
    );
    assert_eq!(obs.ip_held_by_other("127.0.0.99", "backend-2"), None);
}

#[test]
fn left_out_backends_stay_counted_and_go_to_the_next_dbu_of_their_statefulset() {
    let s = settings();
    let mut left = rec(2, Step::Verify, 0);
    left.new_ip = Some("127.0.0.99".into());
    let lock = RingLock {
        version: Some("3".into()),
        holders: vec![
            RingHolder {
                dbu: "mail/old".into(),
                pod: "backend-2".into(),
                ip: "127.0.0.13".into(),
                max_unavailable: 1,
                left_out: None,
                reason: None,
            },
            other_holds("mx-0", "127.0.0.50", 2).holders[0].clone(),
        ],
    };
    let holders = lock::leave_out(&lock, "mail/old", "backend", &[left.clone()], 1);
    assert_eq!(holders.len(), 2, "{holders:?}");
    let orphan = holders.iter().find(|h| h.pod == "backend-2").unwrap();
    assert_eq!(orphan.ip, "127.0.0.99");
    assert_eq!(orphan.left_out.as_ref().unwrap().record, left);
    let after = RingLock {
        version: Some("4".into()),
        holders,
    };
    // a successor under the same name adopts it; it counts as another's until then
    let mut obs = locked(after.clone());
    obs.me = "mail/old".into();
    assert_eq!(lock::others(&obs, &after).len(), 2);
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Adopt { records } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(records, &vec![left.clone()]);
    // another StatefulSet's DBU does not adopt it, but counts it as out of the ring
    let mx = with(json!({"backends": {"statefulSet": "mx"}}));
    assert!(lock::adoptable(&mx, &status(vec![]), &after, &obs).is_empty());
    // once adopted: a record, its clock restarted; registered by the claim that follows, while
    // the ring's record still holds it as left out (a crash in between loses nothing)
    let mut st = status(vec![]);
    let rec = record(&mut st, &d, Acted::Adopted(Ok(())), ts(9));
    assert_eq!(rec.notes[0].reason, "BackendAdopted");
    assert!(st.ring_held.is_empty());
    assert_eq!(st.backends[0].step, Step::Verify);
    assert_eq!(st.backends[0].step_started, Time(ts(9)));
    assert_eq!(
        decide(&s, &st, &obs, ts(10)),
        Decision::Claim {
            pods: vec!["backend-2".into()]
        }
    );
    // the status write of the adoption lost (a crash, a conflict): adopted again, nothing lost
    assert!(matches!(
        decide(&s, &status(vec![]), &obs, ts(10)),
        Decision::Adopt { .. }
    ));
}

#[test]
fn a_drain_waits_for_the_ring_lock_of_every_dbu_of_the_ring() {
    let s = settings();
    // Begin wrote the intent only; the lock does not hold backend-2 yet
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    st.ring_held.clear();
    let mut unread = locked(RingLock::default());
    unread.ring_lock = None;
    let d = decide(&s, &st, &unread, ts(1));
    assert_eq!(missing(&d, &unread), Some(Missing::RingLock), "{d:?}");
    let d = decide(&s, &st, &locked(RingLock::default()), ts(1));
    assert_eq!(
        d,
        Decision::Claim {
            pods: vec!["backend-2".into()]
        }
    );
    // another DBU of the ring holds one: at most one at once
    let busy = locked(other_holds("mx-0", "127.0.0.50", 1));
    let d = decide(&s, &st, &busy, ts(1));
    let message = waiting(&d, WaitReason::RingBusy);
    assert!(
        message.contains("mx-0") && message.contains("mail/other"),
        "{message}"
    );
    // the smallest maxUnavailable of the ring holds: 2 here, but the other DBU says 1
    let two = with(json!({"maxUnavailable": 2}));
    assert_eq!(reason(&decide(&two, &st, &busy, ts(1))), "RingBusy");
    let roomy = locked(other_holds("mx-0", "127.0.0.50", 2));
    assert_eq!(reason(&decide(&two, &st, &roomy, ts(1))), "Claim");
    // a lock that cannot be read is a wait that says so
    let mut broken = locked(RingLock::default());
    broken.ring_lock = Some(Err("forbidden".into()));
    let d = decide(&s, &st, &broken, ts(1));
    assert_eq!(reason(&d), "RingLockUnreadable");
    assert_eq!(missing(&d, &broken), None, "read once per reconcile");
}

#[test]
fn a_new_backend_does_not_start_while_another_dbu_holds_the_ring() {
    let s = settings();
    let d = decide(
        &s,
        &status(vec![]),
        &locked(other_holds("mx-0", "127.0.0.50", 1)),
        ts(0),
    );
    assert_eq!(reason(&d), "RingBusy", "{d:?}");
    // the capacity guard counts the other DBU's backend as out
    let two = with(json!({"maxUnavailable": 2, "minAvailableBackends": 2}));
    let lk = other_holds("backend-0", "127.0.0.11", 2);
    let d = decide(&two, &status(vec![]), &locked(lk), ts(0));
    assert_eq!(reason(&d), "InsufficientRingCapacity", "{d:?}");
}

#[test]
fn the_ring_lock_is_released_when_a_backend_is_back_and_registers_what_is_out() {
    let s = settings();
    // backend-2 finished; it is still registered: released, even though the rollout is complete
    let mut done = rec(2, Step::Done, 0);
    done.from_revision = Some(OLD.into());
    let mut st = status(vec![done]);
    st.ring_held = vec!["backend-2".into()];
    let mut obs = locked(RingLock::default());
    obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
    let d = decide(&s, &st, &obs, ts(1));
    assert_eq!(d, Decision::Claim { pods: vec![] });
    let out = record(&mut st, &d, Acted::Claimed(Ok(())), ts(1));
    assert!(st.ring_held.is_empty());
    assert_eq!(out.requeue, Some(Duration::ZERO));
    assert_eq!(decide(&s, &st, &obs, ts(2)), Decision::Complete);
    // a conflict leaves status as it was and looks again soon
    let mut st2 = status(vec![]);
    st2.ring_held = vec!["backend-2".into()];
    let out = record(
        &mut st2,
        &Decision::Claim { pods: vec![] },
        Acted::Claimed(Err("conflict".into())),
        ts(1),
    );
    assert_eq!(st2.ring_held, ["backend-2"]);
    assert_eq!(out.requeue, Some(Duration::from_secs(1)));
    assert!(out.notes.is_empty(), "losing a compare-and-swap is no news");
    // any other failed write is a Warning, and backs off
    let out = record(
        &mut st2,
        &Decision::Claim { pods: vec![] },
        Acted::Claimed(Err("forbidden: dovecotrings/status".into())),
        ts(1),
    );
    assert_eq!(out.requeue, Some(Duration::from_secs(10)));
    assert_eq!(out.notes.len(), 1);
    assert!(
        out.notes[0].warning && out.notes[0].message.contains("forbidden"),
        "{:?}",
        out.notes
    );
    // a backend already past Drain but not registered (a record from before the lock) is out of
    // the ring whatever the lock says: registered at once, even when the ring looks busy
    let mut st3 = status(vec![rec(2, Step::StopDovecot, 0)]);
    st3.ring_held.clear();
    let d = decide(
        &s,
        &st3,
        &locked(other_holds("mx-0", "127.0.0.50", 1)),
        ts(1),
    );
    assert_eq!(
        d,
        Decision::Claim {
            pods: vec!["backend-2".into()]
        }
    );
}

#[test]
fn a_selected_director_that_is_a_host_of_the_ring_stalls() {
    let s = settings();
    let mut obs = world();
    obs.directors = vec![
        ("director-0".into(), Some("127.0.0.10".into())),
        ("mx-0".into(), Some("127.0.0.12".into())),
    ];
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Stall { reason, message } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(*reason, "DirectorSelectorMatchesBackends");
    assert!(
        message.contains("mx-0") && message.contains("127.0.0.12"),
        "{message}"
    );
    obs.directors.pop();
    assert_eq!(
        reason_of(&decide(&s, &status(vec![]), &obs, ts(0))),
        "Begin"
    );
}

#[test]
fn ring_not_synced_names_the_directors_that_are_not() {
    let s = settings();
    let mut obs = world();
    obs.ring_synced = Some(false);
    obs.unsynced = vec!["director-1".into()];
    let d = decide(&s, &status(vec![]), &obs, ts(0));
    let Decision::Wait {
        reason, message, ..
    } = &d
    else {
        panic!("{d:?}")
    };
    assert_eq!(*reason, "RingNotSynced");
    assert!(message.contains("on director-1"), "{message}");
}

#[test]
fn every_director_must_show_the_backend_drained_before_it_is_stopped_or_taken_down() {
    let s = settings();
    let mut obs = drained(2);
    obs.ring_synced = Some(true);
    let lagging = vec![
        host(0, 100, true, 0),
        host(1, 50, true, 0),
        host(2, 20, true, 0),
    ];
    for step in [Step::StopLmtp, Step::RingRemove] {
        let st = status(vec![rec(2, step, 0)]);
        obs.other_rings = Some(vec![("director-1".into(), Some(lagging.clone()))]);
        let d = decide(&s, &st, &obs, ts(0));
        let Decision::Reassert {
            commands, director, ..
        } = &d
        else {
            panic!("{step}: {d:?}")
        };
        assert_eq!(director.as_deref(), Some("director-1"), "{step}");
        assert_eq!(
            commands[0].join(" "),
            "doveadm director update 127.0.0.13 0"
        );
        // agreeing directors: the step runs
        obs.other_rings = Some(vec![("director-1".into(), obs.ring.clone())]);
        assert_eq!(decide(&s, &st, &obs, ts(0)), run(2, step), "{step}");
    }
    // a director that cannot be read holds back StopLmtp, not RingRemove (Dovecot is stopped
    // by then: down + flush are what protect its users)
    obs.other_rings = Some(vec![("director-1".into(), None)]);
    let d = decide(&s, &status(vec![rec(2, Step::StopLmtp, 0)]), &obs, ts(0));
    assert_eq!(reason(&d), "RingUnreadable", "{d:?}");
    let d = decide(&s, &status(vec![rec(2, Step::RingRemove, 0)]), &obs, ts(0));
    assert_eq!(d, run(2, Step::RingRemove));
}

#[test]
fn a_stall_over_what_the_ring_says_of_a_backend_waits_for_a_synced_ring() {
    use crate::reason::StallReason as R;
    let s = settings();
    // no backend is a host of the ring (it names another one); backend-2 is the first candidate
    let unknown = Observed {
        ring: Some(vec![host(5, 100, true, 3)]),
        ..world()
    };
    let d = decide(&s, &status(vec![]), &unknown, ts(0));
    assert_eq!(reason(&d), "BackendNotInRing");
    assert_eq!(missing(&d, &unknown), Some(Missing::RingSync));
    let unsynced = Observed {
        ring_synced: Some(false),
        unsynced: vec!["director-1".into()],
        ..unknown.clone()
    };
    let d = decide(&s, &status(vec![]), &unsynced, ts(0));
    assert_eq!(reason(&d), "RingNotSynced");
    assert!(format!("{d:?}").contains("director-1"), "{d:?}");
    let synced = Observed {
        ring_synced: Some(true),
        ..unknown
    };
    let d = decide(&s, &status(vec![]), &synced, ts(0));
    assert_eq!(reason(&d), "BackendNotInRing");
    // ... and on the ring's record: a backend a deleted DBU left out is taken over first
    assert_eq!(missing(&d, &synced), Some(Missing::RingLock));
    let read = Observed {
        ring_lock: Some(Ok(RingLock::default())),
        ..synced
    };
    let d = decide(&s, &status(vec![]), &read, ts(0));
    assert_eq!(reason(&d), "BackendNotInRing");
    assert_eq!(missing(&d, &read), None);
    // other stalls need no ring read
    let d = Decision::stall(R::BackendFailed, "m");
    assert_eq!(missing(&d, &world()), None);
}

#[test]
fn slots_go_first_to_the_dbu_that_waited_longest() {
    use crate::machine::Waiter;
    let s = settings();
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    st.ring_held.clear();
    let mut obs = locked(RingLock::default());
    obs.ring_queue = vec![Waiter {
        dbu: "mail/other".into(),
        since: ts(3),
    }];
    // asking for the first time: the waiting DBU goes first
    let d = decide(&s, &st, &obs, ts(10));
    let message = waiting(&d, WaitReason::RingBusy);
    assert!(message.contains("mail/other waited longer"), "{message}");
    // waiting since later than it: still behind; since earlier (or the same time, by name): first
    for (mine, want) in [(5, "RingBusy"), (1, "Claim"), (3, "RingBusy")] {
        st.ring_waiting_since = Some(Time(ts(mine)));
        let who = if mine == 3 { "later by name" } else { "" };
        assert_eq!(
            reason(&decide(&s, &st, &obs, ts(10))),
            want,
            "since {mine} {who}"
        );
    }
    // the queue is one of the ring's DBUs waiting; with room for both, nobody waits
    st.ring_waiting_since = None;
    let two = with(json!({"maxUnavailable": 2}));
    assert_eq!(reason(&decide(&two, &st, &obs, ts(10))), "Claim");
    // a new backend does not begin ahead of a waiting DBU either
    assert_eq!(
        reason(&decide(&s, &status(vec![]), &obs, ts(10))),
        "RingBusy"
    );
}

#[test]
fn a_dbu_keeps_its_place_in_the_queue_only_while_it_waits_for_the_ring() {
    let mut st = status(vec![]);
    let busy = Decision::wait(WaitReason::RingBusy, "busy", Duration::from_secs(10));
    conditions::summarize(&mut st, &busy, Some(1), ts(5));
    assert_eq!(st.ring_waiting_since, Some(Time(ts(5))));
    let w = lock::waiter("mail/roll", &st).expect("a waiter");
    assert_eq!((w.dbu.as_str(), w.since), ("mail/roll", ts(5)));
    // kept through later waits and a read of the ring's record
    conditions::summarize(&mut st, &busy, Some(1), ts(9));
    let reading = Decision::wait(
        WaitReason::RingLockUnreadable,
        "reading",
        Duration::from_secs(5),
    );
    conditions::summarize(&mut st, &reading, Some(1), ts(12));
    assert_eq!(st.ring_waiting_since, Some(Time(ts(5))));
    assert_eq!(
        lock::waiter("mail/roll", &st),
        None,
        "reading is not waiting"
    );
    // anything else gives it up (a paused DBU holds nobody back)
    let paused = Decision::wait(WaitReason::Paused, "paused", Duration::from_secs(60));
    conditions::summarize(&mut st, &paused, Some(1), ts(13));
    assert_eq!(
        (
            st.ring_waiting_since.clone(),
            lock::waiter("mail/roll", &st)
        ),
        (None, None)
    );
}

#[test]
fn a_begin_keeps_the_place_in_the_queue_until_the_claim() {
    // waiting since 5, then a Begin: the claim chained after it weighs the queue with the
    // place kept, not from the back (two DBUs each lost theirs at a Begin on a loaded machine,
    // and one took two slots in a row)
    let mut st = status(vec![]);
    st.ring_held.clear();
    let busy = Decision::wait(WaitReason::RingBusy, "busy", Duration::from_secs(10));
    conditions::summarize(&mut st, &busy, Some(1), ts(5));
    let begun = rec(2, Step::Drain, 0);
    st.backends.push(begun.clone());
    conditions::summarize(&mut st, &Decision::Begin(Box::new(begun)), Some(1), ts(9));
    assert_eq!(st.ring_waiting_since, Some(Time(ts(5))));
    // its claim, chained after the Begin, goes before a DBU that began waiting later (at 7)
    let mut obs = locked(RingLock::default());
    obs.ring_queue = vec![crate::machine::Waiter {
        dbu: "mail/other".into(),
        since: ts(7),
    }];
    assert!(lock::ahead(&obs, &st).is_empty());
    // ... but a begun backend does not make it a waiter for others: only RingBusy does (two
    // rejoins begun at once, each counted as waiting, never ended: found by the model)
    assert_eq!(lock::waiter("mail/roll", &st), None);
    // a later wait keeps it
    conditions::summarize(&mut st, &busy, Some(1), ts(12));
    assert_eq!(st.ring_waiting_since, Some(Time(ts(5))));
    // the slot taken: no longer waiting
    st.ring_held.push(st.backends[0].pod.clone());
    let claim = Decision::Claim {
        pods: st.ring_held.clone(),
    };
    conditions::summarize(&mut st, &claim, Some(1), ts(13));
    assert_eq!(
        (
            st.ring_waiting_since.clone(),
            lock::waiter("mail/roll", &st)
        ),
        (None, None)
    );
    // a Begin that never waited takes no place
    let mut fresh = status(vec![]);
    fresh.ring_held.clear();
    let begun = rec(1, Step::Drain, 0);
    fresh.backends.push(begun.clone());
    conditions::summarize(
        &mut fresh,
        &Decision::Begin(Box::new(begun)),
        Some(1),
        ts(9),
    );
    assert_eq!(lock::waiter("mail/roll", &fresh), None);
}

#[test]
fn the_claim_judges_capacity_and_sync_when_the_slot_is_taken() {
    let s = settings();
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    st.ring_held.clear();
    // sync unread at the claim: read first
    let mut obs = locked(RingLock::default());
    obs.ring_synced = None;
    let d = decide(&s, &st, &obs, ts(1));
    assert_eq!(missing(&d, &obs), Some(Missing::RingSync), "{d:?}");
    // a director not synced now (Begin saw it synced, hours ago)
    obs.ring_synced = Some(false);
    obs.unsynced = vec!["director-1".into()];
    assert_eq!(reason(&decide(&s, &st, &obs, ts(1))), "RingNotSynced");
    // capacity now: another DBU of the ring holds backend-0 out, minAvailableBackends 2
    let two = with(json!({"maxUnavailable": 2, "minAvailableBackends": 2}));
    let obs = locked(other_holds("backend-0", "127.0.0.11", 2));
    assert_eq!(
        reason(&decide(&two, &st, &obs, ts(1))),
        "InsufficientRingCapacity"
    );
    let obs = locked(RingLock::default());
    assert_eq!(reason(&decide(&two, &st, &obs, ts(1))), "Claim");
}

#[test]
fn no_slot_is_granted_and_nothing_stopped_while_the_directors_disagree() {
    use crate::dovecot::RingMember;
    let s = settings();
    let mut st = status(vec![rec(2, Step::Drain, 0)]);
    st.ring_held.clear();
    let mut obs = locked(RingLock::default());
    obs.director = Some("director-0".into());
    obs.directors = vec![
        ("director-0".into(), Some("10.0.9.1".into())),
        ("director-1".into(), Some("10.0.9.2".into())),
    ];
    let m = |ip: &str| RingMember {
        ip: ip.into(),
        connected: true,
    };
    obs.ring_members = vec![
        (
            "director-0".into(),
            Some(vec![m("10.0.9.1"), m("10.0.9.2")]),
        ),
        (
            "director-1".into(),
            Some(vec![m("10.0.9.2"), m("10.0.9.1")]),
        ),
    ];
    // the claim reads every director's host list first
    let d = decide(&s, &st, &obs, ts(1));
    assert_eq!(missing(&d, &obs), Some(Missing::OtherRings), "{d:?}");
    // they agree: the slot is taken
    obs.other_rings = Some(vec![("director-1".into(), obs.ring.clone())]);
    assert_eq!(reason(&decide(&s, &st, &obs, ts(1))), "Claim");
    // director-1 shows backend-0 at another count: split, named
    let mut split = obs.clone();
    split.other_rings = Some(vec![(
        "director-1".into(),
        Some(vec![
            host(0, 30, true, 0),
            host(1, 50, true, 0),
            host(2, 20, true, 0),
        ]),
    )]);
    let d = decide(&s, &st, &split, ts(1));
    let message = waiting(&d, WaitReason::RingSplit);
    assert!(
        message.contains("director-1 shows 127.0.0.11 at 30 vhosts up, director-0 at 100 up")
            && message.contains("backend-2 is not taken out"),
        "{message}"
    );
    // a drained backend: nothing on it is stopped while a director is cut off from the other
    let mut st = status(vec![rec(2, Step::StopLmtp, 0)]);
    st.ring_held = vec!["backend-2".into()];
    let mut cut = drained(2);
    cut.director = obs.director.clone();
    cut.directors = obs.directors.clone();
    cut.ring_synced = Some(true);
    cut.other_rings = Some(vec![("director-1".into(), cut.ring.clone())]);
    cut.ring_members = obs.ring_members.clone();
    cut.ring_members[1].1 = Some(vec![m("10.0.9.2")]);
    let d = decide(&s, &st, &cut, ts(1));
    let message = waiting(&d, WaitReason::RingSplit);
    assert!(
        message.contains("director-1 is not connected to director director-0 (10.0.9.1)")
            && message.contains("nothing on backend-2 is stopped"),
        "{message}"
    );
}

/// A pod never rolled here that left two entries rejoins by the one whose count is its own
/// (`StoodFor::counts_for`), not by one it only landed on, which holds another pod's count
/// (found by the model: recreated at another pod's old entry, then moved on, it rejoined at
/// that pod's count).
#[test]
fn a_moved_pod_rejoins_by_the_entry_whose_count_is_its_own() {
    let s = settings();
    let landed = "127.0.0.14";
    for (counts_there, ip, vhosts) in [(Some("backend-9"), "127.0.0.12", 50), (None, landed, 100)] {
        let mut obs = world();
        obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
        obs.pods[1].ip = Some("127.0.0.77".into());
        let mut ring = world().ring.unwrap();
        ring.push(crate::dovecot::RingHost {
            ip: landed.into(),
            ..crate::fixtures::host(0, 100, true, 0)
        });
        obs.ring = Some(ring);
        for (at, v, counts) in [(landed, 100, counts_there), ("127.0.0.12", 50, None)] {
            obs.ring_former.push(crate::api::StoodFor {
                counts_for: counts.map(Into::into),
                ..stood(at, "backend-1", v)
            });
        }
        let d = decide(&s, &status(vec![]), &obs, ts(5));
        let Decision::Begin(back) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            (back.pod.as_str(), back.ip.as_str(), back.original_vhosts),
            ("backend-1", ip, vhosts),
            "{counts_there:?}"
        );
    }
}

/// A pod never rolled here rejoins at the ring's record of its state at the entry it left when
/// another pod's rejoin put that pod back there since (held in the ring's record, or seen so by
/// the ring's pass): the count there is that pod's, not a human's (found by the model: backend-0
/// went back at the count mx-0's rejoin had put at its old entry). A count nobody else put
/// there is a human's and is kept.
#[test]
fn a_moved_pod_rejoins_at_its_own_state_where_another_pods_rejoin_put_that_pod_back() {
    let s = settings();
    let old_ip = "127.0.0.11";
    let theirs = RingHolder {
        dbu: "mail/mx".into(),
        pod: "mx-0".into(),
        ip: old_ip.into(),
        max_unavailable: 1,
        left_out: None,
        reason: None,
    };
    // (held for mx-0 in the ring's record, the pass saw it count for mx-0) -> count
    for (held, counted, want) in [(true, false, 100), (false, true, 100), (false, false, 50)] {
        let mut obs = locked(RingLock {
            version: Some("3".into()),
            holders: if held { vec![theirs.clone()] } else { vec![] },
        });
        obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
        obs.pods[0].ip = Some("127.0.0.77".into());
        obs.ring.as_mut().unwrap()[0].vhosts = 50;
        obs.ring_former.push(crate::api::StoodFor {
            counts_for: counted.then(|| "mx-0".into()),
            ..stood(old_ip, "backend-0", 100)
        });
        let d = decide(&s, &status(vec![]), &obs, ts(5));
        let Decision::Begin(back) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            (back.pod.as_str(), back.ip.as_str(), back.original_vhosts),
            ("backend-0", old_ip, want),
            "{held} {counted}"
        );
    }
}

/// A pod at the IP its finished record put it back at has not moved, whatever its revision,
/// even where the ring's pass still says an entry it left stands for it (not seen since): it
/// is rolled, not rejoined again.
#[test]
fn an_outdated_pod_at_the_ip_its_record_finished_at_has_not_moved() {
    let s = settings();
    let mut r = rec(1, Step::Done, 0);
    r.from_revision = Some(OLD.into());
    r.new_ip = Some("127.0.0.77".into());
    let mut obs = world();
    obs.pods = (0..3).map(|i| pod(i, OLD)).collect();
    obs.pods[1].ip = Some("127.0.0.77".into());
    obs.ring_former.push(stood("127.0.0.12", "backend-1", 50));
    let d = decide(&s, &status(vec![r]), &obs, ts(5));
    assert!(!matches!(&d, Decision::Begin(b) if b.rejoin), "{d:?}");
}

#[test]
fn a_backend_that_came_back_at_a_new_ip_rejoins_only_after_verify() {
    let s = settings();
    // a finished rollout; then backend-1 was deleted by hand and came back at 127.0.0.77
    let done: Vec<_> = (0..3)
        .map(|i| {
            let mut r = rec(i, Step::Done, 0);
            r.from_revision = Some(OLD.into());
            r
        })
        .collect();
    let st = status(done);
    let mut obs = world();
    obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
    obs.ring = None;
    // nothing moved: complete, without reading the director ring (only the ring's record, for
    // left-out backends to take over, as before)
    let d = decide(&s, &st, &obs, ts(5));
    assert_eq!(
        (reason(&d), missing(&d, &obs)),
        ("Complete", Some(Missing::RingLock))
    );
    obs.pods[1].ip = Some("127.0.0.77".into());
    let d = decide(&s, &st, &obs, ts(5));
    assert_eq!(missing(&d, &obs), Some(Missing::Ring), "{d:?}");
    obs.ring = world().ring;
    let d = decide(&s, &st, &obs, ts(5));
    let Decision::Begin(back) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (
            back.pod.as_str(),
            back.step,
            back.ip.as_str(),
            back.new_ip.as_deref(),
            back.original_vhosts,
            back.original_up
        ),
        (
            "backend-1",
            Step::Verify,
            "127.0.0.12",
            Some("127.0.0.77"),
            50,
            Some(true)
        )
    );
    // recorded, its old entry (users hashed to a dead IP) goes out at once, before Verify
    let mut st2 = st.clone();
    let out = record(&mut st2, &d, Acted::Nothing, ts(5));
    assert!(
        out.notes[0]
            .message
            .contains("came back at 127.0.0.77 (was 127.0.0.12)"),
        "{:?}",
        out.notes
    );
    st2.ring_held = vec!["backend-1".into()];
    let d = decide(&s, &st2, &obs, ts(6));
    let Decision::Reassert { commands, .. } = &d else {
        panic!("{d:?}")
    };
    let got: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
    assert_eq!(
        got,
        [
            "doveadm director update 127.0.0.12 0",
            "doveadm director down 127.0.0.12",
            "doveadm director flush 127.0.0.12"
        ]
    );
    // its old IP taken by another backend of the ring meanwhile: that entry is the other's
    // and is never touched, but this one still rejoins at its new IP, at its recorded count
    obs.ring_pods = vec![("mx-3".into(), Some("127.0.0.12".into()))];
    let d = decide(&s, &st, &obs, ts(5));
    let Decision::Begin(back) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (back.new_ip.as_deref(), back.original_vhosts),
        (Some("127.0.0.77"), 50)
    );
    let mut st3 = st.clone();
    record(&mut st3, &d, Acted::Nothing, ts(5));
    st3.ring_held = vec!["backend-1".into()];
    let d = decide(&s, &st3, &obs, ts(6));
    assert!(
        !matches!(&d, Decision::Reassert { commands, .. }
            if commands.iter().any(|c| c.contains(&"127.0.0.12".to_string()))),
        "{d:?}"
    );
}

/// The ring's record with `left` left out by a deleted DBU (`mail/old`) of this StatefulSet.
fn left_by_deleted(left: &BackendStatus) -> RingLock {
    RingLock {
        version: Some("3".into()),
        holders: lock::leave_out(
            &RingLock::default(),
            "mail/old",
            "backend",
            std::slice::from_ref(left),
            1,
        ),
    }
}

#[test]
fn a_left_out_backend_that_is_not_ready_or_drained_is_taken_over_not_waited_for() {
    let s = settings();
    let left = rec(2, Step::Reset, 0);
    let lock = left_by_deleted(&left);
    // its Dovecot is stopped: the pod is not Ready, and the ring shows it drained and down
    let mut obs = locked(lock);
    obs.pods[2].ready = false;
    if let Some(ring) = obs.ring.as_mut() {
        ring[2].vhosts = 0;
        ring[2].up = false;
    }
    let mut unread = obs.clone();
    unread.ring_lock = None;
    let d = decide(&s, &status(vec![]), &unread, ts(1));
    assert_eq!(
        missing(&d, &unread),
        Some(Missing::RingLock),
        "the record is read before {d:?} stands"
    );
    assert!(matches!(
        decide(&s, &status(vec![]), &obs, ts(1)),
        Decision::Adopt { .. }
    ));
    // only Ready but drained (a stall over the ring's word): the same, once the ring is synced
    unread.pods[2].ready = true;
    unread.ring_synced = Some(true);
    let d = decide(&s, &status(vec![]), &unread, ts(1));
    assert_eq!(missing(&d, &unread), Some(Missing::RingLock), "{d:?}");
    // the revision not yet the template's: the same
    unread.sts.as_mut().unwrap().current = false;
    let d = decide(&s, &status(vec![]), &unread, ts(1));
    assert_eq!(missing(&d, &unread), Some(Missing::RingLock), "{d:?}");
}

#[test]
fn a_left_out_backend_taken_over_is_finished_ahead_of_the_queue_and_still_counted() {
    use crate::machine::Waiter;
    let s = settings();
    let left = rec(2, Step::Verify, 0);
    let lock = left_by_deleted(&left);
    let mut obs = locked(lock.clone());
    // another DBU of the ring waits for a slot, since before this one asked
    obs.ring_queue = vec![Waiter {
        dbu: "mail/other".into(),
        since: ts(0),
    }];
    // taken over (found by the model: it waited RingBusy for the queue, and the queue for it,
    // for ever): its registration takes no new slot
    let mut st = status(vec![left.clone()]);
    st.ring_held.clear();
    assert_eq!(lock::busy(&s, &st, &obs, &lock, "backend-2"), None);
    // ... but it is still out: another backend of this DBU waits for it
    let two = with(json!({"maxUnavailable": 2}));
    obs.ring_queue.clear();
    assert_eq!(lock::busy(&two, &st, &obs, &lock, "backend-1"), None);
    assert!(lock::busy(&s, &st, &obs, &lock, "backend-1").is_some());
    // a left-out backend of another StatefulSet is not this DBU's to take: it waits
    let mx = with(json!({"backends": {"statefulSet": "mx"}}));
    assert!(lock::busy(&mx, &status(vec![]), &obs, &lock, "mx-0").is_some());
}

#[test]
fn a_left_out_backend_scaled_away_is_let_go_not_taken_over() {
    let s = settings();
    let left = rec(2, Step::StopLmtp, 0);
    let lock = left_by_deleted(&left);
    let mut obs = locked(lock.clone());
    assert!(!lock::adoptable(&s, &status(vec![]), &lock, &obs).is_empty());
    assert!(lock::released_left_out(&s, &status(vec![]), &obs, &lock).is_empty());
    // the StatefulSet keeps two pods now: backend-2 never comes back (found by the model: it
    // was taken over, closed as removed and taken over again, for ever)
    obs.sts.as_mut().unwrap().replicas = 2;
    obs.pods.retain(|p| p.name != "backend-2");
    assert!(lock::adoptable(&s, &status(vec![]), &lock, &obs).is_empty());
    assert_eq!(
        lock::released_left_out(&s, &status(vec![]), &obs, &lock).len(),
        1
    );
    assert_eq!(
        decide(&s, &status(vec![]), &obs, ts(1)),
        Decision::Claim { pods: vec![] },
        "the claim writes the record without it"
    );
    // only gone for good: a pod deleted and not yet recreated is inside the range
    obs.sts.as_mut().unwrap().replicas = 3;
    assert!(lock::released_left_out(&s, &status(vec![]), &obs, &lock).is_empty());
}

/// An adopted backend whose record ended before a claim made it this DBU's (a rejoin dropped
/// for want of room) is not adopted again: the claim lets its holder go. A finished record of
/// an earlier rollout of the pod (another start) does not count.
#[test]
fn an_adoption_that_ended_lets_its_left_out_holder_go() {
    let s = settings();
    let mut left = rec(2, Step::Verify, 0);
    left.started = Some(Time(ts(5)));
    let lock = left_by_deleted(&left);
    let obs = locked(lock.clone());
    let mut ended = left.clone();
    ended.step = Step::Done;
    let st = status(vec![ended.clone()]);
    assert!(lock::adoptable(&s, &st, &lock, &obs).is_empty());
    assert_eq!(lock::released_left_out(&s, &st, &obs, &lock).len(), 1);
    let mut st = st;
    st.ring_held.clear();
    assert_eq!(
        decide(&s, &st, &obs, ts(10)),
        Decision::Claim { pods: vec![] },
        "the claim writes the record without it"
    );
    // an earlier rollout's record of the pod: the left-out one is still adopted
    ended.started = Some(Time(ts(1)));
    let st = status(vec![ended]);
    assert_eq!(lock::adoptable(&s, &st, &lock, &obs).len(), 1);
    assert!(lock::released_left_out(&s, &st, &obs, &lock).is_empty());
}

/// A backend put back at a new IP keeps its slot until the ring's pass has recorded the entry
/// as the pod's; nothing new begins meanwhile, and the rollout does not complete. An entry the
/// ring no longer has holds nothing.
#[test]
fn a_slot_is_kept_until_the_rings_pass_knows_the_new_entry() {
    let s = settings();
    let new_ip = "127.0.0.99";
    let mut done = rec(0, Step::Done, 0);
    done.new_ip = Some(new_ip.into());
    let mut st = status(vec![done.clone()]);
    st.ring_held = vec!["backend-0".into()];
    let me = |h: &str| RingHolder {
        dbu: "mail/roll".into(),
        pod: h.into(),
        ip: new_ip.into(),
        max_unavailable: 1,
        left_out: None,
        reason: None,
    };
    let seen = || stood(new_ip, "backend-0", 100);
    let at_new = |o: &mut Observed| {
        o.pods[0].ip = Some(new_ip.into());
        o.pods[0].revision = Some(NEW.into());
        let ring = o.ring.as_mut().unwrap();
        ring[0].ip = new_ip.into();
    };
    // (ring's pass has seen the entry, ring read, entry in the ring) -> kept
    let t = [
        (false, true, true, true),
        (false, false, true, true),
        (true, true, true, false),
        // a human removed the entry: nothing to record
        (false, true, false, false),
    ];
    for (passed, read, in_ring, kept) in t {
        let mut obs = locked(RingLock {
            version: Some("3".into()),
            holders: vec![me("backend-0")],
        });
        at_new(&mut obs);
        if passed {
            obs.ring_former.push(seen());
        }
        if !in_ring {
            obs.ring.as_mut().unwrap().remove(0);
        }
        if !read {
            obs.ring = None;
        }
        let case = (passed, read, in_ring);
        assert_eq!(lock::awaits_ring_pass(&done, &obs), kept, "{case:?}");
        assert_eq!(lock::kept(&st, &obs).len(), usize::from(kept), "{case:?}");
        assert_eq!(lock::release_due(&st, &obs), !kept, "{case:?}");
    }
    // held for the pass, the rollout of the others waits, and reads the ring first
    let mut obs = locked(RingLock {
        version: Some("3".into()),
        holders: vec![me("backend-0")],
    });
    at_new(&mut obs);
    let d = decide(&s, &st, &obs, ts(60));
    assert!(
        waiting(&d, WaitReason::WaitingForRingPass)
            .contains("backend-0 is back in the ring at 127.0.0.99"),
        "{d:?}"
    );
    obs.ring_former.push(seen());
    assert_eq!(reason(&decide(&s, &st, &obs, ts(60))), "Claim");
    // a finished record whose slot is held is kept through a new template
    let mut moved = st.clone();
    fold::retarget(&mut moved, "rev-next");
    assert_eq!(moved.backends, vec![done]);
}

#[test]
fn a_moved_pod_at_the_only_serving_host_waits_for_capacity_not_for_its_step() {
    let s = settings();
    // backend-2, drained, came back at 127.0.0.50, an old entry the ring still sends users to,
    // and a human took the other two down: verifying it there would leave no host serving
    let mut obs = locked(RingLock::default());
    let ring = obs.ring.as_mut().unwrap();
    ring[2].vhosts = 0;
    ring[0].up = false;
    ring[1].up = false;
    ring.push(RingHost {
        ip: "127.0.0.50".into(),
        vhosts: 100,
        up: true,
        users: 0,
    });
    obs.pods[2].ip = Some("127.0.0.50".into());
    let d = decide(
        &s,
        &status(vec![rec(2, Step::WaitSessions, 0)]),
        &obs,
        ts(1),
    );
    // the wait shows as the capacity a human took away (found by the model: shown as a step
    // in progress, nobody could tell it waited for them)
    let m = waiting(&d, WaitReason::InsufficientRingCapacity);
    assert!(
        m.contains("came back at 127.0.0.50") && m.contains("once others serve"),
        "{m}"
    );
}

#[test]
fn a_deleted_dbu_leaves_a_backend_it_adopted_but_never_claimed_as_the_ring_keeps_it() {
    // the ring's copy carries a human's count the DBU's copy never took: the ring's stays
    let mut copy = rec(2, Step::Reset, 0);
    copy.original_vhosts = 40;
    let mut mine = copy.clone();
    mine.original_vhosts = 50;
    let held = RingHolder {
        dbu: "mail/gone".into(),
        pod: "backend-2".into(),
        ip: copy.ip.clone(),
        max_unavailable: 1,
        left_out: Some(Box::new(crate::api::LeftOut {
            stateful_set: "backend".into(),
            record: copy,
        })),
        reason: None,
    };
    let lock = RingLock {
        version: Some("3".into()),
        holders: vec![held.clone()],
    };
    let holders = lock::leave_out(&lock, "mail/roll", "backend", &[mine.clone()], 1);
    assert_eq!(holders, vec![held]);
    // claimed, the DBU's record is the one left out
    let claimed = RingLock {
        version: Some("4".into()),
        holders: vec![RingHolder {
            dbu: "mail/roll".into(),
            pod: "backend-2".into(),
            ip: mine.ip.clone(),
            max_unavailable: 1,
            left_out: None,
            reason: None,
        }],
    };
    let holders = lock::leave_out(&claimed, "mail/roll", "backend", &[mine.clone()], 1);
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].left_out.as_ref().unwrap().record, mine);
}

/// A deleted DBU did nothing to the ring for a backend it never held: not in its status, and
/// no holder for the pod in the ring's record read now (a claim whose status write was lost
/// still holds it); an unread record is never taken for "never held".
#[test]
fn a_backend_a_deleted_dbu_never_held_is_dropped_not_left_out() {
    let r = rec(0, Step::Verify, 0);
    let holder = |dbu: &str| RingHolder {
        dbu: dbu.into(),
        pod: "backend-0".into(),
        ip: r.ip.clone(),
        max_unavailable: 1,
        left_out: None,
        reason: None,
    };
    let lock = |holders| RingLock {
        version: Some("1".into()),
        holders,
    };
    // (in status.ringHeld, the ring's record read now) -> never held
    for (held, read, never) in [
        (false, Some(lock(vec![])), true),
        (false, Some(lock(vec![holder("mail/roll")])), false),
        (true, Some(lock(vec![])), false),
        (false, None, false),
    ] {
        let mut st = status(vec![r.clone()]);
        st.ring_held = if held {
            vec!["backend-0".into()]
        } else {
            vec![]
        };
        let case = (held, read.is_some());
        assert_eq!(
            crate::machine::never_held(&st, &r, read.as_ref()),
            never,
            "{case:?}"
        );
    }
}

/// A deletion that put a backend back at a new IP waits for the ring's pass to record the
/// entry as the pod's, whatever the ring read before the undo showed (the undo added it); an
/// entry the pass knows only as another pod's (that pod's former host, its count that pod's)
/// does not do.
#[test]
fn a_backend_an_undo_put_back_at_a_new_ip_waits_for_the_rings_pass() {
    let new_ip = "127.0.0.99";
    let me = Some(("backend-0", None));
    let other = |counts: &'static str| Some(("backend-7", Some(counts)));
    // (new IP, what the pass knows the entry as: stood for, counts for; failed) -> waits
    for (new, seen, failed, waits) in [
        (Some(new_ip), None, false, true),
        (Some(new_ip), me, false, false),
        (Some(new_ip), other("backend-0"), false, false),
        (Some(new_ip), other("backend-7"), false, true),
        (Some(new_ip), None, true, false),
        (None, None, false, false),
    ] {
        let mut r = rec(0, Step::RingRestore, 0);
        r.new_ip = new.map(Into::into);
        r.failed = failed;
        let mut obs = world();
        // read before the undo: the entry is not there yet
        obs.ring = Some(vec![crate::fixtures::host(0, 0, false, 0)]);
        if let Some((pod, counts)) = seen {
            obs.ring_former.push(crate::api::StoodFor {
                counts_for: counts.map(Into::into),
                ..stood(new_ip, pod, 100)
            });
        }
        let case = (new, seen, failed);
        assert_eq!(lock::restored_awaits_ring_pass(&r, &obs), waits, "{case:?}");
        // the deletion that put it back stays pending meanwhile
        let mut done = crate::machine::Deletion::default();
        done.undone_in(&r, Undone::Restored { human_down: false }, &obs);
        assert_eq!(done.finished(), !waits, "{case:?}");
    }
}

/// An entry the ring's record holds out for another backend (its rejoin put it back there; its
/// pod moved on since, so no pod has the IP) is that backend's: this record neither reads a
/// human's count there nor re-asserts its drained state on it; its own holder is its own.
#[test]
fn an_entry_the_rings_record_holds_for_another_backend_is_never_this_records() {
    let s = settings();
    // backend-0 moved from .11 (its entry, 100) to .99 and waits to be verified; mx-0's rejoin
    // put mx-0 back at .11 at 50, and mx-0 moved on: no pod has .11
    let mut r = rec(0, Step::Verify, 0);
    r.original_vhosts = 100;
    r.new_ip = Some("127.0.0.99".into());
    let theirs = RingHolder {
        dbu: "mail/mx".into(),
        pod: "mx-0".into(),
        ip: r.ip.clone(),
        max_unavailable: 1,
        left_out: None,
        reason: None,
    };
    let mine = RingHolder {
        dbu: "mail/roll".into(),
        pod: "backend-0".into(),
        ip: "127.0.0.99".into(),
        max_unavailable: 1,
        left_out: None,
        reason: None,
    };
    for (holders, read, other) in [
        (vec![theirs.clone(), mine.clone()], true, true),
        (vec![mine.clone()], true, false),
        (vec![theirs.clone(), mine.clone()], false, false),
    ] {
        let mut obs = locked(RingLock {
            version: Some("5".into()),
            holders,
        });
        if !read {
            obs.ring_lock = None;
        }
        obs.pods[0].ip = Some("127.0.0.99".into());
        obs.ring = Some(vec![crate::fixtures::host(0, 50, true, 0)]);
        let case = (read, other);
        assert_eq!(
            obs.entry_of_other(&r.ip, "backend-0").is_some(),
            other,
            "{case:?}"
        );
        assert_eq!(obs.entry_of_other("127.0.0.99", "backend-0"), None);
        let mut st = status(vec![r.clone()]);
        st.ring_held = vec!["backend-0".into()];
        crate::machine::fold::human_counts(&mut st, &obs);
        let want = if other { 100 } else { 50 };
        assert_eq!(st.backends[0].original_vhosts, want, "{case:?}");
        let drift = decide::ring_drift(&s, &st, obs.ring.as_deref().unwrap(), &obs);
        assert_eq!(drift.is_none(), other, "{case:?} {drift:?}");
    }
    // the ring's record is read with the ring while a record is in flight
    let mut obs = world();
    assert!(crate::machine::lock_with_ring(
        &status(vec![r.clone()]),
        &obs
    ));
    assert!(!crate::machine::lock_with_ring(&status(vec![]), &obs));
    obs.ring_lock = Some(Ok(RingLock::default()));
    assert!(!crate::machine::lock_with_ring(&status(vec![r]), &obs));
}

/// As above, once mx-0's slot is let go: the ring's pass recorded that .11 counts for mx-0
/// (`RingHostStatus::counts_for`), so backend-0, which left it, still reads no human's count
/// or down there; one that counts for backend-0 is read (found by the model: the count mx-0's
/// rejoin put back was taken for a human's, and backend-0 went back at it).
#[test]
fn an_entry_the_ring_counts_for_another_pod_is_not_read_for_a_human_by_the_pod_that_left_it() {
    let mut r = rec(0, Step::Verify, 0);
    r.original_vhosts = 100;
    r.new_ip = Some("127.0.0.99".into());
    for (counts, human) in [("mx-0", false), ("backend-0", true)] {
        let mut obs = locked(RingLock::default());
        obs.pods[0].ip = Some("127.0.0.99".into());
        obs.ring = Some(vec![crate::fixtures::host(0, 50, false, 0)]);
        obs.ring_former.push(crate::api::StoodFor {
            counts_for: Some(counts.into()),
            ..stood(&r.ip, "backend-0", 100)
        });
        assert_eq!(obs.count_of_other(&r.ip, "backend-0").is_some(), !human);
        let mut st = status(vec![r.clone()]);
        st.ring_held = vec!["backend-0".into()];
        let notes = crate::machine::fold::human_counts(&mut st, &obs);
        assert_eq!(notes.is_empty(), !human, "{counts}");
        let want = if human { 50 } else { 100 };
        assert_eq!(st.backends[0].original_vhosts, want, "{counts}");
    }
    // the pod at the entry is what it stands for: never another's count there
    let mut obs = world();
    obs.ring_former.push(crate::api::StoodFor {
        counts_for: Some("mx-0".into()),
        ..stood(&r.ip, "backend-0", 100)
    });
    assert_eq!(obs.count_of_other(&r.ip, "backend-0"), None);
}

#[test]
fn no_humans_change_is_read_at_an_entry_another_pod_sat_at_since_its_pod_left() {
    let ip = "10.0.0.11";
    let entry = |taken_by: Option<&str>| crate::api::StoodFor {
        counts_for: Some("backend-0".into()),
        taken_by: taken_by.map(str::to_string),
        counted: false,
        ..stood(ip, "backend-0", 100)
    };
    // (who sat there since backend-0 left, backend-0 there again) -> another's state
    for (taken_by, back, want) in [
        (None, false, false),
        (Some("mx-1"), false, true),
        (Some("mx-1"), true, false),
    ] {
        let mut obs = Observed::default();
        obs.ring_former.push(entry(taken_by));
        if back {
            obs.pods.push(PodView {
                ip: Some(ip.into()),
                ..fixtures::pod(0, NEW)
            });
        }
        assert_eq!(
            obs.taken_since(ip, "backend-0"),
            want,
            "{taken_by:?} {back}"
        );
        assert_eq!(
            obs.others_state_at(ip, "backend-0"),
            want,
            "{taken_by:?} {back}"
        );
    }
}

/// A decision taken on the watch's copy of the ring's record stands only when it waits and no
/// backend of the DBU is in flight; anything else reads the record from the source first.
#[test]
fn only_a_wait_with_nothing_in_flight_stands_on_the_watchs_copy_of_the_ring_record() {
    let wait = Decision::wait(WaitReason::WaitingForPods, "pods", Duration::from_secs(5));
    let idle = status(vec![]);
    let in_flight = status(vec![rec(0, Step::WaitSessions, 0)]);
    let done = status(vec![rec(0, Step::Done, 0)]);
    let adopt = Decision::Adopt {
        records: Vec::new(),
    };
    let claim = Decision::Claim {
        pods: vec!["backend-0".into()],
    };
    let cases: [(&str, &DovecotBackendUpgradeStatus, &Decision, bool); 8] = [
        ("a wait with nothing in flight", &idle, &wait, true),
        ("a wait after a finished backend", &done, &wait, true),
        (
            "a wait beside a backend in flight",
            &in_flight,
            &wait,
            false,
        ),
        ("an adoption", &idle, &adopt, false),
        ("a claim", &idle, &claim, false),
        (
            "a begin",
            &idle,
            &Decision::Begin(Box::new(rec(1, Step::Drain, 0))),
            false,
        ),
        ("a completion", &idle, &Decision::Complete, false),
        ("a run", &in_flight, &run(0, Step::WaitSessions), false),
    ];
    for (case, st, d, stands) in cases {
        assert_eq!(crate::machine::cached_lock_stands(st, d), stands, "{case}");
    }
}

/// backend-2 at Replace, its pod recreated since StopDovecot at 127.0.0.50, which the ring has
/// up at 100 vhosts; a human took backend-0 down and backend-1 to 0 vhosts.
fn replaced_at_50() -> (Observed, BackendStatus) {
    let mut obs = locked(RingLock::default());
    let ring = obs.ring.as_mut().unwrap();
    ring[0].up = false;
    ring[1].vhosts = 0;
    ring.push(RingHost {
        ip: "127.0.0.50".into(),
        vhosts: 100,
        up: true,
        users: 0,
    });
    obs.pods[2].ip = Some("127.0.0.50".into());
    obs.pods[2].uid = Some("uid-recreated".into());
    let mut r = rec(2, Step::Replace, 0);
    r.stopped_pod_uid = Some("uid-stopped".into());
    (obs, r)
}

/// Replace waiting to delete a recreated pod that is the only host serving (a human took the
/// others down) says it waits for capacity, not that a step is in progress (found by the model
/// with seed 7777: neither an admin nor the judge could tell it waited for that human).
#[test]
fn replace_waiting_for_the_only_serving_host_says_it_waits_for_capacity() {
    let s = settings();
    // at the old revision (to be deleted), backend-2's own entry drained and down
    let (mut obs, r) = replaced_at_50();
    let ring = obs.ring.as_mut().unwrap();
    ring[2].vhosts = 0;
    ring[2].up = false;
    let d = decide(&s, &status(vec![r]), &obs, ts(1));
    let m = waiting(&d, WaitReason::InsufficientRingCapacity);
    assert!(m.contains("only host that takes users"), "{m}");
}

/// The wait for another serving host before a record's entry, given vhosts again, is drained
/// again counts the record's old IP when another pod holds and serves at it now (found by the
/// model with seed 1: it took that IP for the record's own, and waited forever).
#[test]
fn the_last_serving_wait_counts_the_records_old_ip_another_pod_serves_at() {
    let s = settings();
    let (mut obs, mut r) = replaced_at_50();
    r.new_ip = Some("127.0.0.50".into());
    // backend-2's old entry: another StatefulSet's pod sits and serves there now
    let old = obs.ring.as_ref().unwrap()[2].ip.clone();
    obs.ring.as_mut().unwrap()[2].vhosts = 50;
    obs.ring_pods.push(("mx-0".into(), Some(old)));
    let d = decide(&s, &status(vec![r.clone()]), &obs, ts(1));
    assert_ne!(reason(&d), "InsufficientRingCapacity", "{d:?}");
    // with nobody at the old entry, it is the record's own, and the wait stands
    obs.ring_pods.clear();
    obs.ring.as_mut().unwrap()[2].vhosts = 0;
    let d = decide(&s, &status(vec![r]), &obs, ts(1));
    assert_eq!(reason(&d), "InsufficientRingCapacity", "{d:?}");
}

/// The wait for another serving host before a drained record's entry, given vhosts again by
/// hand, is zeroed again does not count an entry the ring's record holds another backend out
/// at while no pod of the ring has its IP: a rejoin's new entry whose pod moved on serves
/// nobody (found by the model with seed 7: the drain's re-assert left no host serving). A host
/// no record holds and no pod has (a backend outside Kubernetes) still serves.
#[test]
fn the_last_serving_wait_does_not_count_a_held_entry_whose_pod_left_it() {
    let s = settings();
    let other = "127.0.0.60";
    // (held out there?, a ring pod at it?) -> the decision
    let t = [
        ((true, false), "InsufficientRingCapacity"),
        ((true, true), "Reassert"),
        ((false, false), "Reassert"),
    ];
    for ((held, there), want) in t {
        let mut obs = locked(mx_holds(other, held));
        let ring = obs.ring.as_mut().unwrap();
        // backend-2 drained, a human gave it 40 again and took the other two down; the only
        // other host up with vhosts is mx-0's new entry
        ring[2].vhosts = 40;
        ring[0].up = false;
        ring[1].up = false;
        ring.push(RingHost {
            ip: other.into(),
            vhosts: 100,
            up: true,
            users: 0,
        });
        let at = if there { other } else { "127.0.0.61" };
        obs.ring_pods.push(("mx-0".into(), Some(at.into())));
        let d = decide(
            &s,
            &status(vec![rec(2, Step::WaitSessions, 0)]),
            &obs,
            ts(1),
        );
        assert_eq!(reason(&d), want, "held {held}, pod there {there}: {d:?}");
    }
}

/// A pod that came back at a new IP whose entry a human took down with its vhosts kept begins
/// its rejoin only with room to take it out, as a begun rejoin is weighed (`rejoin_room`):
/// otherwise it begins, is dropped for want of a slot the next pass, and begins again, and the
/// backend that holds the slot never gets a pass (found by the model with seed 2027).
#[test]
fn a_moved_pod_at_an_entry_a_human_took_down_begins_its_rejoin_only_with_room() {
    let s = settings();
    let landed = "127.0.0.77";
    // (the human's down at the new entry?, the slot taken?) -> the decision
    let t = [
        ((true, true), "RingBusy"),
        ((true, false), "Begin"),
        ((false, true), "Begin"),
    ];
    for ((down, taken), want) in t {
        let mut done = rec(1, Step::Done, 0);
        done.from_revision = Some(OLD.into());
        // another DBU holds the ring's only slot, or nobody does
        let mut obs = locked(mx_holds("127.0.0.60", taken));
        obs.pods = (0..3).map(|i| pod(i, NEW)).collect();
        obs.pods[1].ip = Some(landed.into());
        let ring = obs.ring.as_mut().unwrap();
        // backend-1's new entry is in the ring already (a restore cut short), at 50 vhosts
        ring.push(RingHost {
            ip: landed.into(),
            vhosts: if down { 50 } else { 0 },
            up: !down,
            users: 0,
        });
        let d = decide(&s, &status(vec![done]), &obs, ts(5));
        assert_eq!(reason(&d), want, "down {down}, slot taken {taken}: {d:?}");
    }
}

/// The ring's record as read: another DBU holds mx-0 out at `ip` (its only slot), or, when not
/// `held`, nobody holds anything.
fn mx_holds(ip: &str, held: bool) -> RingLock {
    let holder = RingHolder {
        dbu: "mail/mx".into(),
        pod: "mx-0".into(),
        ip: ip.into(),
        max_unavailable: 1,
        left_out: None,
        reason: None,
    };
    RingLock {
        version: Some("1".into()),
        holders: if held { vec![holder] } else { vec![] },
    }
}
