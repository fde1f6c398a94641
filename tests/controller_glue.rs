//! Controller glue against a scripted mock API server: finalizer, status patches, events, no exec,
//! and no GET or LIST but where a fresh read is due: the world comes from the watch stores, given
//! here as objects (a DBU is read fresh only when its cached copy is older than the status last
//! written; the StatefulSet, pods and DBUs only before a stall or a first completion drawn from
//! the stores stands).

use std::sync::Arc;
use std::time::Duration;

use dbu_core::fixtures;
use dovecot_upgrade_operator::api::DovecotBackendUpgrade;
use dovecot_upgrade_operator::controller::{self, Context, FIELD_MANAGER, FINALIZER, Stores};
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn dbu(extra_meta: Value, spec: Value) -> DovecotBackendUpgrade {
    fixtures::dbu(extra_meta, spec)
}

fn ctx() -> (Arc<Context>, Handle) {
    ctx_with(vec![], vec![], vec![])
}

/// A context whose watch stores hold these StatefulSets, pods and DBUs.
fn ctx_with(sts: Vec<Value>, pods: Vec<Value>, dbus: Vec<Value>) -> (Arc<Context>, Handle) {
    ctx_with_ring(json!({}), sts, pods, dbus)
}

/// `ctx_with`, the ring's spec patched.
fn ctx_with_ring(
    ring: Value,
    sts: Vec<Value>,
    pods: Vec<Value>,
    dbus: Vec<Value>,
) -> (Arc<Context>, Handle) {
    // the fixture DBU's ring, as a GitOps repository declares it
    ctx_rings(vec![fixtures::ring_json(ring)], sts, pods, dbus)
}

/// A context whose stores hold these rings, StatefulSets, pods and DBUs.
fn ctx_rings(
    rings: Vec<Value>,
    sts: Vec<Value>,
    pods: Vec<Value>,
    dbus: Vec<Value>,
) -> (Arc<Context>, Handle) {
    fn objs<K: serde::de::DeserializeOwned>(v: Vec<Value>) -> Vec<K> {
        v.into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect()
    }
    let stores = Stores::from_objects(objs(sts), objs(pods), objs(dbus), objs(rings));
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    );
    (
        Arc::new(Context {
            guard: Default::default(),
            client,
            recorder,
            metrics: Default::default(),
            stores,
            lock_namespace: "mail".into(),
            policy: Default::default(),
            memory: Default::default(),
            ring_nudge: dovecot_upgrade_operator::controller::RingNudge::channel().0,
        }),
        handle,
    )
}

/// One expected request: method, path prefix; answers with `reply` and returns the body.
async fn expect(h: &mut Handle, method: Method, path: &str, reply: Value) -> (String, Value) {
    expect_code(h, method, path, 200, reply).await
}

async fn expect_code(
    h: &mut Handle,
    method: Method,
    path: &str,
    code: u16,
    reply: Value,
) -> (String, Value) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(2), h.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected {method} {path}, got nothing"))
        .expect("service not called");
    let uri = req.uri().to_string();
    assert_eq!(req.method(), method, "{uri}");
    assert!(uri.starts_with(path), "expected {path}, got {uri}");
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (uri, body)
}

/// The next request is an Event; returns it.
async fn expect_event(h: &mut Handle) -> Value {
    expect(
        h,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/mail/events",
        json!({}),
    )
    .await
    .1
}

async fn nothing_more(h: &mut Handle) {
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(300), h.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

const DBU_PATH: &str = "/apis/mailops.io/v1alpha1/namespaces/mail/dovecotbackendupgrades/roll";

fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap()
}

