#!/usr/bin/python3
"""Renders the Helm chart with real helm under several value sets and checks what it produces:
least-privilege RBAC, a hardened pod, probes, optional objects, schema rejections, and that the
kustomize base in deploy/base holds the same objects as the chart's default rendering.
Run from the repository root with helm and kubectl on PATH (scripts/test.sh does)."""
import subprocess
import sys

import yaml

CHART = "charts/dovecot-upgrade-operator"
failures = []


def check(cond, what):
    print(("ok   - " if cond else "FAIL - ") + what)
    if not cond:
        failures.append(what)


def render(*sets, ns="ops"):
    args = ["helm", "template", "dbu", CHART, "--namespace", ns]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def rejected(*sets):
    args = ["helm", "template", "dbu", CHART]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run(args, capture_output=True, text=True)
    return r.returncode != 0 and "values don't meet the specifications of the schema" in r.stderr


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def rules_with(docs, resource):
    return [
        (d["kind"], d["metadata"].get("namespace"))
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for r in d["rules"]
        if resource in r.get("resources", [])
    ]


# defaults: namespaced, two replicas, no optional objects; node maintenance on (its ClusterRole)
docs = render()
check(
    kinds(docs)
    == ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role", "Role", "RoleBinding",
        "RoleBinding", "Service", "ServiceAccount"],
    f"default objects: {kinds(docs)}",
)
# node maintenance: nodes read cluster-wide, never changed; the rings' budgets in the watched namespace
node_rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
check(node_rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}],
      f"the only cluster-wide rule: get, list, watch on nodes ({node_rules})")
