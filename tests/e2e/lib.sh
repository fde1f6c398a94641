# Shared by the suites node.sh runs (tests/e2e/e2e.sh, tests/e2e/real-node.sh, benches/cluster.sh):
# their TAP-style checks, the operator's pods and Lease, cgroup memory, and the steps that set up
# the example mail system. Sourced inside the node with $NS, $state and $here (tests/e2e) set.
node="$state/node"
export KUBECONFIG="$node/admin.kubeconfig" PKI="$node/pki" KUBECACHEDIR="$node/kube-cache"
# kubectl as the suites run it: thousands of short-lived Go processes (2,228 in a warm CI run,
# about 0.14 CPU-s each, more than the kubelets took), so without the garbage collector
# (GOGC=off; GOMEMLIMIT bounds the long ones, a drain or a wait) and on one P. Measured on 2 busy
# cores, `kubectl version --client` 20 times: 0.069 CPU-s a call, not 0.097. A function, so the
# servers a suite starts (the API server again, Flux, Argo CD) keep Go's defaults.
kubectl() { GOGC=off GOMEMLIMIT=256MiB GOMAXPROCS=1 command kubectl "$@"; }

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok $((pass + fail)) - $1"; }
not_ok() { fail=$((fail + 1)); echo "not ok $((pass + fail)) - $1"; }
check() { local name="$1"; shift; if "$@" > "$state/last.out" 2>&1; then ok "$name"; else not_ok "$name"; sed 's/^/#   /' "$state/last.out" | tail -15; snapshot "$((pass + fail))" "$name"; fi; }