#[tokio::test]
async fn first_reconcile_acknowledges_then_adds_the_finalizer_and_nothing_else() {
    let (ctx, mut h) = ctx();
    let obj = dbu(json!({"generation": 1}), json!({}));
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        // status first: kstatus reads a DBU without status as Current (done)
        let (uri, body) = expect(
            &mut h,
            Method::PATCH,
            &format!("{DBU_PATH}/status"),
            reply.clone(),
        )
        .await;
        assert!(uri.contains("fieldManager="), "{uri}");
        let st = &body["status"];
        assert_eq!(st["observedGeneration"], 1, "{body}");
        assert_eq!(cond(st, "Reconciling")["status"], "True", "{body}");
        assert_eq!(cond(st, "Reconciling")["reason"], "Initializing", "{body}");
        assert_eq!(cond(st, "Ready")["status"], "False", "{body}");
        assert_eq!(cond(st, "Stalled")["status"], "False", "{body}");
        let (_, body) = expect(&mut h, Method::PATCH, DBU_PATH, reply).await;
        assert!(body.to_string().contains(FINALIZER), "{body}");
        nothing_more(&mut h).await;
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn invalid_spec_stalls_by_server_side_apply_and_warns() {
    let (ctx, mut h) = ctx();
    let obj = dbu(
        json!({"finalizers": [FINALIZER]}),
        json!({"verify": {"user": "user*"}}),
    );
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        let (uri, body) = expect(
            &mut h,
            Method::PATCH,
            &format!("{DBU_PATH}/status"),
            reply.clone(),
        )
        .await;
        assert!(
            uri.contains(&format!("fieldManager={FIELD_MANAGER}")) && uri.contains("force=true"),
            "{uri}"
        );
        assert_eq!(body["apiVersion"], "mailops.io/v1alpha1");
        assert_eq!(body["kind"], "DovecotBackendUpgrade");
        let st = &body["status"];
        assert_eq!(st["observedGeneration"], 4);
        assert_eq!(st["phase"], "Failed");
        assert_eq!(cond(st, "Stalled")["status"], "True");
        assert_eq!(cond(st, "Stalled")["reason"], "InvalidSpec");
        assert!(
            cond(st, "Stalled")["message"]
                .as_str()
                .unwrap()
                .contains("spec.verify.user")
        );
        assert_eq!(cond(st, "Ready")["status"], "False");
        let ev = expect_event(&mut h).await;
        assert_eq!(ev["type"], "Warning");
        assert_eq!(ev["reason"], "InvalidSpec");
        assert_eq!(ev["regarding"]["name"], "roll");
        nothing_more(&mut h).await;
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn rolling_update_statefulset_stalls_without_exec() {
    let (stalled, _) = stalls_without_exec(
        json!({}),
        vec![sts("RollingUpdate")],
        vec![],
        vec![],
        "UpdateStrategyNotOnDelete",
    )
    .await;
    assert!(stalled["message"].as_str().unwrap().contains("OnDelete"));
}

#[tokio::test]
async fn delete_runs_cleanup_then_removes_the_finalizer() {
    let (ctx, mut h) = ctx();
    let obj = dbu(
        json!({"finalizers": [FINALIZER], "deletionTimestamp": "2026-11-28T11:00:00Z"}),
        json!({}),
    );
    let mut reply = serde_json::to_value(&obj).unwrap();
    reply["metadata"]["finalizers"] = json!([]);
    let task = tokio::spawn(async move {
        // cleanup observes the stores: the StatefulSet is gone, so there is no ring to touch
        let (_, body) = expect(&mut h, Method::PATCH, DBU_PATH, reply).await;
        assert!(body.to_string().contains("finalizers"), "{body}");
        nothing_more(&mut h).await;
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn status_writes_are_numbered_and_carry_the_copy_s_version_as_a_precondition() {
    let (ctx, mut h) = ctx();
    let obj = dbu(
        json!({"finalizers": [FINALIZER], "resourceVersion": "41"}),
        json!({"verify": {"user": "-x"}}),
    );
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        let (_, body) = expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), reply).await;
        expect(
            &mut h,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/mail/events",
            json!({}),
        )
        .await;
        body
    });
    controller::reconcile(Arc::new(obj), ctx.clone())
        .await
        .unwrap();
    let body = task.await.unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "41", "{body}");
    assert_eq!(body["status"]["writeSeq"], 1, "{body}");
    assert!(
        cond(&body["status"], "Stalled")["message"]
            .as_str()
            .unwrap()
            .contains("starts with '-'"),
        "{body}"
    );
}

#[tokio::test]
async fn a_cached_copy_older_than_the_last_write_is_read_fresh_before_deciding() {
    let (ctx, mut h) = ctx();
    let mut obj = dbu(
        json!({"finalizers": [FINALIZER], "resourceVersion": "50"}),
        json!({"verify": {"user": "-x"}}),
    );
    obj.metadata.uid = Some("roll-uid".into());
    ctx.memory.update("roll-uid", |m| m.written = 7);
    obj.status = Some(Default::default());
    obj.status.as_mut().unwrap().write_seq = 6;
    let mut fresh = serde_json::to_value(&obj).unwrap();
    fresh["metadata"]["resourceVersion"] = json!("60");
    fresh["status"]["writeSeq"] = json!(7);
    let task = tokio::spawn(async move {
        // the watch lags behind what this process wrote: a GET first
        expect(&mut h, Method::GET, DBU_PATH, fresh.clone()).await;
        let (_, body) = expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), fresh).await;
        expect(
            &mut h,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/mail/events",
            json!({}),
        )
        .await;
        body
    });
    controller::reconcile(Arc::new(obj), ctx.clone())
        .await
        .unwrap();
    let body = task.await.unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "60");
    assert_eq!(body["status"]["writeSeq"], 8);
    assert_eq!(ctx.memory.get("roll-uid").written, 8);
}

