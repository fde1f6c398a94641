#!/usr/bin/env bash
# Benchmark on the real node of tests/e2e (node.sh: control plane, kubelet, containerd, CNI,
# kube-proxy, CoreDNS in a network namespace of their own), the operator as the chart's pod
# from its image: its memory (from its container's memory cgroup: rss + mapped_file, what VmRSS
# counts) at rest, during a rollout, and while watching 100, 1,000 and 5,000 backend pods in 100
# StatefulSets with 100 DBUs in 10 rings, its API
# requests per backend upgraded (from the API server's audit log, by the operator's
# ServiceAccount, split by verb and resource), and its requests at rest.
# Prints JSON lines; scripts/bench.sh tabulates them. Needs root (the node).
set -euo pipefail
here="$(cd "$(dirname "$0")/../tests/e2e" && pwd)"
cd "$here/../.."
NS=mail
if [[ "${1:-}" != inside ]]; then
  eval "$(scripts/install-tools.sh 2>/dev/null)"
  exec "$here/node.sh" suite "$0"
fi
state="$2"
source "$here/lib.sh"
log() { echo "bench-cluster: $*" >&2; }
# the largest over $3 seconds, as JSON: the process's VmRSS (what earlier figures measured: it
# counts the binary's pages too) and its cgroup's rss + mapped_file (the pages charged to the
# container: anonymous memory, and file pages it faulted in first)
rss_max() { # namespace pod seconds [stop-file: ends early once it exists]
  local m=0 c=0 v w cg pid
  cg="$(pod_cgroup "$1" "$2")"; pid="$(head -1 "$cg/cgroup.procs")"
  for _ in $(seq "$(($3 * 4))"); do
    [[ -n "${4:-}" && -e "${4:-}" ]] && break
    v="$(cgroup_kib "$cg")"
    w="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
    ((v > c)) && c=$v; ((w > m)) && m=$w; sleep 0.25
  done
  echo "\"rss_kib\": $m, \"cgroup_kib\": $c"
}
audit_lines() { wc -l < "$node/logs/audit.log"; }
sa="system:serviceaccount:$NS:dbu"
# requests by the operator between two audit line numbers, as {"verb resource/subresource": n}
# (by the ServiceAccount $3, default the first release's)
requests() {
  sed -n "$(($1 + 1)),$2p" "$node/logs/audit.log" | python3 -c '
import json, sys, collections
c = collections.Counter()
for line in sys.stdin:
    e = json.loads(line)
    if e.get("user", {}).get("username") != sys.argv[1] or e.get("stage") != "ResponseComplete":
        continue
    r = e.get("objectRef", {})
    res = r.get("resource", "") + ("/" + r["subresource"] if r.get("subresource") else "")
    c[e["verb"] + " " + res] += 1
print(json.dumps(dict(sorted(c.items()))))' "${3:-$sa}"
}

helm install dbu charts/dovecot-upgrade-operator -n "$NS" --create-namespace --set 'probeSecrets={upgrade-probe}' \
  --set replicaCount=1 >/dev/null
kubectl apply -k "$here/node/mail-e2e" >/dev/null
ready_pods >/dev/null
ring_synced
set_vhosts >/dev/null
# the ring the example DBU names
kubectl apply -f deploy/examples/ring.yaml >/dev/null

PARTS="${CLUSTER_PARTS:-rollout scale}"
if [[ "$PARTS" == *rollout* ]]; then
# --- the operator: the chart's pod (one replica), from its image
kubectl -n "$NS" rollout status deploy/dbu --timeout=120s >/dev/null
OP="$(op_pods | head -1)"
sleep 3
log "idle, no DBU: sampling the memory of $OP for 10 s"
rss_idle="$(rss_max "$NS" "$OP" 10)"

