#!/usr/bin/env bash
# End-to-end on a real control plane (etcd + kube-apiserver + kube-controller-manager, built from
# source): helm install, the operator as a host process on its ServiceAccount's token, admission of
# bad DBUs, operator-side stalls, restart, and delete. No kubelet yet: pods stay Pending, so no
# director is Ready and the operator must never exec (checked in the apiserver's audit log).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
eval "$(scripts/install-tools.sh)"
state="$(mktemp -d /tmp/dbu-e2e-XXXXXX)"
NS=mail
OP_PID=""
export KUBECONFIG="$state/admin.kubeconfig"

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok $((pass + fail)) - $1"; }
not_ok() { fail=$((fail + 1)); echo "not ok $((pass + fail)) - $1"; }
check() { local name="$1"; shift; if "$@" > "$state/last.out" 2>&1; then ok "$name"; else not_ok "$name"; sed 's/^/#   /' "$state/last.out" | tail -15; fi; }

stop_operator() {
  if [[ -n "$OP_PID" ]] && [[ -d "/proc/$OP_PID" ]]; then
    kill "$OP_PID" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d "/proc/$OP_PID" ]] || break; sleep 0.1; done
    kill -9 "$OP_PID" 2>/dev/null || true
  fi
  OP_PID=""
}
cleanup() {
  stop_operator
  "$here/harness.sh" down "$state" || true
  if ((fail > 0)); then
    for f in "$state"/logs/operator.log "$state"/logs/kube-apiserver.log; do
      echo "# --- tail of $f"; tail -20 "$f" 2>/dev/null | sed 's/^/#   /'
    done
  fi
  rm -rf "$state"
}
trap cleanup EXIT

cargo build --locked --quiet
"$here/harness.sh" up "$state"

# --- install
check "helm install the chart (kubeVersion constraint met by the stamped apiserver)" \
  helm install dbu charts/dovecot-upgrade-operator -n "$NS" --create-namespace
check "the CRD is established" \
  kubectl wait --for=condition=Established crd/dovecotbackendupgrades.mailops.io --timeout=60s

sa="system:serviceaccount:$NS:dbu"
rbac() {
  for v in "list dovecotbackendupgrades.mailops.io" "patch dovecotbackendupgrades.mailops.io" \
           "patch dovecotbackendupgrades.mailops.io --subresource=status" "watch statefulsets.apps" \
           "delete pods" "create pods --subresource=exec" "create events.events.k8s.io"; do
    [[ "$(kubectl auth can-i $v -n "$NS" --as="$sa")" == yes ]] || { echo "missing: $v"; return 1; }
  done
  for v in "get secrets" "update statefulsets.apps" "create pods"; do
    [[ "$(kubectl auth can-i $v -n "$NS" --as="$sa" 2>/dev/null || true)" == no ]] || { echo "too much: $v"; return 1; }
  done
  [[ "$(kubectl auth can-i list pods -n default --as="$sa" 2>/dev/null || true)" == no ]] || { echo "too much: pods in default"; return 1; }
}
check "RBAC: what the operator needs, in its namespace only, no secrets" rbac

# --- the operator, as a host process with a TokenRequest token of the chart's ServiceAccount
token="$(kubectl -n "$NS" create token dbu --duration=1h)"
cat > "$state/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "$(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')", certificate-authority: "$state/pki/ca.crt"}
users:
  - name: operator
    user: {token: "$token"}
contexts:
  - name: e2e
    context: {cluster: e2e, user: operator, namespace: $NS}
current-context: e2e
KC
start_operator() {
  target/debug/dovecot-upgrade-operator run --kubeconfig "$state/operator.kubeconfig" \
    --namespace "$NS" --log-format json >> "$state/logs/operator.log" 2>&1 &
  OP_PID=$!
}
start_operator

sts() { # strategy
  cat <<YAML
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: backend, namespace: $NS}
spec:
  serviceName: backend
  replicas: 2
  updateStrategy: {type: $1}
  selector: {matchLabels: {app: dovecot-backend}}
  template:
    metadata: {labels: {app: dovecot-backend}}
    spec:
      containers: [{name: dovecot, image: dovecot/dovecot:2.3.21}]
YAML
}
dbu() { # name statefulSet
  cat <<YAML
apiVersion: mailops.io/v1alpha1
kind: DovecotBackendUpgrade
metadata: {name: $1, namespace: $NS}
spec:
  backends: {statefulSet: $2, container: dovecot}
  director: {selector: {matchLabels: {app: dovecot-director}}, container: dovecot}
  verify: {user: upgrade-probe}
YAML
}
cond() { kubectl -n "$NS" get dbu "$1" -o jsonpath="{.status.conditions[?(@.type==\"$2\")].$3}"; }
stalled_with() { # name reason
  kubectl -n "$NS" wait --for=condition=Stalled "dbu/$1" --timeout=30s && [[ "$(cond "$1" Stalled reason)" == "$2" ]]
}

