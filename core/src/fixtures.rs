//! Test fixtures: the one builder of DBU specs, objects, records and worlds for every test and bench.
//!
//! Specs are built as the minimal valid spec with a JSON merge patch (RFC 7386) on top: objects
//! merge key by key, `null` removes a key, anything else replaces. One semantics everywhere.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::{
    BackendStatus, DovecotBackendUpgrade, DovecotBackendUpgradeSpec, DovecotBackendUpgradeStatus,
    Step,
};
use crate::dovecot::RingHost;
use crate::machine::{Observed, PodView, StsView};
use crate::settings::{self, Settings};

/// The StatefulSet every fixture names.
pub const STATEFULSET: &str = "backend";

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: Value) {
    json_patch::merge(target, &patch);
}

/// The smallest valid spec, as JSON, with `patch` merged in.
pub fn spec_json(patch: Value) -> Value {
    let mut v = json!({
        "backends": {"statefulSet": STATEFULSET},
        "director": {"selector": {"matchLabels": {"app": "director"}}},
        "verify": {"user": "probe"}
    });
    merge_patch(&mut v, patch);
    v
}

/// The smallest valid spec with `patch` merged in. Panics when it does not deserialize.
pub fn spec(patch: Value) -> DovecotBackendUpgradeSpec {
    serde_json::from_value(spec_json(patch)).expect("fixture spec deserializes")
}

/// Validated settings of `spec(patch)`. Panics when they do not validate.
pub fn settings(patch: Value) -> Settings {
    settings::validate(&spec(patch)).expect("fixture spec validates")
}

/// A whole DBU object as the API server would send it: name "roll" in namespace "mail", with
/// `meta` merged into its metadata and `spec_patch` into the minimal spec.
pub fn dbu_json(meta: Value, spec_patch: Value) -> Value {
    let mut m = json!({
        "name": "roll", "namespace": "mail", "uid": "u-1", "generation": 4,
        "resourceVersion": "10", "creationTimestamp": "2026-11-28T10:00:00Z"
    });
    merge_patch(&mut m, meta);
    json!({
        "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotBackendUpgrade",
        "metadata": m, "spec": spec_json(spec_patch)
    })
}

/// `dbu_json` deserialized.
pub fn dbu(meta: Value, spec_patch: Value) -> DovecotBackendUpgrade {
    serde_json::from_value(dbu_json(meta, spec_patch)).expect("fixture DBU deserializes")
}

/// A DovecotRing object "mail" in namespace "mail" listing the fixture StatefulSet, with the
/// fixture's directors, and `spec_patch` merged into its spec.
pub fn ring_json(spec_patch: Value) -> Value {
    let mut spec = json!({
        "directors": {"selector": {"matchLabels": {"app": "director"}}},
        "backends": [{"statefulSet": STATEFULSET}],
    });
    merge_patch(&mut spec, spec_patch);
    json!({
        "apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
        "metadata": {"name": "mail", "namespace": "mail", "uid": "r-1", "generation": 1,
            "resourceVersion": "7", "creationTimestamp": "2026-11-28T09:00:00Z"},
        "spec": spec
    })
}