#[tokio::test]
async fn delete_waits_while_a_drained_backend_cannot_be_put_back() {
    // backend-0 is at WaitSessions, and no director pod exists to put it back
    let (ctx, mut h) = ctx_with(
        vec![sts("OnDelete")],
        vec![backend_pod("backend-0")],
        vec![],
    );
    let mut obj = dbu(
        json!({"finalizers": [FINALIZER], "deletionTimestamp": "2026-11-28T11:00:00Z"}),
        json!({}),
    );
    obj.status = Some(fixtures::status(
        "backend-2",
        vec![fixtures::record(
            0,
            dovecot_upgrade_operator::api::Step::WaitSessions,
            fixtures::ts(0),
            "backend-1",
            100,
        )],
    ));
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        let (_, body) = expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), reply).await;
        let ev = expect_event(&mut h).await;
        // and no finalizer patch
        nothing_more(&mut h).await;
        (body, ev)
    });
    let err = controller::reconcile(Arc::new(obj), ctx).await.unwrap_err();
    let (body, ev) = task.await.unwrap();
    assert!(err.to_string().contains("backend-0"), "{err}");
    let rec = cond(&body["status"], "Reconciling");
    assert_eq!(
        (rec["status"].as_str(), rec["reason"].as_str()),
        (Some("True"), Some("CleanupPending"))
    );
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .contains("mailops.io/force-delete")
    );
    assert_eq!(
        (ev["type"].as_str(), ev["reason"].as_str()),
        (Some("Warning"), Some("CleanupPending"))
    );
    assert_eq!(
        dovecot_upgrade_operator::controller::retry_after_failures(1),
        Duration::from_secs(1)
    );
    assert_eq!(
        dovecot_upgrade_operator::controller::retry_after_failures(30),
        Duration::from_secs(15)
    );
}

/// Every spec the operator must refuse: a Stalled status and a Warning, nothing else (no exec).
#[tokio::test]
async fn bad_specs_are_refused_without_any_other_request() {
    let cases = fixtures::bad_specs();
    for (spec, field) in cases {
        let (ctx, mut h) = ctx();
        let obj = dbu(json!({"finalizers": [FINALIZER]}), spec.clone());
        let reply = serde_json::to_value(&obj).unwrap();
        let task = tokio::spawn(async move {
            let (_, body) =
                expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), reply).await;
            let stalled = cond(&body["status"], "Stalled").clone();
            expect(
                &mut h,
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/mail/events",
                json!({}),
            )
            .await;
            nothing_more(&mut h).await;
            stalled
        });
        controller::reconcile(Arc::new(obj), ctx).await.unwrap();
        let stalled = task.await.unwrap();
        assert_eq!(stalled["status"], "True", "{spec}");
        assert_eq!(stalled["reason"], "InvalidSpec", "{spec}");
        assert!(
            stalled["message"].as_str().unwrap().contains(field),
            "{spec}: {stalled}"
        );
    }
}

fn sts(strategy: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "backend", "namespace": "mail", "uid": "sts-uid"},
        "spec": {"replicas": 1, "serviceName": "backend", "selector": {"matchLabels": {"app": "backend"}},
                 "template": {}, "updateStrategy": {"type": strategy}},
        "status": {"replicas": 1, "updateRevision": "backend-2"}
    })
}

fn backend_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "mail", "uid": format!("{name}-uid"),
                     "labels": {"app": "backend", "controller-revision-hash": "backend-1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "backend", "uid": "sts-uid"}]},
        "spec": {"containers": [{"name": "dovecot"}]},
        "status": {"podIP": "10.9.9.9", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn list(kind: &str, items: &[Value]) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "7"}, "items": items})
}

/// Answers the fresh read a stall from the caches must pass before it stands: the StatefulSet
/// (404 when `sts` is None), then the pods and the DBUs of the namespace, as the API server has them.
async fn serve_fresh(h: &mut Handle, sts: Option<&Value>, pods: &[Value], dbus: &[Value]) {
    let sts_path = "/apis/apps/v1/namespaces/mail/statefulsets/backend";
    match sts {
        Some(o) => expect(h, Method::GET, sts_path, o.clone()).await,
        None => {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
            expect_code(h, Method::GET, sts_path, 404, gone).await
        }
    };
    expect(
        h,
        Method::GET,
        "/api/v1/namespaces/mail/pods",
        list("PodList", pods),
    )
    .await;
    let dbus_path = "/apis/mailops.io/v1alpha1/namespaces/mail/dovecotbackendupgrades";
    let (uri, _) = expect(
        h,
        Method::GET,
        dbus_path,
        list("DovecotBackendUpgradeList", dbus),
    )
    .await;
    assert!(!uri.starts_with(&format!("{dbus_path}/")), "a LIST: {uri}");
}

/// With these objects in the stores, expects the fresh read that confirms what they show (the
/// API server has the same objects), the Stalled status patch and its Warning, and nothing
/// else: no exec, no delete. Returns the condition and the Event.
async fn stalls_without_exec(
    spec: Value,
    sts: Vec<Value>,
    pods: Vec<Value>,
    dbus: Vec<Value>,
    reason: &'static str,
) -> (Value, Value) {
    // the ring's directors are the ones the DBU's spec names
    let ring = match spec.get("director") {
        Some(d) => json!({ "directors": d }),
        None => json!({}),
    };
    stalls_without_exec_in(
        vec![fixtures::ring_json(ring)],
        spec,
        sts,
        pods,
        dbus,
        reason,
    )
    .await
}