# --- operator-side stalls
apply_sts() { sts "$1" | kubectl apply -f -; }
apply_dbu() { dbu "$1" "$2" | kubectl apply -f -; }
reason_is() { [[ "$(cond "$1" "$2" reason)" == "$3" ]]; }
status_is() { [[ "$(cond "$1" "$2" status)" == "$3" ]]; }
shows() { kubectl -n "$NS" "$@" > "$state/shown"; grep -q -- "${SHOW:?}" "$state/shown"; }
check "apply a backend StatefulSet with RollingUpdate" apply_sts RollingUpdate
check "apply a DBU for it" apply_dbu rollout backend
check "RollingUpdate: Stalled=True UpdateStrategyNotOnDelete" stalled_with rollout UpdateStrategyNotOnDelete
SHOW=Failed check "kubectl get dbu shows the phase" shows get dbu rollout
SHOW="Set it to OnDelete\|set it to OnDelete" check "kubectl describe dbu shows the Stalled warning event" shows describe dbu rollout
check "switch the StatefulSet to OnDelete" \
  kubectl -n "$NS" patch sts backend --type merge -p '{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}'
check "the StatefulSet watch wakes the DBU: Stalled=False" \
  kubectl -n "$NS" wait --for=condition=Stalled=false dbu/rollout --timeout=30s
check "... Reconciling=True, waiting for a Ready director, and says so" reason_is rollout Reconciling NoReadyDirector
check "a second DBU for the same StatefulSet" apply_dbu second backend
check "... is refused: Stalled=True StatefulSetClaimed" stalled_with second StatefulSetClaimed
check "... and the first carries on" status_is rollout Stalled False
check "a DBU for a StatefulSet that does not exist" apply_dbu ghost nosuch
check "... Stalled=True StatefulSetNotFound" stalled_with ghost StatefulSetNotFound

# --- admission: the API server rejects what the schema can
reject() { # expected-message yaml (a whole DBU)
  local out
  if out="$(kubectl apply -f - <<< "$2" 2>&1)"; then
    echo "accepted: $out"; kubectl -n "$NS" delete dbu bad --wait=false >/dev/null 2>&1; return 1
  fi
  grep -q -- "$1" <<< "$out" || { echo "$out"; return 1; }
}
bad() { dbu bad backend; printf '%s\n' "$@"; }
check "rejected at admission: a verify user with a space (pattern)" \
  reject spec.verify.user "$(dbu bad backend | sed 's/upgrade-probe/"a b"/')"
check "rejected at admission: a verify user with a wildcard (pattern)" \
  reject spec.verify.user "$(dbu bad backend | sed 's/upgrade-probe/"user*"/')"
check "rejected at admission: an empty StatefulSet name (minLength)" \
  reject spec.backends.statefulSet "$(dbu bad '""')"
check "rejected at admission: maxUnavailable 0 (minimum)" reject spec.maxUnavailable "$(bad '  maxUnavailable: 0')"
check "rejected at admission: a negative duration (pattern)" reject spec.drain.timeout "$(bad '  drain: {timeout: -5m}')"
check "rejected at admission: a reset command as a shell string (CEL)" \
  reject "argv lists run without a shell" "$(bad '  reset: {commands: [["rm -rf /var/dovecot/vmail/*"]]}')"
check "rejected at admission: a reset command wrapped in sh -c (CEL)" \
  reject "argv lists run without a shell" "$(bad '  reset: {commands: [["sh", "-c", "rm -rf /x"]]}')"
check "rejected at admission: reset commands as a plain string (type)" \
  reject "must be of type array" "$(bad '  reset: {commands: "rm -rf /x"}')"
check "rejected at admission: an empty director selector (CEL)" \
  reject "must select something" "$(dbu bad backend | sed 's/selector: {matchLabels: {app: dovecot-director}}/selector: {}/')"
nothing_stored() { ! kubectl -n "$NS" get dbu bad >/dev/null 2>&1; }
check "nothing invalid was stored" nothing_stored

# --- restart: the status is the only memory
gen_before="$(kubectl -n "$NS" get dbu rollout -o jsonpath='{.metadata.generation}')"
stop_operator
check "spec change while the operator is down" kubectl -n "$NS" patch dbu rollout --type merge -p '{"spec":{"drain":{"pollInterval":"7s"}}}'
start_operator
observed() { for _ in $(seq 60); do [[ "$(kubectl -n "$NS" get dbu rollout -o jsonpath='{.status.observedGeneration}')" == "$((gen_before + 1))" ]] && return 0; sleep 0.5; done; return 1; }
check "after a restart the new generation is observed" observed
SHOW="PHASE *PROGRESS *CURRENT *STEP *AGE" check "kubectl get dbu prints the columns" shows get dbu rollout

# --- delete: the finalizer runs and lets go
delete_both() {
  kubectl -n "$NS" delete dbu ghost second --wait=false &&
    kubectl -n "$NS" wait --for=delete dbu/ghost dbu/second --timeout=30s
}
check "deleting a DBU runs the finalizer and removes it" delete_both

# --- no exec happened: nothing was Ready to exec into (the audit log sees every pods/exec)
check "the audit log shows status patches by the operator's ServiceAccount" \
  grep -q "\"user\":{\"username\":\"$sa\".*\"subresource\":\"status\"" "$state/logs/audit.log"
no_exec() { ! grep -q '"subresource":"exec"' "$state/logs/audit.log"; }
check "the audit log shows no pods/exec at all" no_exec

echo "e2e: $pass passed, $fail failed"
((fail == 0))
