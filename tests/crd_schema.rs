//! The generated CRD: what it rejects at admission (patterns, minimums, CEL rules evaluated here).

use dovecot_upgrade_operator::api::{DovecotBackendUpgrade, DovecotRing};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(DovecotBackendUpgrade::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn ring_schema() -> Value {
    let crd = serde_json::to_value(DovecotRing::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The rules (rule, message) at a schema path.
fn rules(at: &Value) -> Vec<(String, String)> {
    at["x-kubernetes-validations"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules at {at}"))
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn eval(rule: &str, this: Value) -> bool {
    let program = cel::Program::compile(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    let mut ctx = cel::Context::default();
    ctx.add_variable("self", this).unwrap();
    match program
        .execute(&ctx)
        .unwrap_or_else(|e| panic!("{rule}: {e}"))
    {
        cel::Value::Bool(b) => b,
        other => panic!("{rule} gave {other:?}"),
    }
}

#[test]
fn a_dbu_names_its_ring_or_its_directors() {
    let s = schema();
    let (rule, msg) = &rules(&s["properties"]["spec"])[0];
    assert!(
        msg.contains("spec.ring") && msg.contains("spec.director"),
        "{msg}"
    );
    for (v, want) in [
        (json!({"ring": "mail"}), true),
        (
            json!({"director": {"selector": {"matchLabels": {"app": "d"}}}}),
            true,
        ),
        (json!({"ring": "mail", "director": {}}), true),
        (json!({"backends": {"statefulSet": "b"}}), false),
    ] {
        assert_eq!(eval(rule, v.clone()), want, "{v}");
    }
    let ring = ring_schema();
    let spec = &ring["properties"]["spec"];
    assert_eq!(spec["required"], json!(["backends", "directors"]));
    assert_eq!(spec["properties"]["backends"]["minItems"], 1);
    assert_eq!(spec["properties"]["maxUnavailable"]["minimum"], 1.0);
}

#[test]
fn director_selector_must_select_something() {
    let s = schema();
    let ring = ring_schema();
    for director in [
        &s["properties"]["spec"]["properties"]["director"],
        &ring["properties"]["spec"]["properties"]["directors"],
    ] {
        director_rule_holds(director);
    }
}

fn director_rule_holds(director: &Value) {
    let (rule, msg) = &rules(director)[0];
    assert!(msg.contains("selector"));
    let t = [
        (
            json!({"selector": {"matchLabels": {"app": "director"}}}),
            true,
        ),
        (
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}),
            true,
        ),
        (json!({"selector": {}}), false),
        (json!({"selector": {"matchLabels": {}}}), false),
        (
            json!({"selector": {"matchLabels": {}, "matchExpressions": []}}),
            false,
        ),
    ];
    for (v, want) in t {
        assert_eq!(eval(rule, v.clone()), want, "{v}");
    }
}

#[test]
fn reset_commands_must_be_argv_lists_without_a_shell() {
    let s = schema();
    let reset = &s["properties"]["spec"]["properties"]["reset"];
    let (rule, _) = &rules(reset)[0];
    let t = [
        (json!({}), true),
        (json!({"enabled": false}), true),
        (
            json!({"commands": [["find", "/var/dovecot/vmail", "-mindepth", "1", "-delete"]]}),
            true,
        ),
        (
            json!({"commands": [["rm -rf /var/dovecot/vmail/*"]]}),
            false,
        ),
        (json!({"commands": [["sh", "-c", "rm -rf /x"]]}), false),
        (json!({"commands": [["/bin/bash", "-c", "x"]]}), false),
        (json!({"commands": [["find", "/a", "-delete"], []]}), false),
    ];
    for (v, want) in t {
        assert_eq!(eval(rule, v.clone()), want, "{v}");
    }
    // a shell string where an argv list is expected fails the type check before any rule
    let cmds = &reset["properties"]["commands"];
    assert_eq!(cmds["type"], "array");
    assert_eq!(cmds["items"]["type"], "array");
    assert_eq!(cmds["items"]["items"]["type"], "string");
    // bounded, so the API server can cost the rule
    assert!(cmds["maxItems"].is_number() && cmds["items"]["maxItems"].is_number());
    assert!(cmds["items"]["items"]["maxLength"].is_number());
}

#[test]
fn patterns_and_minimums_reject_bad_values_at_admission() {
    let s = schema();
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], json!(["backends", "verify"]));
    assert_eq!(spec["properties"]["maxUnavailable"]["minimum"], 1.0);
    let sts = &spec["properties"]["backends"]["properties"]["statefulSet"];
    assert_eq!(sts["minLength"], 1);
    let name = regex_lite(sts["pattern"].as_str().unwrap());
    for (v, ok) in [
        ("backend", true),
        ("mail-backend.v2", true),
        ("", false),
        ("Backend", false),
        ("-x", false),
        ("a b", false),
    ] {
        assert_eq!(name(v), ok, "{v:?}");
    }
    let user = regex_lite(
        spec["properties"]["verify"]["properties"]["user"]["pattern"]
            .as_str()
            .unwrap(),
    );
    for (v, ok) in [
        ("probe@example.org", true),
        ("user*", false),
        ("us?r", false),
        ("a b", false),
        ("a\nb", false),
    ] {
        assert_eq!(user(v), ok, "{v:?}");
    }
    for field in ["pollInterval", "timeout"] {
        let d = regex_lite(
            spec["properties"]["drain"]["properties"][field]["pattern"]
                .as_str()
                .unwrap(),
        );
        for (v, ok) in [
            ("5s", true),
            ("1h30m", true),
            ("250ms", true),
            ("-5s", false),
            ("5", false),
            ("soon", false),
        ] {
            assert_eq!(d(v), ok, "{field} {v:?}");
        }
    }
}

/// The schema patterns use only what Go's RE2 and CEL's matches() share, so CEL evaluates them.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let rule = format!("self.matches({})", serde_json::to_string(pattern).unwrap());
    move |v: &str| eval(&rule, json!(v))
}

/// Every field has a description, so `kubectl explain dbu.spec...` teaches the whole API.
#[test]
fn every_field_is_described_for_kubectl_explain() {
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = node["properties"].as_object() {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    missing.push(p.clone());
                }
                walk(v, &p, missing);
            }
        }
        if node["items"].is_object() {
            walk(&node["items"], &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&schema()["properties"]["spec"], "spec", &mut missing);
    walk(&schema()["properties"]["status"], "status", &mut missing);
    walk(
        &ring_schema()["properties"]["spec"],
        "ring.spec",
        &mut missing,
    );
    walk(
        &ring_schema()["properties"]["status"],
        "ring.status",
        &mut missing,
    );
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "fields without a description"
    );
}

/// The API server refuses a CRD whose defaults break their own rules ("default: Invalid
/// value"), at install: every default is checked against the CEL rules of its node here.
#[test]
fn every_default_satisfies_its_own_rules() {
    fn walk(node: &Value, path: &str, checked: &mut Vec<String>) {
        if let (Some(default), Some(rules)) = (
            node.get("default"),
            node["x-kubernetes-validations"].as_array(),
        ) {
            for r in rules {
                let rule = r["rule"].as_str().unwrap();
                assert!(
                    eval(rule, default.clone()),
                    "{path}: default {default} breaks {rule}"
                );
                checked.push(path.to_string());
            }
        }
        if let Some(props) = node["properties"].as_object() {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), checked);
            }
        }
        if node["items"].is_object() {
            walk(&node["items"], &format!("{path}[]"), checked);
        }
    }
    let mut checked = Vec::new();
    walk(&schema()["properties"]["spec"], "spec", &mut checked);
    assert!(
        !checked.is_empty(),
        "some defaulted node has rules: {checked:?}"
    );
}