/// `stalls_without_exec` with these rings in the store.
async fn stalls_without_exec_in(
    rings: Vec<Value>,
    spec: Value,
    sts: Vec<Value>,
    pods: Vec<Value>,
    dbus: Vec<Value>,
    reason: &'static str,
) -> (Value, Value) {
    let (ctx, mut h) = ctx_rings(rings, sts.clone(), pods.clone(), dbus.clone());
    let obj = dbu(json!({"finalizers": [FINALIZER]}), spec);
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        let mut all = dbus.clone();
        all.push(reply.clone());
        serve_fresh(&mut h, sts.first(), &pods, &all).await;
        let (_, body) = expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), reply).await;
        let stalled = cond(&body["status"], "Stalled").clone();
        // becoming Stalled is announced once, for kubectl describe
        let ev = expect_event(&mut h).await;
        nothing_more(&mut h).await;
        (stalled, ev)
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    let (stalled, ev) = task.await.unwrap();
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some(reason)),
        "{stalled}"
    );
    assert_eq!(
        (ev["type"].as_str(), ev["reason"].as_str()),
        (Some("Warning"), Some("Stalled")),
        "{ev}"
    );
    assert!(ev["note"].as_str().unwrap().starts_with(reason), "{ev}");
    (stalled, ev)
}

#[tokio::test]
async fn a_missing_statefulset_stalls_without_exec() {
    stalls_without_exec(json!({}), vec![], vec![], vec![], "StatefulSetNotFound").await;
}

#[tokio::test]
async fn a_director_selector_that_matches_backends_stalls_without_exec() {
    stalls_without_exec(
        json!({"director": {"selector": {"matchLabels": {"app": "backend"}}}}),
        vec![sts("OnDelete")],
        vec![backend_pod("backend-0")],
        vec![],
        "DirectorSelectorMatchesBackends",
    )
    .await;
}

#[tokio::test]
async fn a_director_selector_that_matches_another_dbus_backends_stalls_without_exec() {
    // pool "mx" shares the ring; its DBU names it, and this DBU's selector picks its pods
    let mx_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "mx-0", "namespace": "mail", "uid": "mx-0-uid",
                     "labels": {"app": "mail", "controller-revision-hash": "mx-1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "mx", "uid": "mx-uid"}]},
        "spec": {"containers": [{"name": "dovecot"}]},
        "status": {"podIP": "10.9.9.8", "conditions": [{"type": "Ready", "status": "True"}]}
    });
    let mut other =
        serde_json::to_value(dbu(json!({}), json!({"backends": {"statefulSet": "mx"}}))).unwrap();
    other["metadata"]["name"] = json!("mx-rollout");
    let (stalled, _) = stalls_without_exec(
        json!({"director": {"selector": {"matchLabels": {"app": "mail"}}}}),
        vec![sts("OnDelete")],
        vec![backend_pod("backend-0"), mx_pod],
        vec![other],
        "DirectorSelectorMatchesBackends",
    )
    .await;
    assert!(
        stalled["message"].as_str().unwrap().contains("mx-0"),
        "{stalled}"
    );
}

/// Pool "pop" is a host of the ring but no DBU or ring names its StatefulSet; the director
/// selector (`app In (director, mail)`, `pool NotIn (backend)`, as a user wrote it) picks its
/// pod. The ring's last look found that pod's IP among its hosts: refused before any exec.
#[tokio::test]
async fn a_director_selector_that_matches_a_host_of_the_ring_stalls_without_exec() {
    let pop_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pop-0", "namespace": "mail", "uid": "pop-0-uid",
                     "labels": {"app": "mail", "pool": "pop"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "pop", "uid": "pop-uid"}]},
        "spec": {"containers": [{"name": "dovecot"}]},
        "status": {"podIP": "10.9.9.7", "conditions": [{"type": "Ready", "status": "True"}]}
    });
    // (null: the fixture's matchLabels go, as RFC 7386 merges)
    let selector = json!({"matchLabels": null, "matchExpressions": [
        {"key": "app", "operator": "In", "values": ["director", "mail"]},
        {"key": "pool", "operator": "NotIn", "values": ["backend"]}
    ]});
    let mut ring = fixtures::ring_json(json!({"directors": {"selector": selector}}));
    ring["status"] = json!({"hosts": [
        {"ip": "10.9.9.7", "vhosts": 100, "up": true, "users": 4},
        {"ip": "10.0.0.20", "pod": "backend-0", "vhosts": 100, "up": true, "users": 2}
    ]});
    let mut own = backend_pod("backend-0");
    own["metadata"]["labels"]["pool"] = json!("backend");
    let (stalled, _) = stalls_without_exec_in(
        vec![ring],
        json!({"director": {"selector": selector}}),
        vec![sts("OnDelete")],
        vec![own, pop_pod],
        vec![],
        "DirectorSelectorMatchesBackends",
    )
    .await;
    let message = stalled["message"].as_str().unwrap();
    assert!(
        message.contains("pop-0") && !message.contains("backend-0"),
        "{stalled}"
    );
}

