//! The plan as the scripts run it: every command of every step, under both drain strategies.

use pretty_assertions::assert_eq;
use serde_json::json;

use crate::api::Step;
use crate::fixtures::{self, ts};

use super::super::observed::Observed;
use super::steps_for;

const OLD: &str = "rev-1";
const NEW: &str = "rev-2";

fn world() -> Observed {
    fixtures::world(3, OLD, NEW)
}

fn ring() -> Vec<crate::dovecot::RingHost> {
    (0..3)
        .map(|i| crate::dovecot::RingHost {
            ip: format!("127.0.0.{}", 11 + i),
            vhosts: [100, 50, 20][i],
            up: true,
            users: 3,
        })
        .collect()
}

fn plan(extra: serde_json::Value) -> Vec<(Step, Vec<String>)> {
    let s = fixtures::settings(extra);
    let obs = world();
    let ip = "127.0.0.13".parse().unwrap();
    steps_for(&s, &obs, &ring(), NEW, "backend-2", ip, 20, ts(0))
        .into_iter()
        .map(|p| (p.step, p.commands.iter().map(|c| c.join(" ")).collect()))
        .collect()
}

fn step(plan: &[(Step, Vec<String>)], step: Step) -> Vec<String> {
    plan.iter().find(|(s, _)| *s == step).unwrap().1.clone()
}

#[test]
fn the_plan_lists_every_command_the_scripts_run() {
    let p = plan(json!({"drain": {"strategy": "Wait"}}));
    let all: Vec<Step> = p.iter().map(|(s, _)| *s).collect();
    assert_eq!(all, Step::ALL[..10].to_vec());
    assert_eq!(
        step(&p, Step::Drain),
        ["doveadm director update 127.0.0.13 0"]
    );
    assert_eq!(step(&p, Step::WaitSessions), ["doveadm -f json who -1"]);
    // the lookup the reset guard relies on, read while Dovecot runs
    assert_eq!(
        step(&p, Step::StopLmtp),
        ["doveadm -f json user probe", "doveadm service stop lmtp"]
    );
    // doveadm stop returns once the master has exited: one look at master.pid
    assert_eq!(
        step(&p, Step::StopDovecot),
        ["doveadm stop", "cat /run/dovecot/master.pid"]
    );
    let reset = step(&p, Step::Reset);
    assert_eq!(reset[0], "cat /run/dovecot/master.pid");
    // each deleting command after its read-only twin, which must find no mail data
    let finds: Vec<&String> = reset.iter().filter(|c| c.starts_with("find")).collect();
    assert_eq!(finds.len(), 4, "{reset:#?}");
    assert!(finds[0].ends_with("-print -quit") && finds[1].ends_with("-print -quit"));
    assert!(finds[2].contains("-delete") && finds[3].contains("-delete"));
    assert_eq!(step(&p, Step::Replace), Vec::<String>::new());
    // a probe's leftovers go before the count and the probe's own mail after it
    let expunge = "doveadm expunge -u probe mailbox * header X-DBU-Probe ";
    assert_eq!(
        step(&p, Step::Verify),
        [
            expunge,
            "doveadm -f json mailbox list -u probe",
            "doveadm -f json mailbox status -u probe messages INBOX",
            "doveadm fetch -u probe text mailbox INBOX all",
            expunge,
        ]
    );
    assert_eq!(
        step(&p, Step::Soak),
        [
            "doveadm -f json director status",
            "doveadm -f json director status probe"
        ]
    );
    assert_eq!(
        step(&p, Step::RingRestore),
        [
            "doveadm director update 127.0.0.13 20",
            "doveadm director up 127.0.0.13"
        ]
    );
}

#[test]
fn a_move_drain_plans_its_look_its_moves_and_its_flush() {
    let p = plan(json!({"drain": {"strategy": "Move"}}));
    assert_eq!(
        step(&p, Step::WaitSessions),
        [
            "doveadm -f json who -1",
            "doveadm -f json process status",
            "head -v -c 512 /proc/<session pid>/cmdline",
            "doveadm -f json director status <user>",
            "doveadm director move <user> 127.0.0.11",
            "doveadm director flush 127.0.0.13",
        ]
    );
}
