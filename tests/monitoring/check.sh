#!/usr/bin/env bash
# Checks the chart's PrometheusRule with Prometheus's own promtool: renders the chart with helm,
# takes the rule groups out of the PrometheusRule, then `promtool check rules` and
# `promtool test rules` (tests/monitoring/alerts.test.yaml: each alert firing and quiet).
# Needs helm and promtool on PATH (scripts/install-tools.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/../.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
helm template dbu charts/dovecot-upgrade-operator --namespace ops \
  --set metrics.prometheusRule.enabled=true \
  --set metrics.prometheusRule.runbookUrl=https://example.org/docs/operating.md \
  --show-only templates/prometheusrule.yaml > "$work/prometheusrule.yaml"
/usr/bin/python3 - "$work/prometheusrule.yaml" "$work/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
cp tests/monitoring/alerts.test.yaml "$work/"
promtool check rules "$work/rules.yaml"
# every alert of the rules has a test that sees it fire
/usr/bin/python3 - "$work/rules.yaml" "$work/alerts.test.yaml" <<'PY'
import sys, yaml
alerts = {r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r}
fired = {
    t["alertname"]
    for test in yaml.safe_load(open(sys.argv[2]))["tests"]
    for t in test.get("alert_rule_test", [])
    if t.get("exp_alerts")
}
missing = sorted(alerts - fired)
if missing:
    sys.exit(f"monitoring: no test sees these alerts fire: {missing}")
print(f"monitoring: {len(alerts)} alerts, each seen firing by a test")
PY
(cd "$work" && promtool test rules alerts.test.yaml)

# the dashboard: valid JSON in the ConfigMap, and every panel's query valid PromQL (promtool
# parses each as a recording rule, Grafana's variables replaced by values they take)
helm template dbu charts/dovecot-upgrade-operator --namespace ops \
  --set metrics.grafanaDashboard.enabled=true \
  --show-only templates/grafana-dashboard.yaml > "$work/dashboard.yaml"
/usr/bin/python3 - "$work/dashboard.yaml" "$work/dashboard-queries.yaml" <<'PY'
import json, sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
dash = json.loads(cm["data"]["dovecot-upgrade-operator.json"])
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the sidecar's label"
rules = []
for p in dash["panels"]:
    for t in p.get("targets", []):
        expr = (t["expr"].replace("$__rate_interval", "2m")
                .replace('"$namespace"', '".*"').replace('"$ring"', '".*"'))
        assert "$" not in expr, f"unknown variable in {t['expr']}"
        rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"monitoring: dashboard with {len(dash['panels'])} panels, {len(rules)} queries")
PY
promtool check rules "$work/dashboard-queries.yaml"