#[tokio::test]
async fn a_second_dbu_for_the_same_statefulset_is_refused_and_the_first_carries_on() {
    let mut older = serde_json::to_value(dbu(json!({}), json!({}))).unwrap();
    older["metadata"]["name"] = json!("first");
    older["metadata"]["creationTimestamp"] = json!("2026-11-01T00:00:00Z");
    // this DBU ("roll", created later) is refused ...
    stalls_without_exec(
        json!({}),
        vec![sts("OnDelete")],
        vec![backend_pod("backend-0")],
        vec![older.clone()],
        "StatefulSetClaimed",
    )
    .await;
    // ... while the first one, seeing the newer "roll", is not: it goes on (here: no director yet)
    let newer = serde_json::to_value(dbu(json!({}), json!({}))).unwrap();
    let (ctx, mut h) = ctx_with(
        vec![sts("OnDelete")],
        vec![backend_pod("backend-0")],
        vec![newer, older.clone()],
    );
    let first: DovecotBackendUpgrade = {
        let mut o = older.clone();
        o["metadata"]["finalizers"] = json!([FINALIZER]);
        serde_json::from_value(o).unwrap()
    };
    let reply = older.clone();
    let task = tokio::spawn(async move {
        let (_, body) = expect(
            &mut h,
            Method::PATCH,
            "/apis/mailops.io/v1alpha1/namespaces/mail/dovecotbackendupgrades/first/status",
            reply,
        )
        .await;
        nothing_more(&mut h).await;
        body
    });
    controller::reconcile(Arc::new(first), ctx).await.unwrap();
    let body = task.await.unwrap();
    assert_eq!(cond(&body["status"], "Stalled")["status"], "False");
    assert_eq!(
        cond(&body["status"], "Reconciling")["reason"],
        "NoReadyDirector"
    );
}

#[tokio::test]
async fn spec_revision_is_not_ready_until_the_statefulset_template_carries_it() {
    // the StatefulSet store keeps the template's revision annotation (and only that)
    for (annotation, sts_observed, reason, ready) in [
        ("r1", 2, "WaitingForRevision", "False"),
        ("r2", 1, "WaitingForRevision", "False"),
        ("r2", 2, "UpgradeComplete", "True"),
    ] {
        let mut s = sts("OnDelete");
        s["metadata"]["generation"] = json!(2);
        s["status"]["observedGeneration"] = json!(sts_observed);
        s["spec"]["template"] =
            json!({"metadata": {"annotations": {"mailops.io/revision": annotation, "other": "x"}}});
        let mut pod = backend_pod("backend-0");
        pod["metadata"]["labels"]["controller-revision-hash"] = json!("backend-2");
        let (sts_obj, pod_obj) = (s.clone(), pod.clone());
        let (ctx, mut h) = ctx_with(vec![s], vec![pod], vec![]);
        let obj = dbu(
            json!({"finalizers": [FINALIZER]}),
            json!({"revision": "r2"}),
        );
        let reply = serde_json::to_value(&obj).unwrap();
        let task = tokio::spawn(async move {
            let mut fresh_reads = 0;
            // the ring's record may be read (and an earlier release's Lease: none); nothing is exec'd, neither while the
            // revision is pending nor to complete; the status patch is the one write
            let mut status = None;
            while let Ok(Some((req, send))) =
                tokio::time::timeout(Duration::from_millis(300), h.next_request()).await
            {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let (code, reply) = if method == Method::GET
                    && path.ends_with("/statefulsets/backend")
                {
                    fresh_reads += 1;
                    (200, sts_obj.clone())
                } else if method == Method::GET && path.ends_with("/pods") {
                    fresh_reads += 1;
                    (200, list("PodList", std::slice::from_ref(&pod_obj)))
                } else if method == Method::GET && path.ends_with("/dovecotbackendupgrades") {
                    fresh_reads += 1;
                    (
                        200,
                        list("DovecotBackendUpgradeList", std::slice::from_ref(&reply)),
                    )
                } else if method == Method::GET && path.ends_with("/dovecotrings/mail") {
                    (200, fixtures::ring_json(json!({})))
                } else if method == Method::GET && path.contains("/leases/") {
                    (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                    )
                } else if method == Method::PATCH && path == format!("{DBU_PATH}/status") {
                    let bytes = req.into_body().collect_bytes().await.unwrap();
                    status = Some(serde_json::from_slice::<Value>(&bytes).unwrap());
                    (200, reply.clone())
                } else {
                    assert!(path.ends_with("/events"), "{method} {path}");
                    (200, json!({}))
                };
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
            (status.expect("a status patch"), fresh_reads)
        });
        controller::reconcile(Arc::new(obj), ctx).await.unwrap();
        let (body, fresh_reads) = task.await.unwrap();
        // the first completion is confirmed by one fresh read (StatefulSet, pods, DBUs); a wait is not
        assert_eq!(
            fresh_reads,
            if ready == "True" { 3 } else { 0 },
            "{annotation} {sts_observed}"
        );
        let st = &body["status"];
        let (rec, rd) = (cond(st, "Reconciling"), cond(st, "Ready"));
        let got = if ready == "True" { rd } else { rec };
        assert_eq!(got["reason"], reason, "{annotation} {sts_observed}: {body}");
        assert_eq!(rd["status"], ready, "{body}");
        if annotation == "r1" {
            let m = rec["message"].as_str().unwrap();
            assert!(m.contains("\"r2\"") && m.contains("\"r1\""), "{m}");
        }
    }
}

#[tokio::test]
async fn a_statefulset_the_cache_has_not_seen_yet_is_no_stall() {
    // GitOps applies the StatefulSet and the DBU together: the StatefulSet store may not have it
    // yet when the DBU is first reconciled. The API server has it: no Stalled, no Warning.
    let (ctx, mut h) = ctx_with(vec![], vec![], vec![]);
    let obj = dbu(json!({"finalizers": [FINALIZER]}), json!({}));
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        let s = sts("OnDelete");
        serve_fresh(
            &mut h,
            Some(&s),
            &[backend_pod("backend-0")],
            std::slice::from_ref(&reply),
        )
        .await;
        let (_, body) = expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), reply).await;
        nothing_more(&mut h).await;
        body
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    let body = task.await.unwrap();
    let st = &body["status"];
    assert_eq!(cond(st, "Stalled")["status"], "False", "{body}");
    // no Ready director in what the API server shows either: it waits for one
    assert_eq!(
        cond(st, "Reconciling")["reason"],
        "NoReadyDirector",
        "{body}"
    );
}