# --- a rollout of the three backends; every request the operator makes is in the audit log
roll_config "bench revision 2" 2 >/dev/null
a0="$(audit_lines)"
# every status write as the API server sent it to watchers (benches/status_writes.py sorts them)
# `command`: the binary itself in the background, so that $! is the watch (lib.sh makes kubectl a function)
command kubectl -n "$NS" get dbu -w -o json > "$node/rollout-watch.json" 2>/dev/null &
watcher=$!
t0="$(date +%s.%N)"
rollout_dbu >/dev/null
# its memory while it rolls: sampled until the DBU is Ready
rss_max "$NS" "$OP" 600 "$node/rollout-done" > "$node/rss-rollout" &
sampler=$!
kubectl -n "$NS" wait --for=condition=Ready dbu/backend-rollout --timeout=600s >/dev/null
touch "$node/rollout-done"; wait "$sampler"
rss_roll="$(cat "$node/rss-rollout")"
t1="$(date +%s.%N)"
sleep 2
a1="$(audit_lines)"
rollout="$(requests "$a0" "$a1")"
# the same requests by the step they served
sed -n "$((a0 + 1)),${a1}p" "$node/logs/audit.log" > "$node/rollout-audit.log"
kubectl -n "$NS" get events.events.k8s.io --field-selector regarding.name=backend-rollout -o json > "$node/rollout-events.json"
python3 benches/exec_steps.py "$node/rollout-audit.log" "$node/rollout-events.json" "$sa" 3
kill "$watcher" 2>/dev/null || true; wait "$watcher" 2>/dev/null || true
python3 benches/status_writes.py "$node/rollout-watch.json"
transitions="$(kubectl -n "$NS" get events.events.k8s.io --field-selector regarding.name=backend-rollout \
  -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' | grep -c -E '^(StepSucceeded|BackendStarted)$' || true)"
echo "{\"bench\": \"api_rollout\", \"backends\": 3, \"seconds\": $(python3 -c "print(round($t1 - $t0, 1))"), \"step_transitions\": $transitions, \"requests\": $rollout}"

# --- at rest: the rollout is complete; nothing to do for 60 s
sleep 5
a2="$(audit_lines)"
log "at rest: 60 s"
rss_rest="$(rss_max "$NS" "$OP" 60)"
a3="$(audit_lines)"
echo "{\"bench\": \"api_rest\", \"seconds\": 60, \"requests\": $(requests "$a2" "$a3")}"
echo "{\"bench\": \"memory\", \"case\": \"idle, no DBU (5 pods in the namespace)\", $rss_idle}"
echo "{\"bench\": \"memory\", \"case\": \"during a rollout of 3 backends (1 DBU, 5 pods)\", $rss_roll}"
echo "{\"bench\": \"memory\", \"case\": \"at rest after a rollout (1 DBU, 5 pods)\", $rss_rest}"

kubectl -n "$NS" scale deploy/dbu --replicas 0 >/dev/null
fi
[[ "$PARTS" == *scale* ]] || exit 0

# --- scale: 100 StatefulSets in 10 DovecotRings (10 each) and 100 DBUs (one per StatefulSet),
# watched by a second release of the chart, cluster-wide; the StatefulSets grow from 1 to 10 to 50
# pods each (Pending: a node selector no node has, which changes nothing for the operator's
# caches). At each size the operator starts afresh (its first LIST is of them all), settles, and
# its memory is sampled at rest.
kubectl create namespace scale >/dev/null
statefulsets() { # replicas per StatefulSet
  for i in $(seq 0 99); do
    cat <<YAML
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: be-$i, namespace: scale}
spec:
  serviceName: be-$i
  replicas: $1
  podManagementPolicy: Parallel
  updateStrategy: {type: OnDelete}
  selector: {matchLabels: {app: be-$i}}
  template:
    metadata: {labels: {app: be-$i}, annotations: {note: "a backend pod of realistic size: one container, probes, mounts", mailops.io/revision: "1"}}
    spec:
      nodeSelector: {dbu-bench: pending}
      containers:
        - name: dovecot
          image: dbu-dovecot:2.3.19
          ports: [{containerPort: 143, name: imap}, {containerPort: 24, name: lmtp}]
          readinessProbe: {tcpSocket: {port: 143}, periodSeconds: 10}
          volumeMounts: [{name: config, mountPath: /etc/dovecot}, {name: vmail, mountPath: /var/dovecot/vmail}]
      volumes: [{name: config, configMap: {name: backend-config}}, {name: vmail, emptyDir: {}}]