check(rules_with(docs, "poddisruptionbudgets") == [("Role", "ops")], "budgets only in the watched namespace")
check(rules_with(docs, "secrets") == [], "no access to secrets")
check(all("*" not in r.get("resources", []) + r.get("verbs", []) for d in docs if "rules" in d for r in d["rules"]), "no wildcards in RBAC")
check(rules_with(docs, "pods/exec") == [("Role", "ops")], "pods/exec only in the watched namespace")
check(rules_with(docs, "leases") == [("Role", "ops")], "leases only in the release namespace")
lease_verbs = [r["verbs"] for d in docs if d["kind"] == "Role" for r in d["rules"] if "leases" in r.get("resources", [])]
check(lease_verbs == [["get", "create", "update", "patch"]], f"Leases: get, create, update, patch; no list or watch: {lease_verbs}")
dep = one(docs, "Deployment")
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
check(dep["spec"]["replicas"] == 2, "two replicas")
check(pod["securityContext"]["runAsNonRoot"] is True, "runAsNonRoot")
check(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "seccomp RuntimeDefault")
check(c["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root filesystem")
check(c["securityContext"]["allowPrivilegeEscalation"] is False, "no privilege escalation")
check(c["securityContext"]["capabilities"]["drop"] == ["ALL"], "all capabilities dropped")
check(set(c["resources"]["requests"]) >= {"cpu", "memory"} and set(c["resources"]["limits"]) >= {"cpu", "memory"}, "requests and limits")
check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz", "probes on /healthz and /readyz")
env = {e["name"]: e.get("value") for e in c["env"]}
check(env.get("WATCH_NAMESPACE") == "ops", "watches the release namespace")
check(env.get("METRICS_ADDR") == "0.0.0.0:8080", "metrics address")
svc = one(docs, "Service")
check(svc["spec"]["ports"][0]["targetPort"] == "metrics", "metrics Service")
check(one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1, "PDB keeps one replica")

env = {e["name"]: e.get("value") for e in c["env"]}
check(env.get("NODE_MAINTENANCE") == "true" and env.get("MAINTENANCE_TAINTS") == "", "node maintenance on, no taint named")
docs = render("nodeMaintenance.enabled=false")
check("ClusterRole" not in kinds(docs) and "ClusterRoleBinding" not in kinds(docs), "node maintenance off: nothing cluster-wide")
env = {e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
check(env.get("NODE_MAINTENANCE") == "false", "node maintenance off: NODE_MAINTENANCE=false")
env = {e["name"]: e.get("value") for e in one(render("nodeMaintenance.taints={example.com/upgrade,kured}"), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
check(env.get("MAINTENANCE_TAINTS") == "example.com/upgrade,kured", "maintenance taints joined for the operator")
check(rejected("nodeMaintenance.taints={a b}"), "schema rejects a taint key with a space")

# mail backends in another namespace: exec there only, the Lease stays home
docs = render("watchNamespace=mail")
check(rules_with(docs, "pods/exec") == [("Role", "mail")], "watchNamespace moves the workload Role")
check(rules_with(docs, "leases") == [("Role", "ops")], "the Lease Role stays in the release namespace")
env = {e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
check(env.get("WATCH_NAMESPACE") == "mail", "WATCH_NAMESPACE follows watchNamespace")

# cluster-wide
docs = render("clusterWide=true")
check(rules_with(docs, "pods/exec") == [("ClusterRole", None)], "clusterWide: a ClusterRole")
env = {e["name"] for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
check("WATCH_NAMESPACE" not in env, "clusterWide: no WATCH_NAMESPACE")

# single replica: no PDB (it would block every drain)
check("PodDisruptionBudget" not in kinds(render("replicaCount=1")), "no PDB with one replica")

# optional objects
docs = render("metrics.serviceMonitor.enabled=true", "networkPolicy.enabled=true")
sm = one(docs, "ServiceMonitor")
check(sm["spec"]["endpoints"][0]["port"] == "metrics", "ServiceMonitor scrapes the metrics port")
check("PrometheusRule" not in kinds(docs) and "ConfigMap" not in kinds(docs),
      "no PrometheusRule or dashboard unless asked")
docs = render("metrics.prometheusRule.enabled=true", "metrics.grafanaDashboard.enabled=true",
              "metrics.prometheusRule.labels.release=kps")
pr = one(docs, "PrometheusRule")
check(pr["metadata"]["labels"].get("release") == "kps", "PrometheusRule carries the labels Prometheus selects by")
alerts = [r["alert"] for g in pr["spec"]["groups"] for r in g["rules"]]
check(len(alerts) == 7 and all(r["annotations"].get("runbook") for g in pr["spec"]["groups"] for r in g["rules"]),
      f"PrometheusRule: 7 alerts, each with a runbook line ({alerts})")
check(all("runbook_url" not in r["annotations"] for g in pr["spec"]["groups"] for r in g["rules"]),
      "no runbook_url unless metrics.prometheusRule.runbookUrl is set")
cm = one(docs, "ConfigMap")
check(cm["metadata"]["labels"].get("grafana_dashboard") == "1" and
      list(cm["data"]) == ["dovecot-upgrade-operator.json"], "dashboard ConfigMap for Grafana's sidecar")
check(rejected("metrics.prometheusRule.backendOutSeconds=10"), "schema rejects a backend-out threshold under a minute")
check(rejected("metrics.prometheusRule.stalledFor=soon"), "schema rejects a duration Prometheus cannot read")
docs = render("metrics.serviceMonitor.enabled=true", "networkPolicy.enabled=true")
np = one(docs, "NetworkPolicy")
egress_ports = sorted(p["port"] for rule in np["spec"]["egress"] for p in rule["ports"])
check(egress_ports == [24, 53, 53, 143, 143, 443, 6443],
      f"NetworkPolicy egress: API server, DNS, the backends' LMTP and IMAP, the directors' IMAP only ({egress_ports})")
np = one(render("networkPolicy.enabled=true", "networkPolicy.directorLogin.ports=null"), "NetworkPolicy")
check(sorted(p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]) == [24, 53, 53, 143, 443, 6443],
      "NetworkPolicy: no director login rule when its ports are emptied")

# Verify's IMAP probe: get on the named Secrets and ConfigMaps only, never list or watch
docs = render("probeSecrets={upgrade-probe}", "probeConfigMaps={mail-ca}")
reads = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]
         if set(r.get("resources", [])) & {"secrets", "configmaps"}]
check(sorted((r["resources"], r.get("resourceNames"), r["verbs"]) for r in reads)
      == [(["configmaps"], ["mail-ca"], ["get"]), (["secrets"], ["upgrade-probe"], ["get"])],
      f"probeSecrets/probeConfigMaps: get by resourceNames only ({reads})")
check(rejected("probeSecrets={Not_A_Name}"), "schema rejects a probe Secret name that is not a DNS name")
check(np["spec"]["ingress"][0]["ports"][0]["port"] == "metrics", "NetworkPolicy ingress: metrics only")

# values.schema.json rejects nonsense
for bad in (["replicaCount=0"], ["bogus=1"], ["logFormat=xml"], ["metrics.port=70000"]):
    check(rejected(*bad), f"schema rejects {bad}")

# the kustomize base is the chart's default rendering plus its Namespace
kust = [d for d in yaml.safe_load_all(subprocess.run(["kubectl", "kustomize", "deploy/base"], check=True, capture_output=True, text=True).stdout) if d]
helm_default = subprocess.run(
    ["helm", "template", "dovecot-upgrade-operator", CHART, "--namespace", "dovecot-upgrade-operator", "--include-crds"],
    check=True, capture_output=True, text=True,
).stdout
helm_docs = [d for d in yaml.safe_load_all(helm_default) if d]
key = lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
check(sorted(map(key, kust)) == sorted(map(key, helm_docs + [{"kind": "Namespace", "metadata": {"name": "dovecot-upgrade-operator"}}])), "kustomize base matches the chart")
by_key = {key(d): d for d in kust}
check(all(by_key.get(key(d)) == d for d in helm_docs), "kustomize base objects equal the chart's")

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