const RINGS_PATH: &str = "/apis/mailops.io/v1alpha1/namespaces/mail/dovecotrings";

#[tokio::test]
async fn a_dbu_from_before_rings_gets_a_ring_created_from_its_directors() {
    let (ctx, mut h) = ctx_rings(vec![], vec![sts("OnDelete")], vec![], vec![]);
    let obj = dbu(
        json!({"finalizers": [FINALIZER]}),
        json!({"maxUnavailable": 2}),
    );
    let task = tokio::spawn(async move {
        let (_, ring) = expect(
            &mut h,
            Method::POST,
            RINGS_PATH,
            fixtures::ring_json(json!({})),
        )
        .await;
        let ev = expect_event(&mut h).await;
        nothing_more(&mut h).await;
        (ring, ev)
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    let (ring, ev) = task.await.unwrap();
    // named after the selector, as the earlier releases' Lease was: DBUs of one ring written
    // alike meet at one name
    assert!(
        ring["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("dbu-ring-"),
        "{ring}"
    );
    assert_eq!(
        ring["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "dovecot-upgrade-operator"
    );
    assert_eq!(
        ring["spec"],
        json!({"directors": {"selector": {"matchLabels": {"app": "director"}}},
               "backends": [{"statefulSet": "backend"}], "maxUnavailable": 2, "minAvailableBackends": 1})
    );
    assert_eq!(
        (ev["type"].as_str(), ev["reason"].as_str()),
        (Some("Normal"), Some("RingMigrated"))
    );
    assert!(
        ev["note"].as_str().unwrap().contains("kubectl get dring"),
        "{ev}"
    );
}

#[tokio::test]
async fn a_statefulset_in_two_rings_stalls_naming_both_without_exec() {
    let mut other =
        fixtures::ring_json(json!({"directors": {"selector": {"matchLabels": {"app": "other"}}}}));
    other["metadata"]["name"] = json!("zone-b");
    let (ctx, mut h) = ctx_rings(
        vec![fixtures::ring_json(json!({})), other],
        vec![sts("OnDelete")],
        vec![],
        vec![],
    );
    let obj = dbu(json!({"finalizers": [FINALIZER]}), json!({}));
    let reply = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(async move {
        let (_, body) = expect(&mut h, Method::PATCH, &format!("{DBU_PATH}/status"), reply).await;
        let stalled = cond(&body["status"], "Stalled").clone();
        let ev = expect_event(&mut h).await;
        nothing_more(&mut h).await;
        (stalled, ev)
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    let (stalled, ev) = task.await.unwrap();
    assert_eq!(stalled["reason"], "RingConflict");
    let m = stalled["message"].as_str().unwrap();
    assert!(m.contains("DovecotRing mail and DovecotRing zone-b"), "{m}");
    assert_eq!(
        (ev["type"].as_str(), ev["reason"].as_str()),
        (Some("Warning"), Some("RingConflict"))
    );
}

#[tokio::test]
async fn an_earlier_release_s_lease_is_taken_into_the_ring_once_by_compare_and_swap() {
    use dovecot_upgrade_operator::engine::Cluster;
    let (ctx, mut h) = ctx();
    let obj = dbu(json!({}), json!({}));
    let s = dbu_core::settings::with_ring(
        dbu_core::settings::validate(&obj.spec).unwrap(),
        "mail",
        &serde_json::from_value(fixtures::ring_json(json!({}))["spec"].clone()).unwrap(),
    )
    .unwrap();
    let lease = dbu_core::machine::lock::lease_name(&dbu_core::machine::lock::ring_key("mail", &s));
    let held = json!([{"dbu": "mail/gone", "pod": "backend-1", "ip": "10.0.0.2", "maxUnavailable": 1,
                       "leftOut": {"statefulSet": "backend", "record": {"pod": "backend-1", "ip": "10.0.0.2",
                        "fromRevision": "r1", "originalVhosts": 100, "step": "StopDovecot",
                        "stepStarted": "2026-11-28T10:00:00Z"}}}]);
    let task = tokio::spawn(async move {
        expect(
            &mut h,
            Method::GET,
            &format!("{RINGS_PATH}/mail"),
            fixtures::ring_json(json!({})),
        )
        .await;
        let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/mail/leases/{lease}");
        let lease_obj = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease, "namespace": "mail", "resourceVersion": "3",
                         "annotations": {"mailops.io/ring-holders": held.to_string()}}});
        expect(&mut h, Method::GET, &lease_path, lease_obj.clone()).await;
        let mut after = fixtures::ring_json(json!({}));
        after["metadata"]["resourceVersion"] = json!("8");
        let (_, patch) = expect(
            &mut h,
            Method::PATCH,
            &format!("{RINGS_PATH}/mail/status"),
            after,
        )
        .await;
        let (_, emptied) = expect(&mut h, Method::PATCH, &lease_path, lease_obj).await;
        nothing_more(&mut h).await;
        (patch, emptied)
    });
    let cluster = controller::edges_for(
        &ctx.client,
        &ctx.stores,
        &obj,
        "mail",
        "mail",
        Default::default(),
    )
    .0;
    let lock = cluster.read_ring_lock(&s).await.unwrap();
    let (patch, emptied) = task.await.unwrap();
    // under the version read, with the mark that it was taken in, in the same write
    assert_eq!(patch["metadata"]["resourceVersion"], "7");
    assert_eq!(patch["status"]["out"][0]["pod"], "backend-1");
    assert_eq!(patch["status"]["outCount"], 1);
    assert_eq!(patch["status"]["importedFrom"].as_array().unwrap().len(), 1);
    assert_eq!(
        emptied["metadata"]["annotations"]["mailops.io/ring-holders"],
        "[]"
    );
    // the left-out backend stays out (its DBU is gone), and the lock is the version written
    assert_eq!(lock.version.as_deref(), Some("8"));
    assert_eq!(lock.holders.len(), 1);
}

#[tokio::test]
async fn the_ring_the_operator_created_is_folded_into_the_one_a_human_declares() {
    let mut auto = fixtures::ring_json(json!({}));
    auto["metadata"]["name"] = json!("dbu-ring-1");
    auto["metadata"]["uid"] = json!("auto-uid");
    auto["metadata"]["resourceVersion"] = json!("5");
    auto["metadata"]["labels"] =
        json!({"app.kubernetes.io/managed-by": "dovecot-upgrade-operator"});
    auto["status"] = json!({"out": [{"dbu": "mail/old", "pod": "backend-2", "ip": "10.0.0.3", "maxUnavailable": 1}], "outCount": 1});
    let declared = fixtures::ring_json(json!({}));
    let (ctx, mut h) = ctx_rings(
        vec![auto.clone(), declared.clone()],
        vec![sts("OnDelete")],
        vec![],
        vec![],
    );
    let obj = dbu(json!({"finalizers": [FINALIZER]}), json!({"ring": "mail"}));
    let task = tokio::spawn(async move {
        expect(
            &mut h,
            Method::GET,
            &format!("{RINGS_PATH}/dbu-ring-1"),
            auto.clone(),
        )
        .await;
        expect(
            &mut h,
            Method::GET,
            &format!("{RINGS_PATH}/mail"),
            declared.clone(),
        )
        .await;
        let (_, moved) = expect(
            &mut h,
            Method::PATCH,
            &format!("{RINGS_PATH}/mail/status"),
            declared,
        )
        .await;
        let (_, deleted) = expect(
            &mut h,
            Method::DELETE,
            &format!("{RINGS_PATH}/dbu-ring-1"),
            auto,
        )
        .await;
        let ev = expect_event(&mut h).await;
        nothing_more(&mut h).await;
        (moved, deleted, ev)
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    let (moved, deleted, ev) = task.await.unwrap();
    // the record moves first, under the declared ring's version, marked with what it took in
    assert_eq!(moved["metadata"]["resourceVersion"], "7");
    assert_eq!(moved["status"]["out"][0]["pod"], "backend-2");
    assert_eq!(
        moved["status"]["importedFrom"],
        json!(["dbu-ring-1/auto-uid@5"])
    );
    // then the old ring goes, only if it is still the version whose record moved
    assert_eq!(
        deleted["preconditions"],
        json!({"uid": "auto-uid", "resourceVersion": "5"})
    );
    assert_eq!(ev["reason"], "RingMigrated");
}

#[tokio::test]
async fn deleting_after_the_statefulset_is_gone_finishes_and_says_why() {
    // backend-0 was drained when its StatefulSet (and so its pod) was deleted
    let (ctx, mut h) = ctx_with(vec![], vec![], vec![]);
    let mut obj = dbu(
        json!({"finalizers": [FINALIZER], "deletionTimestamp": "2026-11-28T11:00:00Z"}),
        json!({}),
    );
    let rec: dbu_core::api::BackendStatus = serde_json::from_value(json!({
        "pod": "backend-0", "ip": "10.9.9.9", "fromRevision": "backend-1", "originalVhosts": 100,
        "step": "WaitSessions", "stepStarted": "2026-11-28T10:59:00Z"}))
    .unwrap();
    obj.status = Some(dbu_core::api::DovecotBackendUpgradeStatus {
        backends: vec![rec],
        ring_held: vec!["backend-0".into()],
        ..Default::default()
    });
    let mut reply = serde_json::to_value(&obj).unwrap();
    reply["metadata"]["finalizers"] = json!([]);
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut event = Value::Null;
        while let Ok(Some((req, send))) =
            tokio::time::timeout(Duration::from_millis(300), h.next_request()).await
        {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let body = req.into_body().collect_bytes().await.unwrap();
            let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
            let (code, answer) =
                if path.ends_with("/statefulsets/backend") || path.contains("/leases/") {
                    (404, not_found)
                } else if path.ends_with("/pods") {
                    (200, list("PodList", &[]))
                } else if path.ends_with("/dovecotbackendupgrades") {
                    (
                        200,
                        list("DovecotBackendUpgradeList", std::slice::from_ref(&reply)),
                    )
                } else if path.ends_with("/dovecotrings/mail") {
                    (200, fixtures::ring_json(json!({})))
                } else if path.ends_with("/events") {
                    event = serde_json::from_slice(&body).unwrap();
                    (200, json!({}))
                } else {
                    (200, reply.clone())
                };
            seen.push(format!("{method} {path}"));
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        (seen, event)
    });
    controller::reconcile(Arc::new(obj), ctx).await.unwrap();
    let (seen, event) = task.await.unwrap();
    // the cache's "gone" was confirmed by the API server before it stood; no exec at all
    assert!(
        seen.iter()
            .any(|r| r == "GET /apis/apps/v1/namespaces/mail/statefulsets/backend"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|r| r.contains("/exec")), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some(DBU_PATH).map(|p| format!("PATCH {p}")).as_deref(),
        "the finalizer goes: {seen:?}"
    );
    assert_eq!(event["reason"], "BackendLeftOut");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("StatefulSet backend is gone")
            && event["note"]
                .as_str()
                .unwrap()
                .contains("doveadm director remove 10.9.9.9"),
        "{event}"
    );
}

/// A fence that says no, as a replica that lost the leader Lease.
struct Deposed;

#[async_trait::async_trait]
impl dovecot_upgrade_operator::exec::Fence for Deposed {
    async fn check(&self) -> Result<(), String> {
        Err("the leader Lease is held by replica-b".into())
    }
}

#[tokio::test]
async fn a_deposed_leader_runs_no_command_that_changes_anything() {
    use dovecot_upgrade_operator::exec::{ExecError, ExecRequest, KubeExec, PodExec};
    let (ctx, mut h) = ctx();
    let exec = KubeExec::new(kube::Api::namespaced(ctx.client.clone(), "mail"))
        .fenced(Some(Arc::new(Deposed)));
    let d = dovecot_upgrade_operator::dovecot::Doveadm::new(None);
    for argv in [
        d.director_update("10.0.0.5".parse().unwrap(), 0),
        d.stop(),
        vec!["rm".into(), "-rf".into(), "/x".into()],
    ] {
        let out = exec
            .exec(ExecRequest {
                pod: "backend-2",
                container: None,
                argv: &argv,
                timeout: Duration::from_secs(5),
            })
            .await;
        assert!(
            matches!(&out, Err(ExecError::Fenced(why)) if why.contains("replica-b")),
            "{argv:?}: {out:?}"
        );
    }
    // never reached the API server: no pods/exec at all
    nothing_more(&mut h).await;
}