---
YAML
  done
}
statefulsets 1 | kubectl apply -f - >/dev/null
for r in $(seq 0 9); do
  printf 'apiVersion: mailops.io/v1alpha1\nkind: DovecotRing\nmetadata: {name: ring-%s, namespace: scale}\n' "$r"
  printf 'spec:\n  directors: {selector: {matchLabels: {app: director-%s}}}\n  maxUnavailable: 1\n  backends:\n' "$r"
  for k in $(seq 0 9); do echo "    - statefulSet: be-$((r * 10 + k))"; done
  echo "---"
done | kubectl apply -f - >/dev/null
for k in $(seq 0 99); do
  cat <<YAML
apiVersion: mailops.io/v1alpha1
kind: DovecotBackendUpgrade
metadata: {name: dbu-$k, namespace: scale}
spec:
  backends: {statefulSet: be-$k}
  ring: ring-$((k / 10))
  verify: {user: probe}
---
YAML
done | kubectl apply -f - >/dev/null
helm install scale charts/dovecot-upgrade-operator -n scale-op --create-namespace --set clusterWide=true \
  --set replicaCount=1 --wait --timeout 3m >/dev/null
reconciled() { kubectl get dbu -n scale -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' | grep -c 1 || true; }
for per in 1 10 50; do
  want=$((per * 100))
  statefulsets "$per" | kubectl apply -f - >/dev/null
  log "waiting for $want pods"
  for _ in $(seq 900); do
    [[ "$(kubectl get pods -n scale --no-headers 2>/dev/null | wc -l)" -ge "$want" ]] && break; sleep 1
  done
  # a fresh operator: its first LIST is of every pod at this size
  kubectl -n scale-op rollout restart deploy/scale >/dev/null
  kubectl -n scale-op rollout status deploy/scale --timeout=180s >/dev/null
  # the new pod alone (the old one is Running until it has stopped)
  for _ in $(seq 120); do
    [[ "$(kubectl -n scale-op get pods -l "$OPSEL" --no-headers 2>/dev/null | wc -l)" -eq 1 ]] && break; sleep 1
  done
  SC="$(NS=scale-op op_pods | head -1)"
  a4="$(audit_lines)"
  for _ in $(seq 300); do (( $(reconciled) >= 100 )) && break; sleep 1; done
  seen="$(reconciled)"
  if ((seen < 100)); then
    kubectl -n scale-op logs "$SC" | grep -E '"level":"(WARN|ERROR)"' | tail -5 >&2 || true
  fi
  sleep 15
  log "$want pods: sampling the memory of $SC for 30 s"
  rss_scale="$(rss_max scale-op "$SC" 30)"
  hwm="$(awk '/^VmHWM/ {print $2}' "/proc/$(head -1 "$(pod_cgroup scale-op "$SC")/cgroup.procs")/status")"
  pods="$(kubectl get pods -A --no-headers | wc -l)"
  n_sts="$(kubectl get sts -A --no-headers | wc -l)" n_dbu="$(kubectl get dbu -A --no-headers | wc -l)"
  n_ring="$(kubectl get dring -A --no-headers | wc -l)"
  echo "{\"bench\": \"memory\", \"case\": \"at rest watching $pods pods, $n_sts StatefulSets, $n_dbu DBUs, $n_ring rings cluster-wide ($seen of 100 scale DBUs reconciled)\", \"pods\": $pods, \"hwm_kib\": $hwm, $rss_scale}"
  echo "{\"bench\": \"api_scale\", \"pods\": $pods, \"requests\": $(requests "$a4" "$(audit_lines)" system:serviceaccount:scale-op:scale)}"
done
