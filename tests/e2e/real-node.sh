#!/usr/bin/env bash
# End-to-end on a real node (node.sh: kubelet, containerd, runc, CNI, kube-proxy, CoreDNS in a
# network namespace of its own), as a user runs it: `helm install` of the chart as shipped (its
# default image, imported from an OCI archive), `kubectl apply -k` of the examples (ring named by
# DNS), and a genuine version upgrade, Dovecot 2.3.19 to 2.3.21 with a config change in the same
# revision, under live IMAP and LMTP traffic, with the operator's pods killed mid-rollout and the
# operator itself upgraded mid-rollout: from the chart of an earlier commit (build-images.sh's
# $PREVIOUS, an older CRD) to this one, CRD first by server-side apply, as the README says.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
NS=mail

if [[ "${1:-}" != inside ]]; then
  eval "$(scripts/install-tools.sh)"
  # two nodes: node-2 stays cordoned (nothing runs there) until the drain at the end
  NODES=2 exec "$here/node.sh" suite "$0"
fi

state="$2"
source "$here/lib.sh"
k() { kubectl -n "$NS" "$@"; }

# --- the network: nothing leads off the machine
no_outside() {
  ! ip route | grep -q default || { echo "a default route"; return 1; }
  ! timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.1/80' 2>/dev/null || { echo "reached 192.0.2.1"; return 1; }
}
check "the node's namespace has no route off the machine" no_outside
bridge_mac() { ip -br link show cni0 | awk '{print $3}'; }
bridge_at_start="$(bridge_mac)"

# --- the operator of an earlier release, as `helm install` ships it
PREVIOUS="${PREVIOUS:-$(grep -v '^#' "$here/previous-release")}"
mkdir -p "$state/previous"
git archive "$PREVIOUS" charts/dovecot-upgrade-operator | tar -x -C "$state/previous"
prev_chart="$state/previous/charts/dovecot-upgrade-operator"
app_version() { awk -F'"' '/^appVersion:/ {print $2}' "$1/Chart.yaml"; }
check "helm install the chart of ${PREVIOUS:0:7} unchanged (its default image, imported from an OCI archive)" \
  helm install dbu "$prev_chart" -n "$NS" --create-namespace --wait --timeout 3m
running_image() { # the Deployment's pods, all Running the image of that chart's appVersion
  for _ in $(seq 120); do
    [[ "$(op_pods | wc -l)" == 2 && "$(k get pods -l app.kubernetes.io/name=dovecot-upgrade-operator -o name | wc -l)" == 2 ]] &&
      [[ "$(k get pods -l app.kubernetes.io/name=dovecot-upgrade-operator -o jsonpath='{range .items[*]}{.status.containerStatuses[0].image}{"\n"}{end}' | sort -u)" == "docker.io/library/dovecot-upgrade-operator:$1" ]] && return 0
    sleep 1
  done
  k get pods -o wide; return 1
}
check "two operator pods run the image docker.io/library/dovecot-upgrade-operator:$(app_version "$prev_chart")" running_image "$(app_version "$prev_chart")"
# the Lease's holder while it is a Running operator pod (not one just deleted)
leader() { local h; h="$(holder)"; [[ -n "$h" ]] && op_pods | grep -qx "$h" && echo "$h"; return 0; }
has_leader() { for _ in $(seq 60); do [[ -n "$(leader)" ]] && return 0; sleep 1; done; return 1; }
check "one of them holds the Lease" has_leader