# What explains a failed check, taken at that moment (node.sh keeps it outside the state folder,
# which goes): the DBUs' YAML, Events, pods, every container's log (also through the kubelet's
# own files, for when the API server is away), and the samples of the DBU's watch.
snapshot() { # number name
  local d="$state/evidence/check-$1" p
  mkdir -p "$d/logs"
  { echo "$2"; cat "$state/last.out"; } > "$d/check.txt"
  local kc=(kubectl --request-timeout=10s)
  "${kc[@]}" get dbu -A -o yaml > "$d/dbu.yaml" 2>&1 || true
  "${kc[@]}" get events.events.k8s.io -A -o custom-columns='TIME:.metadata.creationTimestamp,NS:.metadata.namespace,TYPE:.type,REASON:.reason,OBJECT:.regarding.name,RELATED:.related.name,NOTE:.note' \
    --sort-by=.metadata.creationTimestamp > "$d/events.txt" 2>&1 || true
  "${kc[@]}" get pods -A -o wide > "$d/pods.txt" 2>&1 || true
  "${kc[@]}" get sts -A -o wide > "$d/statefulsets.txt" 2>&1 || true
  for p in $("${kc[@]}" get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' 2>/dev/null); do
    "${kc[@]}" -n "${p%/*}" logs "${p#*/}" --all-containers --prefix --tail=3000 > "$d/logs/${p/\//_}.log" 2>&1 || true
  done
  [[ -d "$node/pod-logs" ]] && cp -r "$node/pod-logs" "$d/kubelet-pod-logs" 2>/dev/null || true
  [[ -f "$state/dbu-watch.jsonl" ]] && cp "$state/dbu-watch.jsonl" "$d/" || true
  return 0
}

# Every change of the DBU, from a watch, into $state/dbu-watch.jsonl; marks and judgements on it
watch_dbu() { /usr/bin/python3 "$here/dbu_watch.py" watch "$NS" "$1" "$state/dbu-watch.jsonl" 2>> "$state/logs/dbu-watch.log" & }
mark_dbu() { /usr/bin/python3 "$here/dbu_watch.py" mark "$state/dbu-watch.jsonl" "$1"; }
judge_dbu() { /usr/bin/python3 "$here/dbu_watch.py" judge "$state/dbu-watch.jsonl" "$@"; }

# the operator is the chart's Deployment: its Running pods, and who holds its Lease
OPSEL=app.kubernetes.io/name=dovecot-upgrade-operator
op_pods() { kubectl -n "$NS" get pods -l "$OPSEL" --field-selector status.phase=Running -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }
holder() { kubectl -n "$NS" get lease dovecot-upgrade-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }

# a pod's first container's memory cgroup (v1), and what it is charged: rss + mapped_file, KiB
pod_cgroup() { # namespace pod
  local uid cid
  uid="$(kubectl -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}')"
  cid="$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  find /sys/fs/cgroup/memory/ -type d -path "*pod$uid/${cid#containerd://}" | head -1
}
cgroup_kib() { awk '$1=="rss" || $1=="mapped_file" {n += $2} END {print int(n / 1024)}' "$1/memory.stat"; }

# the operator's kubeconfig, on a TokenRequest token of the chart's ServiceAccount
operator_kubeconfig() {
  local token server
  token="$(kubectl -n "$NS" create token dbu --duration=1h)"
  server="$(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
  cat > "$state/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "$server", certificate-authority: "${PKI:-$state/pki}/ca.crt"}
users:
  - name: operator
    user: {token: "$token"}
contexts:
  - name: e2e
    context: {cluster: e2e, user: operator, namespace: $NS}
current-context: e2e
KC
}

ready_pods() { # the StatefulSet controller creates backends one by one: wait for all five
  for _ in $(seq 240); do
    [[ "$(kubectl -n "$NS" get pods -l 'app in (dovecot-backend,dovecot-director)' \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" == 5 ]] && return 0
    sleep 0.5
  done
  kubectl -n "$NS" get pods
  return 1
}
ring_synced() {
  for _ in $(seq 60); do
    kubectl -n "$NS" exec director-0 -- doveadm director ring status 2>/dev/null | grep -q "ring synced" && return 0
    sleep 1
  done
  return 1
}
pod_ip() { kubectl -n "$NS" get pod "$1" -o jsonpath='{.status.podIP}'; }
declare -A VHOSTS=([backend-0]=100 [backend-1]=50 [backend-2]=20)   # by pod: a replaced pod has a new IP
set_vhosts() { for p in "${!VHOSTS[@]}"; do kubectl -n "$NS" exec director-0 -- doveadm director update "$(pod_ip "$p")" "${VHOSTS[$p]}" || return 1; done; }
# every backend pod in the ring, up, at the vhost count a human gave it (VHOSTS)
ring_back() {
  local status; status="$(kubectl -n "$NS" exec director-1 -- doveadm -f json director status)"
  for b in 0 1 2; do
    local ip; ip="$(pod_ip "backend-$b")"
    /usr/bin/python3 - "$status" "$ip" "${VHOSTS[backend-$b]}" <<'PY' || return 1
import json, sys
hosts = {h["mail server ip"]: h for h in json.loads(sys.argv[1])}
h = hosts.get(sys.argv[2])
assert h and h["state"] == "up" and h["vhosts"] == sys.argv[3], (sys.argv[2:], hosts)
PY
  done
}
ring_host() { # ip: "VHOSTS STATE" of that host in the ring (from director-1), nothing when absent
  local status; status="$(kubectl -n "$NS" exec director-1 -- doveadm -f json director status)" || return 1
  /usr/bin/python3 -c '
import json, sys
print(" ".join(next(((h["vhosts"], h["state"]) for h in json.load(sys.stdin) if h["mail server ip"] == sys.argv[1]), ())))' "$1" <<< "$status"
}
deliver_all() { local d; d="$(pod_ip director-0)"; for u in 1 2 3 4 5 6; do /usr/bin/python3 "$here/mail.py" deliver "$d" "user$u" 3 || return 1; done; }
roll_config() { # greeting revision [annotation]: a config change plus the template bump that makes a new revision
  local conf key="${3:-mailops.io/config-revision}"
  conf="$(kubectl -n "$NS" get cm backend-config -o jsonpath='{.data.dovecot\.conf}' | sed '/^login_greeting = /d' | sed "1i login_greeting = $1")"
  kubectl -n "$NS" create cm backend-config --from-literal=dovecot.conf="$conf" \
    --dry-run=client -o yaml | kubectl apply -f - &&
    kubectl -n "$NS" patch sts backend --type merge \
      -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"$key\":\"$2\"}}}}}"
}
target_rev() { kubectl -n "$NS" get sts backend -o jsonpath='{.status.updateRevision}'; }
rollout_dbu_yaml() { # the example DBU, with the e2e's verify user and a short drain
  sed -e 's/upgrade-probe@example.org/user1/' -e 's/timeout: 15m .*/timeout: 20s/' -e 's/pollInterval: 5s/pollInterval: 1s/' \
    deploy/examples/dbu.yaml
}
rollout_dbu() { rollout_dbu_yaml | kubectl apply -f -; }
