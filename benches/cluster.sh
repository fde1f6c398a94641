#!/usr/bin/env bash
# Benchmark on the real control plane of tests/e2e (etcd + kube-apiserver + controller-manager +
# the local kubelet): the operator's memory at rest and while watching 1,000 backend pods in 10
# StatefulSets with 100 DBUs, its API requests per backend upgraded (from the API server's audit
# log, by the operator's ServiceAccount, split by verb and resource), and its requests at rest.
# Prints JSON lines; scripts/bench.sh tabulates them. Needs root (the kubelet's pods).
set -euo pipefail
here="$(cd "$(dirname "$0")/../tests/e2e" && pwd)"
cd "$here/../.."
eval "$(scripts/install-tools.sh 2>/dev/null)"
state="$(mktemp -d /tmp/dbu-bench-XXXXXX)"
NS=mail
export KUBECONFIG="$state/admin.kubeconfig"
source "$here/lib.sh"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$here/harness.sh" down "$state" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
log() { echo "bench-cluster: $*" >&2; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
# the largest RSS over $2 seconds
rss_max() { local m=0 v; for _ in $(seq "$(($2 * 4))"); do v="$(rss_kib "$1")"; ((v > m)) && m=$v; sleep 0.25; done; echo "$m"; }
audit_lines() { wc -l < "$state/logs/audit.log"; }
sa="system:serviceaccount:$NS:dbu"
# requests by the operator between two audit line numbers, as {"verb resource/subresource": n}
requests() {
  sed -n "$(($1 + 1)),$2p" "$state/logs/audit.log" | python3 -c '
import json, sys, collections
c = collections.Counter()
for line in sys.stdin:
    e = json.loads(line)
    if e.get("user", {}).get("username") != sys.argv[1] or e.get("stage") != "ResponseComplete":
        continue
    r = e.get("objectRef", {})
    res = r.get("resource", "") + ("/" + r["subresource"] if r.get("subresource") else "")
    c[e["verb"] + " " + res] += 1
print(json.dumps(dict(sorted(c.items()))))' "$sa"
}

cargo build --release --locked --quiet
"$here/harness.sh" up "$state" 2>/dev/null
helm install dbu charts/dovecot-upgrade-operator -n "$NS" --create-namespace --set 'probeSecrets={upgrade-probe}' >/dev/null
operator_kubeconfig
apply_local_examples >/dev/null
ready_pods >/dev/null
ring_synced
set_vhosts >/dev/null

PARTS="${CLUSTER_PARTS:-rollout scale}"
if [[ "$PARTS" == *rollout* ]]; then
# --- the operator (release build) on its ServiceAccount, as in the chart
POD_NAME=bench target/release/dovecot-upgrade-operator run --kubeconfig "$state/operator.kubeconfig" \
  --namespace "$NS" --log-format json --metrics-addr 127.0.0.1:23821 > "$state/logs/operator.log" 2>&1 &
OP=$!; PIDS+=("$OP")
for _ in $(seq 40); do curl -fsS http://127.0.0.1:23821/readyz >/dev/null 2>&1 && break; sleep 0.5; done
sleep 3
log "idle, no DBU: sampling RSS for 10 s"
rss_idle="$(rss_max "$OP" 10)"

# --- a rollout of the three backends; every request the operator makes is in the audit log
roll_config "bench revision 2" 2 >/dev/null
a0="$(audit_lines)"
t0="$(date +%s.%N)"
rollout_dbu >/dev/null
kubectl -n "$NS" wait --for=condition=Ready dbu/backend-rollout --timeout=600s >/dev/null
t1="$(date +%s.%N)"
sleep 2
a1="$(audit_lines)"
rollout="$(requests "$a0" "$a1")"
transitions="$(kubectl -n "$NS" get events.events.k8s.io --field-selector regarding.name=backend-rollout \
  -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' | grep -c -E '^(StepSucceeded|BackendStarted)$' || true)"
echo "{\"bench\": \"api_rollout\", \"backends\": 3, \"seconds\": $(python3 -c "print(round($t1 - $t0, 1))"), \"step_transitions\": $transitions, \"requests\": $rollout}"

# --- at rest: the rollout is complete; nothing to do for 60 s
sleep 5
a2="$(audit_lines)"
log "at rest: 60 s"
rss_rest="$(rss_max "$OP" 60)"
a3="$(audit_lines)"
echo "{\"bench\": \"api_rest\", \"seconds\": 60, \"requests\": $(requests "$a2" "$a3")}"
echo "{\"bench\": \"memory\", \"case\": \"idle, no DBU (5 pods in the namespace)\", \"rss_kib\": $rss_idle}"
echo "{\"bench\": \"memory\", \"case\": \"at rest after a rollout (1 DBU, 5 pods)\", \"rss_kib\": $rss_rest}"

kill "$OP"
fi
[[ "$PARTS" == *scale* ]] || exit 0

# --- scale: 10 StatefulSets x 100 pods (Pending: no scheduler) and 100 DBUs, watched cluster-wide
kubectl create namespace scale >/dev/null
for i in $(seq 0 9); do
  cat <<YAML
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: be-$i, namespace: scale}
spec:
  serviceName: be-$i
  replicas: 100
  podManagementPolicy: Parallel
  updateStrategy: {type: OnDelete}
  selector: {matchLabels: {app: be-$i}}
  template:
    metadata: {labels: {app: be-$i}, annotations: {note: "a backend pod of realistic size: one container, probes, mounts"}}
    spec:
      containers:
        - name: dovecot
          image: dovecot:2.3.19
          command: ["/bin/sh", "/etc/dovecot/supervisor.sh"]
          ports: [{containerPort: 143, name: imap}, {containerPort: 24, name: lmtp}]
          readinessProbe: {tcpSocket: {port: 143}, periodSeconds: 10}
          volumeMounts: [{name: config, mountPath: /etc/dovecot}, {name: vmail, mountPath: /var/dovecot/vmail}]
      volumes: [{name: config, configMap: {name: backend-config}}, {name: vmail, emptyDir: {}}]