/// Spec patches the operator must refuse, each with the field its error names.
pub fn bad_specs() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"verify": {"user": "u", "imapProbe": {"credentialsSecret": {"name": "p"}, "tls": {}}}}),
            "spec.verify.imapProbe.tls",
        ),
        (
            json!({"verify": {"user": "u", "imapProbe": {"credentialsSecret": {"name": "p"},
                "tls": {"caBundle": {"configMap": "ca"}, "serverName": "10.0.0.1"}}}}),
            "spec.verify.imapProbe.tls",
        ),
        (
            json!({"verify": {"user": "u", "imapProbe": {"credentialsSecret": {"name": "p"},
                "tls": {"mode": "None"}, "timeout": "forever"}}}),
            "spec.verify.imapProbe.timeout",
        ),
        (
            json!({"verify": {"user": "u", "imapProbe": {"credentialsSecret": {"name": "p"}, "tls": {"mode": "None"}},
                "soak": {"directorLogin": {"tls": {"mode": "Implicit"}}}}}),
            "spec.verify.soak.directorLogin.tls",
        ),
        (
            json!({"verify": {"user": "u", "soak": {"timeout": "0s"}}}),
            "spec.verify.soak.timeout",
        ),
        (
            json!({"backends": {"statefulSet": ""}}),
            "spec.backends.statefulSet",
        ),
        (json!({"revision": ""}), "spec.revision"),
        (json!({"revision": "2.3.21\nx"}), "spec.revision"),
        (
            json!({"backends": {"statefulSet": " "}}),
            "spec.backends.statefulSet",
        ),
        (json!({"maxUnavailable": 0}), "spec.maxUnavailable"),
        (json!({"maxUnavailable": -1}), "spec.maxUnavailable"),
        (json!({"maxUnavailable": -2}), "spec.maxUnavailable"),
        (json!({"drain": {"timeout": "soon"}}), "spec.drain.timeout"),
        (
            json!({"drain": {"timeout": "ten minutes"}}),
            "spec.drain.timeout",
        ),
        (
            json!({"drain": {"pollInterval": "-1s"}}),
            "spec.drain.pollInterval",
        ),
        (
            json!({"drain": {"pollInterval": "-5s"}}),
            "spec.drain.pollInterval",
        ),
        (
            json!({"drain": {"pollInterval": "1ms"}}),
            "spec.drain.pollInterval",
        ),
        (
            json!({"timeouts": {"command": "1h1x"}}),
            "spec.timeouts.command",
        ),
        (
            json!({"timeouts": {"command": "5x"}}),
            "spec.timeouts.command",
        ),
        (json!({"verify": {"user": "*"}}), "spec.verify.user"),
        (json!({"verify": {"user": "user*"}}), "spec.verify.user"),
        (json!({"verify": {"user": "us?r"}}), "spec.verify.user"),
        (json!({"verify": {"user": "u?"}}), "spec.verify.user"),
        (json!({"verify": {"user": "a b"}}), "spec.verify.user"),
        (json!({"verify": {"user": "two words"}}), "spec.verify.user"),
        (json!({"verify": {"user": "a\nb"}}), "spec.verify.user"),
        (
            json!({"verify": {"user": "line\nbreak"}}),
            "spec.verify.user",
        ),
        (
            json!({"verify": {"user": "u", "mailbox": "*"}}),
            "spec.verify.mailbox",
        ),
        // null removes matchLabels: the empty selector, which matches every pod
        (
            json!({"director": {"selector": {"matchLabels": null}}}),
            "spec.director.selector",
        ),
        (
            json!({"reset": {"commands": [["rm -rf /var/dovecot/vmail/*"]]}}),
            "spec.reset.commands",
        ),
        (
            json!({"reset": {"commands": [["sh", "-c", "rm -rf /x"]]}}),
            "spec.reset.commands",
        ),
        (
            json!({"reset": {"commands": [["/bin/sh", "-c", "rm -rf /x"]]}}),
            "spec.reset.commands",
        ),
        (json!({"reset": {"commands": [[]]}}), "spec.reset.commands"),
        (
            json!({"backends": {"baseDir": "run"}}),
            "spec.backends.baseDir",
        ),
        (
            json!({"minAvailableBackends": 0}),
            "spec.minAvailableBackends",
        ),
        (
            json!({"maintenanceWindow": {"timeZone": "Mars/Base", "start": "01:00", "duration": "2h"}}),
            "spec.maintenanceWindow.timeZone",
        ),
        (
            json!({"maintenanceWindow": {"start": "25:00", "duration": "2h"}}),
            "spec.maintenanceWindow.start",
        ),
        (
            json!({"maintenanceWindow": {"start": "01:00", "duration": "25h"}}),
            "spec.maintenanceWindow.duration",
        ),
        (
            json!({"maintenanceWindow": {"start": "01:00", "duration": "10s"}}),
            "spec.maintenanceWindow.duration",
        ),
    ]
}

/// The fixtures' clock: second `s` after a fixed instant.
pub fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("in range")
}

/// The IP of backend `i` in fixture worlds: 127.0.0.11 and up, then 127.0.1.11 and so on, so
/// that worlds of thousands of backends keep valid, distinct addresses.
pub fn backend_ip(i: u32) -> String {
    format!("127.0.{}.{}", i / 240, 11 + i % 240)
}

/// Backend pod `i` at revision `rev`, Ready.
pub fn pod(i: u32, rev: &str) -> PodView {
    PodView {
        name: format!("{STATEFULSET}-{i}"),
        uid: Some(format!("uid-{i}-{rev}")),
        ip: Some(backend_ip(i)),
        revision: Some(rev.into()),
        ready: true,
        terminating: false,
        maintenance: None,
        released: None,
        deletion_grace: None,
    }
}

/// Backend `i` as `director status` shows it.
pub fn host(i: u32, vhosts: u32, up: bool, users: u64) -> RingHost {
    RingHost {
        ip: backend_ip(i),
        vhosts,
        up,
        users,
    }
}

/// An OnDelete StatefulSet at `target` with `replicas`.
pub fn sts(target: &str, replicas: i32) -> StsView {
    StsView {
        update_strategy: "OnDelete".into(),
        update_revision: Some(target.into()),
        replicas,
        ordinals_start: 0,
        current: true,
        template_revision: None,
        termination_grace: None,
    }
}

/// `n` backends at `from`, the StatefulSet at `target`, a Ready director, and the ring unread.
pub fn world(n: u32, from: &str, target: &str) -> Observed {
    Observed {
        sts: Some(sts(target, n as i32)),
        pods: (0..n).map(|i| pod(i, from)).collect(),
        director: Some("director-0".into()),
        ..Default::default()
    }
}

/// A record of backend `i` at `step`, started (and at that step since) `started`, from `from`.
pub fn record(i: u32, step: Step, started: Timestamp, from: &str, vhosts: u32) -> BackendStatus {
    BackendStatus {
        step,
        ..BackendStatus::begin(
            &format!("{STATEFULSET}-{i}"),
            &backend_ip(i),
            Some(from.into()),
            vhosts,
            Time(started),
        )
    }
}

/// A status at `target` holding `records`, each active one registered in the ring's lock (as
/// it is once its Drain may run).
pub fn status(target: &str, records: Vec<BackendStatus>) -> DovecotBackendUpgradeStatus {
    DovecotBackendUpgradeStatus {
        target_revision: Some(target.into()),
        ring_held: records
            .iter()
            .filter(|r| r.step != Step::Done)
            .map(|r| r.pod.clone())
            .collect(),
        backends: records,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(
            &mut v,
            json!({"a": {"b": null, "e": 3}, "d": [2], "f": "x"}),
        );
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2], "f": "x"}));
    }
}
