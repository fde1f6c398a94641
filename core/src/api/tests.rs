//! The resource's shapes: step order, defaults, what serde and the schema say.

use super::*;

#[test]
fn steps_are_in_runbook_order_and_next_saturates() {
    let mut s = Step::Drain;
    let mut seen = vec![s];
    while s != Step::Done {
        s = s.next();
        seen.push(s);
    }
    assert_eq!(seen, Step::ALL.to_vec());
    assert_eq!(Step::Done.next(), Step::Done);
    assert!(
        Step::StopDovecot < Step::RingRemove,
        "stop before down+flush"
    );
}

#[test]
fn spec_defaults_fill_in() {
    let spec: DovecotBackendUpgradeSpec = crate::fixtures::spec(serde_json::json!({}));
    assert_eq!(spec.max_unavailable, 1);
    assert_eq!(spec.drain.timeout, "15m");
    assert_eq!(spec.drain.on_timeout, DrainTimeoutAction::Proceed);
    assert!(spec.reset.enabled);
    assert_eq!(spec.verify.mailbox, "INBOX");
    assert_eq!(spec.backends.base_dir, "/run/dovecot");
    assert!(!spec.paused);
}