---
YAML
done | kubectl apply -f - >/dev/null
for k in $(seq 0 99); do
  target="be-$k"; ((k >= 10)) && target="ghost-$k"
  cat <<YAML
apiVersion: mailops.io/v1alpha1
kind: DovecotBackendUpgrade
metadata: {name: dbu-$k, namespace: scale}
spec:
  backends: {statefulSet: $target}
  director: {selector: {matchLabels: {app: director}}}
  verify: {user: probe}
---
YAML
done | kubectl apply -f - >/dev/null
log "waiting for 1,000 pods"
for _ in $(seq 600); do
  [[ "$(kubectl get pods -n scale --no-headers 2>/dev/null | wc -l)" -ge 1000 ]] && break; sleep 1
done
POD_NAME=scale target/release/dovecot-upgrade-operator run --leader-elect=false --log-format json \
  --metrics-addr 127.0.0.1:23822 > "$state/logs/scale.log" 2>&1 &
SC=$!; PIDS+=("$SC")
log "waiting for the cluster-wide operator to reconcile 100 DBUs"
for _ in $(seq 300); do
  [[ "$(kubectl get dbu -n scale -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' | grep -c 1)" -ge 100 ]] && break
  sleep 1
done
seen="$(kubectl get dbu -n scale -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' | grep -c 1 || true)"
if ((seen < 100)); then
  kubectl get dbu -n scale -o jsonpath='{range .items[*]}{.metadata.name} {.status.observedGeneration} {.status.phase}{"\n"}{end}' | grep -v " 1 " >&2 || true
  grep -E '"level":"(WARN|ERROR)"' "$state/logs/scale.log" | tail -5 >&2 || true
fi
log "sampling RSS for 30 s"
rss_scale="$(rss_max "$SC" 30)"
pods="$(kubectl get pods -A --no-headers | wc -l)"
echo "{\"bench\": \"memory\", \"case\": \"watching $pods pods, 11 StatefulSets, 101 DBUs cluster-wide ($seen of 100 scale DBUs reconciled)\", \"rss_kib\": $rss_scale}"