# --- the examples, as shipped but for images and volumes
check "kubectl apply -k the examples (ring named by DNS, static volumes)" kubectl apply -k "$here/node/mail"
check "five Dovecot pods Running and Ready on the real node" ready_pods
dns() {
  for p in backend-0 backend-1 backend-2 director-0 director-1; do
    local svc=backend; [[ $p == director-* ]] && svc=director
    [[ "$(k exec director-0 -- getent hosts "$p.$svc.$NS.svc.cluster.local" | awk '{print $1}')" == "$(pod_ip "$p")" ]] || { echo "$p"; return 1; }
  done
}
check "the ring's names resolve to the pods' IPs through CoreDNS" dns
check "the director ring is synced" ring_synced
pod_outside() { ! k exec director-0 -- timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.1/80' 2>/dev/null; }
check "a pod cannot reach an outside address" pod_outside
check "give the backends different vhost counts" set_vhosts
d0="$(pod_ip director-0)" d1="$(pod_ip director-1)"
deliver_both() { for u in 1 2 3 4 5 6; do /usr/bin/python3 "$here/mail.py" deliver "$d0" "user$u" 2 && /usr/bin/python3 "$here/mail.py" deliver "$d1" "user$u" 1 || return 1; done; }
check "deliver mail through both directors (LMTP)" deliver_both
flag_all() { for u in 2 3 4 5 6; do /usr/bin/python3 "$here/mail.py" flag "$d0" "user$u" e2e-pass || return 1; done; }
check "flag a message of each user (\\Flagged and a keyword)" flag_all
for u in 2 3 4 5 6; do /usr/bin/python3 "$here/mail.py" state "$d0" "user$u" e2e-pass > "$state/before-user$u.json"; done
versions() { for p in backend-0 backend-1 backend-2; do k exec "$p" -- dovecot --version | awk -v p="$p" '{print p, $1}'; done; }
check "the backends run Dovecot 2.3.19" bash -c "$(declare -f versions k); NS=$NS; versions | awk '\$2 !~ /^2\\.3\\.19/ {exit 1}'"
# each backend's "UID IP NODE" before it is replaced, into PREFIX-<pod>
keep_old() { for p in backend-0 backend-1 backend-2; do k get pod "$p" -o jsonpath='{.metadata.uid} {.status.podIP} {.spec.nodeName}{"\n"}' > "$1-$p"; done; }
keep_old "$state/old"

# --- the version upgrade: image and config in one revision
# `command`: the binary in the background, so that $! is the watch that is killed below (k and
# kubectl are functions)
command kubectl -n "$NS" get pods -w -o json > "$state/pods.watch" 2>/dev/null &
watch_pid=$!
upgrade() {
  local conf
  conf="$(k get cm backend-config -o jsonpath='{.data.dovecot\.conf}' | sed '/^login_greeting = /d' | sed '1i login_greeting = e2e 2.3.21')"
  k create cm backend-config --from-literal=dovecot.conf="$conf" --dry-run=client -o yaml | kubectl apply -f - &&
    k patch sts backend --type strategic -p '{"spec":{"template":{"metadata":{"annotations":{"mailops.io/config-revision":"2"}},"spec":{"containers":[{"name":"dovecot","image":"dbu-dovecot:2.3.21"}]}}}}'
}
check "a new revision: image dbu-dovecot:2.3.21 and a login_greeting change" upgrade
rm -f "$state/stop-traffic"
/usr/bin/python3 "$here/mail.py" traffic "$state/traffic.json" "$state/stop-traffic" e2e-pass "$d0" "$d1" user7 user8 user9 user10 user11 user12 &
traffic_pid=$!
old_dbu() { # the example DBU as the earlier CRD takes it (strict validation would refuse new fields): no
  # verify.imapProbe, verify.soak, drain.strategy; the ring's directors in spec.director, no spec.ring
  rollout_dbu_yaml | /usr/bin/python3 -c 'import sys, yaml
d = yaml.safe_load(sys.stdin)
[d["spec"]["verify"].pop(f, None) for f in ("imapProbe", "soak")]
d["spec"]["drain"].pop("strategy", None)
d["spec"].pop("ring")
d["spec"]["director"] = yaml.safe_load(open("deploy/examples/ring.yaml"))["spec"]["directors"]
print(yaml.safe_dump(d))' |
    kubectl apply -f -
}
check "apply the example DBU as the earlier CRD takes it (spec.director, no ring, verify.imapProbe, verify.soak or drain.strategy)" old_dbu

# --- kill the operator mid-rollout, twice: a forced pod delete, then a container kill
at_backend() { # wait until the rollout works on its Nth backend
  for _ in $(seq 600); do
    local st; st="$(k get dbu backend-rollout -o jsonpath='{.status.progress} {.status.current} {.status.step}' 2>/dev/null)"
    # progress N/M: N done; the current backend past Drain (its step has acted on the ring)
    [[ "${st%%/*}" =~ ^[0-9]+$ ]] && ((${st%%/*} >= $1)) && [[ "$st" == *" backend-"* && "$st" != *Drain ]] && { echo "$st"; return 0; }
    sleep 0.5
  done
  return 1
}
kill_leader_pod() { # a read of the Lease can fail while the API server is busy: look again
  local l
  for _ in $(seq 60); do l="$(leader)"; [[ -n "$l" ]] && break; sleep 1; done
  [[ -n "$l" ]] || { echo "no operator pod holds the Lease: holder $(holder), pods $(op_pods | tr '\n' ' ')"; return 1; }
  k delete pod "$l" --grace-period=0 --force
}
check "the rollout works on its first backend" at_backend 0
check "kubectl delete pod --grace-period=0 --force the leading operator pod" kill_leader_pod
check "the rollout reaches its second backend" at_backend 1

# --- upgrade the operator mid-rollout: the CRD first (Helm never upgrades crds/), then the chart
no_field() { ! kubectl explain dbu.spec.verify.imapProbe >/dev/null 2>&1; }
check "the earlier CRD has no verify.imapProbe" no_field
check "kubectl apply --server-side the chart's CRD" \
  kubectl apply --server-side --force-conflicts --field-manager helm-crds -f charts/dovecot-upgrade-operator/crds/
served() { for _ in $(seq 30); do kubectl explain dbu.spec.verify.imapProbe.tls >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }
check "... the new fields are served" served
check "helm upgrade to this chart mid-rollout" \
  helm upgrade dbu charts/dovecot-upgrade-operator -n "$NS" --set 'probeSecrets={upgrade-probe}' --wait --timeout 3m
check "two operator pods run the image docker.io/library/dovecot-upgrade-operator:$(app_version charts/dovecot-upgrade-operator)" \
  running_image "$(app_version charts/dovecot-upgrade-operator)"
use_new_fields() {
  k patch dbu backend-rollout --type merge -p '{"spec":{"verify":{"imapProbe":{"credentialsSecret":{"name":"upgrade-probe"},"tls":{"mode":"None"}},"soak":{"timeout":"1m"}}}}' &&
    [[ "$(k get dbu backend-rollout -o jsonpath='{.spec.verify.imapProbe.credentialsSecret.name} {.spec.verify.soak.timeout}')" == "upgrade-probe 1m" ]]
}
check "the DBU takes verify.imapProbe and verify.soak mid-rollout (kept, not pruned)" use_new_fields
kill_leader_container() {
  local l cid
  for _ in $(seq 60); do l="$(leader)"; [[ -n "$l" ]] && break; sleep 1; done
  [[ -n "$l" ]] || { echo "no operator pod holds the Lease"; return 1; }
  cid="$(k get pod "$l" -o jsonpath='{.status.containerStatuses[0].containerID}')"; cid="${cid#containerd://}"
  ctr --address "$node/containerd/containerd.sock" -n k8s.io tasks kill -s KILL "$cid"
}
check "kill the leading operator's container (SIGKILL through containerd)" kill_leader_container
done_() { k wait --for=condition=Ready dbu/backend-rollout --timeout=600s; }
check "the rollout completes (Ready=True)" done_
lease_taken_in() { # the earlier release kept the ring's lock in a Lease: its holders moved into a DovecotRing
  local ring lease
  for _ in $(seq 60); do
    ring="$(k get dring -l app.kubernetes.io/managed-by=dovecot-upgrade-operator -o jsonpath='{.items[0].metadata.name} {.items[0].status.importedFrom[0]}' 2>/dev/null)"
    [[ "$ring" == dbu-ring-*" "dbu-ring-* ]] && break
    sleep 1
  done
  echo "ring and what it took in: $ring"
  lease="$(k get lease "${ring##* }" -o jsonpath='{.metadata.annotations.mailops\.io/ring-holders} {.metadata.annotations.mailops\.io/moved-to}')"
  echo "the Lease now: $lease"
  [[ "$ring" == dbu-ring-*" "dbu-ring-* && "$lease" == "[] DovecotRing $NS/${ring%% *}" ]]
}
check "the DBU from before rings got a DovecotRing that took in the earlier release's Lease (emptied, pointing to it)" lease_taken_in
touch "$state/stop-traffic"; wait "$traffic_pid" || true
kill "$watch_pid" 2>/dev/null || true

# --- what the users and the ring see now
check "every backend runs Dovecot 2.3.21 (dovecot --version by exec through the kubelet)" \
  bash -c "$(declare -f versions k); NS=$NS; versions | tee /dev/stderr | awk '\$2 !~ /^2\\.3\\.21/ {bad=1} END {exit bad}'"
greeting() { for p in backend-0 backend-1 backend-2; do k exec "$p" -- doveconf -h login_greeting | grep -qx 'e2e 2.3.21' || return 1; done; }
check "every backend has the new config" greeting
replaced() {
  for p in backend-0 backend-1 backend-2; do
    read -r uid _ < "$state/old-$p"
    [[ "$(k get pod "$p" -o jsonpath='{.metadata.uid}')" != "$uid" ]] || { echo "$p not replaced"; return 1; }
  done
}
check "each backend pod was replaced by the StatefulSet controller" replaced
ring_after() { # the files that hold each backend's old "UID IP", by prefix
  local status; status="$(k exec director-1 -- doveadm -f json director status)"
  /usr/bin/python3 - "$status" "$(for p in backend-0 backend-1 backend-2; do echo "$(pod_ip "$p") ${VHOSTS[$p]}"; done)" "$(cat "$1"-backend-* | awk '{print $2}')" <<'PY'
import json, sys
rows = {r["mail server ip"]: r for r in json.loads(sys.argv[1])}
want = dict(l.split() for l in sys.argv[2].splitlines())
old = set(sys.argv[3].split())
bad = [f"{ip}: {rows.get(ip)}" for ip, v in want.items() if ip not in rows or rows[ip]["vhosts"] != v or rows[ip]["state"] != "up"]
bad += [f"old {ip} still in the ring" for ip in old - set(want) if ip in rows]
bad += [f"unknown {ip}" for ip in set(rows) - set(want)]
print(json.dumps(rows, indent=1)); sys.exit(1 if bad else print("\n".join(bad)) or 0)
PY
}
check "the ring holds the new pod IPs, up, at their original vhost counts; the old IPs are gone" ring_after "$state/old"
intact() {
  for d in "$d0" "$d1"; do
    for u in 2 3 4 5 6; do
      /usr/bin/python3 "$here/mail.py" state "$d" "user$u" e2e-pass > "$state/after.json"
      diff "$state/before-user$u.json" "$state/after.json" || { echo "user$u via $d"; return 1; }
    done
  done
}
check "mail, UIDs, UIDVALIDITY, flags and keywords are intact through both directors" intact
live() { # traffic.json director...: every accepted delivery of that traffic is in its user's mailbox
  /usr/bin/python3 - "$@" <<'PY'
import json, subprocess, sys
t = json.load(open(sys.argv[1]))
print(f"rounds {t['rounds']}, logins {t['logins']}, failed logins {len(t['login_failures'])}, "
      f"deliveries accepted {sum(t['accepted'].values())}, deferred {t['deferred']}, rejected {t['rejected']}")
bad = []
for u, n in t["accepted"].items():
    for d in sys.argv[2:]:
        got = int(subprocess.run([sys.executable, "tests/e2e/mail.py", "count", d, u, "e2e-pass"], capture_output=True, text=True, check=True).stdout)
        maybe = t.get("uncertain", {}).get(u, 0)
        # every accepted message, plus at most the deferrals after DATA that still landed
        if not n <= got <= n + maybe:
            bad.append(f"{u} via {d}: {got} messages, {n} accepted, {maybe} uncertain")
if t["rejected"]:
    bad.append(f"{t['rejected']} deliveries rejected (not deferred)")
print("\n".join(bad[:10] + t["errors"][:5] + t["login_failures"][:5]))
open(sys.argv[1] + ".summary", "w").write(f"{t['rounds']} rounds, {t['logins']} logins, {len(t['login_failures'])} failed, "
                                          f"{sum(t['accepted'].values())} deliveries accepted, {t['deferred']} deferred\n")
sys.exit(1 if bad or t["rounds"] < 5 else 0)
PY
}
# Users still mapped to a backend when its drain times out (onTimeout: Proceed) are kicked
# between StopDovecot and `director flush`, the runbook's order: a few logins fail and LMTP is
# deferred (4xx: the MTA retries); a deferral after DATA may have landed (a duplicate on retry,
# never a loss). Counted and printed, not hidden; issue 29's move before the stop removes them.
check "live traffic during the rollout: every accepted delivery is there, none rejected" live "$state/traffic.json" "$d0" "$d1"
echo "# live traffic: $(cat "$state/traffic.json.summary" 2>/dev/null)"
once() { # one BackendStarted per backend, and one pod delete per backend by the operator
  local n
  for p in backend-0 backend-1 backend-2; do
    n="$(k get events --field-selector reason=BackendStarted -o json | /usr/bin/python3 -c "import json,sys; print(sum(e.get('count') or 1 for e in json.load(sys.stdin)['items'] if '$p:' in e['message']))")"
    [[ "$n" == 1 ]] || { echo "$p started $n times"; return 1; }
    n="$(grep '"verb":"delete"' "$node/logs/audit.log" | grep '"username":"system:serviceaccount:mail:dbu"' |
      grep '"resource":"pods"' | grep -c "\"name\":\"$p\"" || true)"
    [[ "$n" == 1 ]] || { echo "$p deleted $n times by the operator (audit log)"; return 1; }
  done
}
new_steps() { # the backends the new operator verified after the patch: IMAP probe and soak
  local ev; ev="$(k get events -o jsonpath='{range .items[*]}{.reason} {.message}{"\n"}{end}')"
  grep -q 'IMAP' <<<"$ev" && grep -qi 'soak' <<<"$ev" || { grep -i 'verify\|soak' <<<"$ev" | tail; return 1; }
}
check "backends verified after the upgrade had the IMAP probe and the soak (Events)" new_steps
check "after both kills, each backend was started once and its pod deleted once (events, audit log)" once
terminated() { # each old pod's PID 1 got SIGTERM and stopped Dovecot (its termination message)
  /usr/bin/python3 - "$state/pods.watch" <<'PY'
import json, sys
dec, text, seen = json.JSONDecoder(), open(sys.argv[1]).read(), {}
i = 0
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    obj, i = dec.raw_decode(text, i)
    name = obj["metadata"]["name"]
    for c in obj.get("status", {}).get("containerStatuses", []):
        t = c.get("state", {}).get("terminated")
        if name.startswith("backend-") and t:
            seen[obj["metadata"]["uid"]] = (name, t.get("exitCode"), t.get("message", "").strip())
print(seen)
good = [v for v in seen.values() if v[1] == 0 and "SIGTERM: Dovecot stopped" in v[2]]
sys.exit(0 if len(good) >= 3 else 1)
PY
}
check "graceful termination reached the supervisor of each replaced pod (exit 0, its message)" terminated
ready_of() { k get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}'; }
readiness_follows() { # stop Dovecot in a backend: NotReady, the same container running on; start it: Ready
  local before; before="$(ready_of backend-2)"
  [[ "$before" == "True 0 "* ]] || { echo "before: $before"; return 1; }
  k exec backend-2 -- doveadm stop
  for _ in $(seq 60); do [[ "$(ready_of backend-2)" == "False 0 ${before#True 0 }" ]] && break; sleep 0.5; done
  [[ "$(ready_of backend-2)" == "False 0 ${before#True 0 }" ]] || { echo "after stop: $(ready_of backend-2)"; return 1; }
  # dovecot daemonizes: its master must not hold the exec's streams open; it logs to PID 1's
  k exec backend-2 -- sh -c 'exec dovecot </dev/null >/proc/1/fd/1 2>/proc/1/fd/2'
  for _ in $(seq 60); do [[ "$(ready_of backend-2)" == "$before" ]] && return 0; sleep 0.5; done
  echo "after start: $(ready_of backend-2)"; return 1
}
check "readiness follows Dovecot: doveadm stop makes the pod NotReady with its container running on; dovecot makes it Ready" readiness_follows
logs_json() { k logs "$(op_pods | head -1)" --tail=50 | /usr/bin/python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin if l.strip()]'; }
check "kubectl logs shows the operator's JSON logs" logs_json
metrics() {
  local ip; ip="$(k get pod "$(op_pods | head -1)" -o jsonpath='{.status.podIP}')"
  # grep -c reads to the end: grep -q stops at the first match, and curl, its pipe closed, fails (23)
  curl -fsS "http://$ip:8080/metrics" | grep -c '^dbu_' >/dev/null
}
check "metrics scraped from the operator pod" metrics

# --- membership follows the pods outside a rollout: a backend deleted by hand comes back at a
# new IP; the (completed) DBU takes the old entry out, verifies the new pod, then puts it in
old_ip="$(pod_ip backend-1)"
check "kubectl delete pod backend-1 by hand, outside any rollout" k delete pod backend-1 --wait=true
new_ip=""
back_elsewhere() {
  for _ in $(seq 180); do
    new_ip="$(pod_ip backend-1)"
    [[ -n "$new_ip" && "$new_ip" != "$old_ip" && "$(k get pod backend-1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] && return 0
    sleep 1
  done
  echo "backend-1 at ${new_ip:-no IP} (was $old_ip)"; return 1
}
check "... the StatefulSet brings it back Ready at a new IP" back_elsewhere
rejoined() {
  for _ in $(seq 240); do
    [[ "$(ring_host "$new_ip")" == "${VHOSTS[backend-1]} up" && -z "$(ring_host "$old_ip")" ]] && break
    sleep 1
  done
  echo "old $old_ip: '$(ring_host "$old_ip")'; new $new_ip: '$(ring_host "$new_ip")'"
  local ev; ev="$(k get events -o jsonpath='{range .items[*]}{.reason} {.message}{"\n"}{end}')"
  grep "came back at\|backend-1: Verify\|backend-1: RingRestore" <<<"$ev" | tail -4 | sed 's/^/#   /'
  [[ "$(ring_host "$new_ip")" == "${VHOSTS[backend-1]} up" && -z "$(ring_host "$old_ip")" ]] &&
    grep -q "backend-1: came back at $new_ip (was $old_ip)" <<<"$ev" &&
    grep -q "backend-1: Verify done" <<<"$ev"
}
check "... verified, then in the ring at its count with the old IP gone (Events: came back, Verify, RingRestore)" rejoined
dring_back() {
  kubectl -n "$NS" wait --for=condition=Ready dbu/backend-rollout --timeout=120s >/dev/null &&
    kubectl -n "$NS" wait --for=condition=Ready dring --all --timeout=120s >/dev/null || return 1
  k get dring | sed 's/^/#   /'
  [[ "$(k get dring -o jsonpath='{.items[0].status.outCount} {.items[0].status.hostCount}')" == "0 3" ]]
}
check "kubectl get dring: 3 hosts, none out, Ready; the DBU Ready again" dring_back
# node maintenance: the ring's budget holds every backend, so kubectl drain's eviction waits for
# the operator to relocate it (the drains at the end move them between the two nodes)
budget_holds() {
  for _ in $(seq 60); do
    [[ "$(k get pdb backend-ring -o jsonpath='{.spec.maxUnavailable}/{.status.expectedPods}' 2>/dev/null)" == 0/3 ]] && break
    sleep 1
  done
  k get pdb -l mailops.io/ring -o custom-columns=NAME:.metadata.name,MAX-UNAVAILABLE:.spec.maxUnavailable,PODS:.status.expectedPods,ALLOWED:.status.disruptionsAllowed | sed 's/^/#   /'
  [[ "$(k get pdb backend-ring -o jsonpath='{.spec.maxUnavailable}/{.status.expectedPods}/{.metadata.ownerReferences[0].kind}')" == 0/3/DovecotRing ]] || return 1
  # the eviction kubectl drain sends: refused, and the pod stays
  local uid out
  uid="$(k get pod backend-0 -o jsonpath='{.metadata.uid}')"
  if out="$(kubectl create --raw "/api/v1/namespaces/$NS/pods/backend-0/eviction" -f - 2>&1 <<<'{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"backend-0","namespace":"'"$NS"'"}}')"; then
    echo "evicted: $out"; return 1
  fi
  echo "# $out" | head -c 300; echo
  grep -q "disruption budget" <<<"$out" && [[ "$(k get pod backend-0 -o jsonpath='{.metadata.uid}')" == "$uid" ]]
}
check "the ring's PodDisruptionBudget (maxUnavailable 0, owned by the DovecotRing) refuses an eviction of a backend" budget_holds
# pods came and went all through: the node's clients (the traffic above) reach pods only while the
# bridge keeps its address, which pods' ARP entries for the node point at (node.sh sets it)
same_bridge() { echo "cni0 at the start $bridge_at_start, now $(bridge_mac)"; [[ "$(bridge_mac)" == "$bridge_at_start" ]]; }
check "the node's bridge kept its address through every pod's coming and going" same_bridge

# --- measurements for BENCHMARKS.md (scripts/bench.sh sets MEASURE to a JSON-lines file)
if [[ -n "${MEASURE:-}" ]]; then
  # the leader's resident memory from its container's memory cgroup (v1 memory.stat: rss, the
  # anonymous part, plus mapped_file, its binary and libraries; as VmRSS counts), at rest for 20 s
  cg="$(pod_cgroup "$NS" "$(leader)")"
  rss=0; for _ in $(seq 40); do v="$(cgroup_kib "$cg")"; ((v > rss)) && rss=$v; sleep 0.5; done
  kubectl get events.events.k8s.io -n "$NS" -o json > "$state/events.json"
  PYTHONPATH="$here" /usr/bin/python3 - "$state/events.json" "$node/logs/audit.log" "$rss" "$(cat "$state/traffic.json.summary")" >> "$MEASURE" <<'PY'
import collections, json, sys
from backend_events import per_backend
per = per_backend(sys.argv[1])
for pod, p in sorted(per.items()):
    # a walk started again after its last finish (backend-1's rejoin after the hand delete) is no
    # measurement: its start is later than its end
    if {"start", "drained", "end"} <= set(p) and p["start"] <= p["drained"] <= p["end"]:
        print(json.dumps({"bench": "realnode", "kind": "backend", "pod": pod,
                          "seconds": (p["end"] - p["start"]).total_seconds(),
                          "drain": (p["drained"] - p["start"]).total_seconds()}))
sa = "system:serviceaccount:mail:dbu"
req = collections.Counter()
for line in open(sys.argv[2]):
    a = json.loads(line)
    if a.get("user", {}).get("username") == sa and a.get("stage") == "ResponseComplete":
        r = a.get("objectRef", {})
        req[a["verb"] + " " + r.get("resource", "") + ("/" + r["subresource"] if r.get("subresource") else "")] += 1
print(json.dumps({"bench": "realnode", "kind": "rest", "cgroup_kib": int(sys.argv[3]),
                  "traffic": sys.argv[4], "requests": dict(sorted(req.items()))}))
PY
fi

# --- node maintenance on two nodes (issue 31), under live IMAP and LMTP traffic through both
# directors: `kubectl drain` moves every backend to the other node through the runbook, the ring's
# budget refusing each eviction until the operator (seeing the node cordoned) has relocated that
# backend; a relocation whose new pod fails Verify stays out and holds the drain until fixed and
# retried; a drain during a rollout shares the ring's slot with it. Never two backends out.
check "kubectl uncordon node-2 (node.sh starts it cordoned)" kubectl uncordon node-2
# The directors stay where they are: every drain below names the pods it moves
# (--pod-selector), and leaves them. A director at a new IP splits Dovecot's ring: the others
# resolved director_servers at their start and do not take its connection. Seen here when the
# directors were moved: both sat alone in rings of one, back at director_mail_servers' defaults,
# and the operator rightly took no backend out (Stalled, RingSplit). Directors need their own
# care in a node drain; they are not backends.
unrelated_taint() { # a NoSchedule taint the operator does not follow moves no backend
  kubectl taint node node-1 e2e.mailops.io/unrelated=:NoSchedule >/dev/null || return 1
  sleep 10
  local ev; ev="$(k get events -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')"
  kubectl taint node node-1 e2e.mailops.io/unrelated=:NoSchedule- >/dev/null
  ! grep -q "relocating for node maintenance" <<<"$ev" && k wait --for=condition=Ready dbu/backend-rollout --timeout=30s >/dev/null
}
check "a NoSchedule taint the operator does not follow relocates nothing (for 10 s: the DBU Ready, no relocation Event)" unrelated_taint
d0="$(pod_ip director-0)" d1="$(pod_ip director-1)"
DRAIN=(--ignore-daemonsets --delete-emptydir-data --pod-selector 'app!=dovecot-director')
rm -f "$state/stop-traffic"
/usr/bin/python3 "$here/mail.py" traffic "$state/drain-traffic.json" "$state/stop-traffic" e2e-pass "$d0" "$d1" user13 user14 user15 user16 user17 user18 &
traffic_pid=$!
# and two mail clients parked in IDLE, one through each director: a session the server closes is
# a kick (Move moves IDLE users by closing their session), and the client logs in again at once
/usr/bin/python3 "$here/mail.py" idle "$state/drain-idle-19.json" "$d0" user19 e2e-pass "$state/stop-traffic" 2>> "$state/drain-idle.err" &
idle19_pid=$!
/usr/bin/python3 "$here/mail.py" idle "$state/drain-idle-20.json" "$d1" user20 e2e-pass "$state/stop-traffic" 2>> "$state/drain-idle.err" &
idle20_pid=$!
# what is out of the ring, as a director sees it (every second) and as the ring's record says (a
# watch: every change); the pods' every address, to tell which backend a ring entry is
(
  while [[ ! -e "$state/stop-traffic" ]]; do
    st="$(kubectl -n "$NS" exec director-1 -- doveadm -f json director status 2>/dev/null)" && echo "$(date +%s.%N) $st" | tr -d '\n' && echo
    sleep 1
  done
) > "$state/drain-ring.samples" &
sampler_pid=$!
command kubectl -n "$NS" get dring -w -o json > "$state/drain-dring.watch" 2>/dev/null &
dring_pid=$!
command kubectl -n "$NS" get pods -l app=dovecot-backend -w -o json > "$state/drain-pods.watch" 2>/dev/null &
podwatch_pid=$!
where() { # pods node: every backend on that node, a new pod, Ready (uids: the files of the old ones)
  k get pods -o wide | sed 's/^/#   /'
  for p in backend-0 backend-1 backend-2; do
    read -r uid _ _ < "$1-$p"
    [[ "$(k get pod "$p" -o jsonpath='{.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}')" == "$2 True" &&
      "$(k get pod "$p" -o jsonpath='{.metadata.uid}')" != "$uid" ]] || { echo "$p not moved to $2"; return 1; }
  done
}
relocated() { # since: each backend one BackendStarted that says node-1 is cordoned, and its times
  # (an Event follows the status write it tells of: the last one may come after the DBU is Ready)
  local rc=1
  for _ in $(seq 30); do relocated_once "$1" "$(now)" > "$state/relocated.out" && { rc=0; break; }; sleep 1; done
  cat "$state/relocated.out"
  return $rc
}
relocated_once() { # since until
  kubectl get events.events.k8s.io -n "$NS" -o json > "$state/drain-events.json"
  PYTHONPATH="$here" /usr/bin/python3 - "$state/drain-events.json" "$1" "$2" <<'PY'
import sys
from backend_events import at, per_backend
per, bad = per_backend(sys.argv[1], at(sys.argv[2]), at(sys.argv[3])), []
for pod in ("backend-0", "backend-1", "backend-2"):
    p = per.get(pod, {})
    if p.get("starts") != 1 or "node node-1 is cordoned" not in p.get("why", "") or "end" not in p:
        bad.append(f"{pod}: {p}")
        continue
    drain = (p["drained"] - p["start"]).total_seconds() if "drained" in p else float("nan")
    print(f"# {pod}: relocated in {(p['end'] - p['start']).total_seconds():.0f}s (its drain {drain:.0f}s): {p['why'][:100]}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# 1. drain node-1: every backend to node-2
keep_old "$state/drain1-old"
drain_from="$(now)" drain_start="$(date +%s)"
check "kubectl drain node-1 --ignore-daemonsets --delete-emptydir-data --pod-selector 'app!=dovecot-director' completes" \
  kubectl drain node-1 "${DRAIN[@]}" --timeout=15m
echo "# kubectl drain node-1 took $(( $(date +%s) - drain_start ))s"
# the drain ends once the last backend's old pod is gone; its Verify, RingRestore and soak run on
relocations_done() { k wait --for=condition=Ready dbu/backend-rollout --timeout=300s; }
check "... and the last relocation completes after it (the DBU Ready)" relocations_done
nothing_on_node_1() { # but the directors
  where "$state/drain1-old" node-2 &&
    [[ -z "$(kubectl get pods -A --field-selector spec.nodeName=node-1 -l 'app!=dovecot-director' -o name)" ]]
}
check "every backend now runs on node-2 (a new pod, Ready), and no pod but the directors is left on node-1" nothing_on_node_1
check "... in the ring at its recorded count at its new IP, up; the old IPs gone" ring_after "$state/drain1-old"
check "each backend was relocated once, its BackendStarted saying node-1 is cordoned (times below)" relocated "$drain_from"
grep '^# backend-' "$state/last.out" 2>/dev/null || true

# 2. a relocation whose new pod fails Verify (the probe's password is wrong): it stays out, the
# DBU says Stalled with what to do, and the drain of node-2 waits, evicting no other backend
check "kubectl uncordon node-1" kubectl uncordon node-1
keep_old "$state/drain2-old"
probe_secret() { k create secret generic upgrade-probe --from-literal=password="$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }
check "the probe's Secret now holds a wrong password" probe_secret not-the-password
drain_start="$(date +%s)"
# The drain runs in the background and must still be waiting once the relocation has failed (the
# DBU Stalled) and for 20 s after that (kubectl drain asks for the evictions again every 5 s);
# then it is stopped. A drain with --timeout=100s waited out the rest of its 100 s in every run.
command kubectl drain node-2 "${DRAIN[@]}" --timeout=10m > "$state/drain-refused.out" 2>&1 &
refused_pid=$!
stalled_now() { [[ "$(k get dbu backend-rollout -o jsonpath='{.status.conditions[?(@.type=="Stalled")].status}')" == True ]]; }
refused() {
  local rc=0
  for _ in $(seq 300); do stalled_now && break; kill -0 "$refused_pid" 2>/dev/null || break; sleep 1; done
  stalled_at=$(( $(date +%s) - drain_start ))
  if ! stalled_now; then
    echo "the DBU did not stall"; rc=1
  else
    for _ in $(seq 20); do kill -0 "$refused_pid" 2>/dev/null || break; sleep 1; done
  fi
  if ! kill "$refused_pid" 2>/dev/null; then echo "kubectl drain node-2 ended on its own"; rc=1; fi
  wait "$refused_pid" 2>/dev/null || true
  tail -5 "$state/drain-refused.out"
  return $rc
}
check "kubectl drain node-2 does not complete (still waiting 20 s after the DBU stalled)" refused
echo "# kubectl drain node-2 was stopped after $(( $(date +%s) - drain_start ))s, still waiting (the DBU stalled after ${stalled_at:-?}s)"
stuck() {
  local msg failed="" p n=0
  msg="$(k get dbu backend-rollout -o jsonpath='{.status.conditions[?(@.type=="Stalled")].status} {.status.conditions[?(@.type=="Stalled")].message}')"
  echo "# Stalled: ${msg:0:400}"
  [[ "$msg" == "True "* && "$msg" == *"relocating for node maintenance (node node-2 is cordoned)"* &&
    "$msg" == *"mailops.io/retry"* && "$msg" == *"Verify"* ]] || return 1
  for p in backend-0 backend-1 backend-2; do
    read -r uid _ _ < "$state/drain2-old-$p"
    if [[ "$(k get pod "$p" -o jsonpath='{.metadata.uid}')" == "$uid" ]]; then
      [[ "$(k get pod "$p" -o jsonpath='{.spec.nodeName}')" == node-2 ]] || { echo "$p moved without a relocation"; return 1; }
      n=$((n + 1))
    else
      failed="$p"
    fi
  done
  [[ -n "$failed" && $n == 2 ]] || { echo "replaced: '${failed}', untouched: $n"; return 1; }
  # the failed one: its new pod is not in the ring taking users, its old entry gone or drained
  local new old
  new="$(ring_host "$(pod_ip "$failed")")"; read -r _ old _ < "$state/drain2-old-$failed"; old="$(ring_host "$old")"
  echo "# $failed: new entry '$new', old entry '$old'"
  [[ "$new" != [1-9]*" up" && "$old" != [1-9]*" up" ]]
}
check "the failed backend stays out of the ring, Stalled says why and what to do, the other two were not evicted" stuck
grep '^# ' "$state/last.out" 2>/dev/null || true
check "the probe's Secret fixed" probe_secret e2e-pass
check "kubectl annotate dbu mailops.io/retry" k annotate dbu backend-rollout mailops.io/retry="drain-$(date +%s)" --overwrite
drain_start="$(date +%s)"
check "kubectl drain node-2 again completes" kubectl drain node-2 "${DRAIN[@]}" --timeout=15m
echo "# kubectl drain node-2 (after the retry) took $(( $(date +%s) - drain_start ))s"
check "... and the last relocation completes after it (the DBU Ready)" relocations_done
check "every backend now runs on node-1" where "$state/drain2-old" node-1
check "... in the ring at its recorded count at its new IP, up; the old IPs gone" ring_after "$state/drain2-old"

# 3. a drain while a rollout runs: node-1 is drained as the rollout works on its first backend
check "kubectl uncordon node-2" kubectl uncordon node-2
keep_old "$state/drain3-old"
check "a new revision (login_greeting) while every backend is on node-1" roll_config "e2e drain 3" 3
check "the rollout works on its first backend" at_backend 0
drain_start="$(date +%s)"
check "kubectl drain node-1 during the rollout completes" kubectl drain node-1 "${DRAIN[@]}" --timeout=15m
echo "# kubectl drain node-1 during the rollout took $(( $(date +%s) - drain_start ))s"
done3() { k wait --for=condition=Ready dbu/backend-rollout --timeout=300s; }
check "the rollout completes (Ready=True)" done3
new_config() { for p in backend-0 backend-1 backend-2; do k exec "$p" -- doveconf -h login_greeting | grep -qx 'e2e drain 3' || return 1; done; }
check "every backend runs on node-2" where "$state/drain3-old" node-2
check "... has the new config" new_config
check "... in the ring at its recorded count at its new IP, up; the old IPs gone" ring_after "$state/drain3-old"

touch "$state/stop-traffic"; wait "$traffic_pid" || true; wait "$sampler_pid" || true
wait "$idle19_pid" "$idle20_pid" || true
kill "$dring_pid" "$podwatch_pid" 2>/dev/null || true
one_out() { # never two backends out: the director's view (entries mapped to backends by every IP their pods had) and the ring's record
  /usr/bin/python3 - "$state/drain-ring.samples" "$state/drain-dring.watch" "$state/drain-pods.watch" <<'PY'
import json, sys
def objs(path):
    dec, text, i = json.JSONDecoder(), open(path).read(), 0
    while i < len(text):
        while i < len(text) and text[i].isspace(): i += 1
        if i >= len(text): break
        obj, i = dec.raw_decode(text, i)
        yield obj
who = {o["status"]["podIP"]: o["metadata"]["name"] for o in objs(sys.argv[3]) if o.get("status", {}).get("podIP")}
samples = worst = 0
for line in open(sys.argv[1]):
    _, _, st = line.partition(" ")
    try:
        hosts = json.loads(st)
    except ValueError:
        continue
    samples += 1
    out = {who.get(h["mail server ip"], h["mail server ip"]) for h in hosts if h["vhosts"] == "0" or h["state"] != "up"}
    if len(out) > 1:
        print("two out at once:", sorted(out), hosts); sys.exit(1)
    worst = max(worst, len(out))
rec = 0
for obj in objs(sys.argv[2]):
    rec += 1
    out = obj.get("status", {}).get("out") or []
    if len(out) > 1:
        print("the ring's record held two out:", out); sys.exit(1)
print(f"{samples} director samples (at most {worst} out), {rec} versions of the ring's record (never two out)")
sys.exit(0 if samples >= 10 and rec >= 2 and worst == 1 else 1)
PY
}
check "never two backends out through the three drains (the director's view every second, every version of the ring's record)" one_out
echo "# $(tail -1 "$state/last.out")"
check "live traffic through the three drains: every accepted delivery is there, none rejected" live "$state/drain-traffic.json" "$d0" "$d1"
echo "# live traffic through the drains: $(cat "$state/drain-traffic.json.summary" 2>/dev/null)"
idle_kept() { # every kick was followed by a login that worked
  /usr/bin/python3 - "$state"/drain-idle-19.json "$state"/drain-idle-20.json <<'PY'
import json, sys
r = [json.load(open(f)) for f in sys.argv[1:]]
print(f"# IDLE clients through the drains: {sum(x['sessions'] for x in r)} sessions, "
      f"{sum(x['closed'] for x in r)} closed by the server (kicks), {sum(x['failed_logins'] for x in r)} failed logins")
sys.exit(0 if all(x["failed_logins"] == 0 and x["sessions"] >= 1 for x in r) else 1)
PY
}
check "IDLE clients through the drains: kicked sessions log in again, no login fails" idle_kept
grep '^# IDLE' "$state/last.out" 2>/dev/null || true
check "mail, UIDs, UIDVALIDITY, flags and keywords are intact through both directors after the drains" intact

echo "1..$((pass + fail))"
echo "# real node: $pass passed, $fail failed"
((fail == 0))
