#!/usr/bin/env bash
# GitOps with a live Flux and a live Argo CD on the real node (node.sh): Flux's source-controller and
# kustomize-controller v1.9.6 (tests/gitops/build-flux.sh) as processes in the node's network,
# a Git repository served there by git's http-backend, and one Kustomization that applies the
# example mail system and its DBU and health-checks the DBU, as the README recommends. Every
# change is a commit: a broken revision and its fix with a retry, a supervised canary approved,
# holds, a pause and an abort, and a DBU pruned mid-drain. A watcher samples the Kustomization
# and the DBU twice a second; flux.py judges the samples (never Ready before the rollout ends,
# failing at once on a stalled DBU). Then Argo CD's application controller takes over the same
# objects from the same repository: the sync-wave deadlock, and the layout that avoids it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
NS=mail

if [[ "${1:-}" != inside ]]; then
  eval "$(scripts/install-tools.sh)"
  flux="$("$repo/tests/gitops/build-flux.sh")"
  gitops="$("$repo/tests/gitops/build-tools.sh")"
  FLUX="$flux" GITOPS="$gitops" exec "$here/node.sh" suite "$0"
fi

state="$2"
mkdir -p "$state/logs" "$state/flux/storage"
source "$here/lib.sh"
FJ=(/usr/bin/python3 "$repo/tests/gitops/flux.py")
timeline="$state/flux/timeline.jsonl"
GIT_ADDR=10.88.0.1:8418 STORAGE_ADDR=10.88.0.1:9090
# on failure: the controllers' last words, and the samples kept for a look (the state folder goes)
trap 'if ((fail > 0)); then for f in "$state"/logs/{source,kustomize}-controller.log "$state"/logs/argocd-*.log "$state"/logs/watch.log; do
  echo "# --- tail of $f"; tail -8 "$f" | cut -c1-300 | sed "s/^/#   /"; done; cp "$timeline" /tmp/dbu-flux-timeline.jsonl; fi' EXIT
k() { kubectl -n "$NS" "$@"; }
ks() { kubectl -n flux-system get kustomization mail -o jsonpath="$1" 2>/dev/null; }
dbu_get() { k get dbu backend-rollout -o jsonpath="$1" 2>/dev/null; }
established() { # crd...: kubectl wait fails on a CRD that has no conditions yet
  local c; for c in "$@"; do
    waitfor 60 crd_is_established "$c" || return 1
  done
}
crd_is_established() { [[ "$(kubectl get crd "$1" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]]; }
ks_observed() { [[ "$(ks '{.status.observedGeneration}')" == "$(ks '{.metadata.generation}')" ]]; }
waitfor() { # seconds command...: poll until the command succeeds
  local n="$1"; shift
  for _ in $(seq $((n * 2))); do "$@" 2>/dev/null && return 0; sleep 0.5; done
  "$@"
}

# --- the operator, as helm installs it; Flux and a Git server in the node's network
check "helm install the chart" helm install dbu charts/dovecot-upgrade-operator -n "$NS" --create-namespace \
  --set 'probeSecrets={upgrade-probe}' --set replicaCount=1 --wait --timeout 3m
flux_crds() {
  kubectl create namespace flux-system >/dev/null && kubectl apply --server-side -f "$FLUX/crds" >/dev/null &&
    established gitrepositories.source.toolkit.fluxcd.io kustomizations.kustomize.toolkit.fluxcd.io
}
check "kubectl apply --server-side Flux v1.9.6's CRDs (from the controllers' module zips)" flux_crds

git_() { git -C "$state/flux/tree" -c user.name=e2e -c user.email=e2e@e2e.invalid "$@"; }
declare -A SHA
commit() { # label message edit-ops...: a commit to main, pushed; its time goes into the timeline
  local label="$1" msg="$2"; shift 2
  "${FJ[@]}" edit "$state/flux/tree/${DIR:-mail}" "$@" && git_ add -A && git_ commit -q -m "$msg" && git_ push -q origin HEAD:main || return 1
  SHA[$label]="$(git_ rev-parse HEAD)"
  printf '{"label": "%s", "commit": "%s", "t": %s}\n' "$label" "${SHA[$label]}" "$(date +%s.%N | cut -c1-13)" >> "$timeline"
}
git_repo() {
  git init -q --bare -b main "$state/flux/git/mail.git" &&
    git clone -q "$state/flux/git/mail.git" "$state/flux/tree" 2>/dev/null &&
    { kubectl kustomize "$here/node/mail" && echo --- && cat deploy/examples/ring.yaml; } > "$state/flux/workloads.yaml" &&
    rollout_dbu_yaml | sed -e 's/^spec:/spec:\n  timeouts: {replace: 60s}/' -e 's/timeout: 20s/timeout: 5s/' > "$state/flux/dbu.yaml" &&
    "${FJ[@]}" init "$state/flux/tree" "$state/flux/workloads.yaml" "$state/flux/dbu.yaml" &&
    commit c1 "mail: backends at revision r1 (Dovecot 2.3.19)" revision=r1 greeting=r1
}
# (a 5 s drain ceiling: users the suite mapped linger for the examples' 15 min expiry, and this
# suite is about GitOps, not the drain)
# (Replace's 60 s: c2's broken config fails there, so short; at 25 s, a backend whose container
# took its whole 30 s grace period to stop on SIGTERM (once at 78a39e1, with the cores busy)
# failed a rollout meant to pass, which is why Replace's timeout now counts beyond the grace)
check "a Git repository: the examples, the DovecotRing and the DBU, revision r1 in the pod template and spec.revision" git_repo
/usr/bin/python3 "$repo/tests/gitops/git-http.py" "${GIT_ADDR%:*}" "${GIT_ADDR#*:}" "$state/flux/git" 2> "$state/logs/git-http.log" &
served() { git ls-remote "http://$GIT_ADDR/mail.git" | grep -q "${SHA[c1]}"; }
check "git http-backend serves it at http://$GIT_ADDR (the cluster's network)" waitfor 10 served

start_source_controller() {
  RUNTIME_NAMESPACE=flux-system "$FLUX/source-controller" --storage-path="$state/flux/storage" \
    --storage-addr="$STORAGE_ADDR" --storage-adv-addr="$STORAGE_ADDR" --metrics-addr=127.0.0.1:18080 \
    --health-addr=127.0.0.1:19440 --log-level=info >> "$state/logs/source-controller.log" 2>&1 &
}
KC_PID=""
start_kustomize_controller() { # feature gates
  RUNTIME_NAMESPACE=flux-system "$FLUX/kustomize-controller" --metrics-addr=127.0.0.1:18081 \
    --health-addr=127.0.0.1:19441 --log-level=info --feature-gates="$1" >> "$state/logs/kustomize-controller.log" 2>&1 &
  KC_PID=$!
}
healthy() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null; }
start_source_controller
start_kustomize_controller CancelHealthCheckOnNewRevision=false
flux_up() { waitfor 60 healthy 19440 && waitfor 60 healthy 19441; }
check "source-controller and kustomize-controller run (Flux's defaults: CancelHealthCheckOnNewRevision off)" flux_up

cat > "$state/flux/flux.yaml" <<YAML
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: mail, namespace: flux-system}
spec:
  url: http://$GIT_ADDR/mail.git
  ref: {branch: main}
  interval: 5s
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: mail, namespace: flux-system}
spec:
  path: ./mail
  prune: true
  sourceRef: {kind: GitRepository, name: mail}
  interval: 10m
  retryInterval: 10s
  timeout: 10m
  wait: false
  healthChecks:
    - {apiVersion: mailops.io/v1alpha1, kind: DovecotBackendUpgrade, name: backend-rollout, namespace: mail}
  # the README's second line of defence; removed for the later parts, which use kstatus alone
  healthCheckExprs:
    - apiVersion: mailops.io/v1alpha1
      kind: DovecotBackendUpgrade
      failed: "status.conditions.exists(c, c.type == 'Stalled' && c.status == 'True')"
      current: "status.observedGeneration == metadata.generation && status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"
YAML
check "a GitRepository and a Kustomization (prune, healthChecks on the DBU with the README's healthCheckExprs)" \
  kubectl apply -f "$state/flux/flux.yaml"
"${FJ[@]}" watch "$timeline" 2> "$state/logs/watch.log" &

ks_ready_for() { [[ "$(ks '{.status.conditions[?(@.type=="Ready")].status}')" == True && "$(ks '{.status.lastAppliedRevision}')" == *"${SHA[$1]}" ]]; }
ks_failed_for() { "${FJ[@]}" failed-for "$timeline" mail "${SHA[$1]}"; }  # (a sample for the judges, too)
ks_msg() { ks '{.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}' | cut -c1-300; }
applied() { [[ "$(ks '{.status.lastAttemptedRevision}')" == *"${SHA[$1]}" ]]; }
fetched() { [[ "$(kubectl -n flux-system get gitrepository mail -o jsonpath='{.status.artifact.revision}')" == *"${SHA[$1]}" ]]; }
wait_ready() { waitfor "$2" ks_ready_for "$1" || { ks_msg; return 1; }; }
judge() { "${FJ[@]}" judge "$timeline" "$@"; }
reason_is() { dbu_get '{range .status.conditions[*]}{.reason}{"\n"}{end}' | grep -qx "$1"; }
outdated() { # backend pods not at the StatefulSet's update revision
  local rev; rev="$(k get sts backend -o jsonpath='{.status.updateRevision}')"
  k get pods -l app=dovecot-backend -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.controller-revision-hash}{"\n"}{end}' |
    awk -v r="$rev" '$2 != r {print $1}' | sort
}
greetings() { # every backend's running config has login_greeting = $1
  local p; for p in backend-0 backend-1 backend-2; do [[ "$(k exec "$p" -- doveconf -h login_greeting)" == "$1" ]] || { echo "$p"; return 1; }; done
}

check "Flux applies it: the Kustomization is Ready for c1 once the DBU is Ready" wait_ready c1 240
check "five Dovecot pods Running and Ready" ready_pods
check "the director ring is synced" ring_synced
check "a human gives the backends different vhost counts" set_vhosts
check "deliver mail through the director" deliver_all

# --- Part A: a broken revision stalls the DBU and fails the Kustomization at once; a fix and a retry by commit
# (every change of the DBU from here on comes from a watch: the failing rollout must show one
# stall reason only, never a Stalled=True that a cache which had not caught up made up)
watch_dbu backend-rollout
check "a watch on the DBU sees it" waitfor 30 grep -q '"rv"' "$state/dbu-watch.jsonl"
mark_dbu c2
check "commit c2: revision r2 with a setting Dovecot refuses (and a new greeting)" \
  commit c2 "mail: revision r2 (broken config)" revision=r2 greeting=r2 broken=yes
stalled_failed() { # (a read of the reason that fails on a loaded machine is read again; that no
  # other stall reason ever shows is the watch's judgement below)
  k wait --for=condition=Stalled dbu/backend-rollout --timeout=240s >/dev/null && waitfor 10 reason_is BackendFailed ||
    { dbu_get '{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'; return 1; }
}
check "... the DBU stalls: Stalled=True BackendFailed" stalled_failed
failed_backend="$(dbu_get '{.status.current}')"
check "... the Kustomization fails for c2 (Ready=False), naming the DBU" waitfor 60 ks_failed_for c2
ks_msg | sed 's/^/#   /'
check "... at once, because the DBU is Stalled, not at the 10m timeout (healthCheckExprs' failed rule)" judge fails-early mail c2
sed 's/^/#   /' "$state/last.out"
kept_out() { # the failed backend stays out of the ring: gone from it, drained or down
  local host; host="$(ring_host "$(pod_ip "$failed_backend")")" || return 1
  [[ -z "$host" || "$host" == "0 "* || "$host" == *" down" ]] || { echo "$failed_backend: $host"; return 1; }
}
check "... the failed backend ($failed_backend) stays out of the director ring" kept_out
check "commit c3: revision r3 fixes the config, and a new mailops.io/retry value" \
  commit c3 "mail: revision r3 (config fixed), retry" revision=r3 greeting=r3 broken=no annotation.mailops.io/retry=c3
check "... Flux applies c3 and the Kustomization turns Ready once the rollout ends" wait_ready c3 300
mark_dbu c3-ready
check "... through the failing rollout and its fix, every change of the DBU (from a watch) shows one stall reason, BackendFailed, and progress never goes back" \
  judge_dbu c2 c3-ready --stall-reasons BackendFailed
sed 's/^/#   /' "$state/last.out"
check "... in progress until then, Ready only with the DBU complete" judge in-progress mail c3
sed 's/^/#   /' "$state/last.out"
check "... every backend runs r3's config" greetings r3
check "... the ring is whole, at the vhost counts the human gave" ring_back

# --- Part B: kstatus alone; controls by commits
no_exprs() { kubectl -n flux-system patch kustomization mail --type json -p '[{"op":"remove","path":"/spec/healthCheckExprs"}]' >/dev/null &&
  waitfor 60 ks_observed && wait_ready c3 60; }
check "the Kustomization without healthCheckExprs (kstatus alone) is Ready" no_exprs
check "commit c4: revision r4 (Dovecot 2.3.21, new greeting), supervised canary" \
  commit c4 "mail: revision r4 (Dovecot 2.3.21), supervised canary" revision=r4 image=2.3.21 greeting=r4 'spec.canary={"supervised": true}'
awaiting() { reason_is AwaitingApproval && [[ "$(dbu_get '{.status.progress}')" == 1/3 ]]; }
check "... the canary is upgraded, then the DBU awaits approval (1/3)" waitfor 180 awaiting
in_progress_for() { applied "$1" && [[ "$(ks '{.status.conditions[?(@.type=="Ready")].status}')" == Unknown ]] || { ks_msg; return 1; }; }
check "... the Kustomization stays in progress for c4 (the DBU is Suspended: InProgress for kstatus)" in_progress_for c4
mapfile -t rest < <(outdated)
hold_json="[\"${rest[0]}\", \"${rest[1]}\"]"
check "commit c5: approve the canary (spec.canary.approvedRevision r4) and hold the other two (${rest[*]})" \
  commit c5 "mail: approve the canary, hold ${rest[*]}" 'spec.canary.approvedRevision="r4"' "spec.hold=$hold_json"
not_applied() { # with Flux's defaults, the health check of c4 blocks the Kustomization until it ends
  waitfor 30 fetched c5 || return 1
  sleep 15
  ! applied c5 && [[ -z "$(dbu_get '{.spec.canary.approvedRevision}')" ]] || { echo "c5 was applied"; return 1; }
  echo "15 s after source-controller fetched c5: last attempted $(ks '{.status.lastAttemptedRevision}'), approvedRevision unset"
}
check "... with Flux's defaults c5 is not applied while c4's health check waits (the sync deadlock)" not_applied
sed 's/^/#   /' "$state/last.out"
restart_gate() {
  kill "$KC_PID" && wait "$KC_PID" 2>/dev/null; start_kustomize_controller CancelHealthCheckOnNewRevision=true
  waitfor 60 healthy 19441
}
check "restart kustomize-controller with --feature-gates=CancelHealthCheckOnNewRevision=true (the README's setting)" restart_gate
held() { reason_is BackendHeld && [[ "$(dbu_get '{.spec.canary.approvedRevision}')" == r4 ]]; }
check "... c5 is applied: the canary is approved, and both others are held (BackendHeld)" waitfor 60 held
check "commit c6: release ${rest[0]}, keep ${rest[1]} held" commit c6 "mail: release ${rest[0]}" "spec.hold=[\"${rest[1]}\"]"
two_of_three() { [[ "$(dbu_get '{.status.progress}')" == 2/3 ]] && reason_is BackendHeld; }
check "... applied while c5's health check ran: ${rest[0]} is upgraded, then BackendHeld (2/3)" waitfor 120 two_of_three
check "commit c7: spec.paused" commit c7 "mail: pause the rollout" spec.paused=true
check "... the DBU is Paused" waitfor 60 reason_is Paused
check "commit c8: spec.abort" commit c8 "mail: abort the rollout" spec.abort=true
aborted() { [[ "$(dbu_get '{.status.phase}')" == Aborted ]] && [[ "$(dbu_get '{.status.conditions[?(@.type=="Stalled")].status}')" == True ]]; }
check "... the DBU is Aborted (Stalled=True)" waitfor 60 aborted
check "... and the Kustomization fails for c8 at once (kstatus: Stalled=True is Failed)" waitfor 60 ks_failed_for c8
check "... (because of the stalled DBU, named)" judge fails-early mail c8
sed 's/^/#   /' "$state/last.out"
check "commit c9: clear abort, pause and hold" commit c9 "mail: resume the rollout" spec.abort=null spec.paused=null spec.hold=null
check "... the last backend is upgraded and the Kustomization turns Ready for c9" wait_ready c9 180
check "... in progress until the rollout ended" judge in-progress mail c9
sed 's/^/#   /' "$state/last.out"
check "... never Ready for c4 to c8, while the rollout waited, was held, paused or aborted" \
  judge never-ready mail c4 c5 c6 c7 c8
sed 's/^/#   /' "$state/last.out"
upgraded_r4() {
  local p; greetings r4 || return 1
  for p in backend-0 backend-1 backend-2; do k exec "$p" -- dovecot --version | grep -q '^2\.3\.21' || { echo "$p"; return 1; }; done
}
check "... every backend runs 2.3.21 with r4's config" upgraded_r4
check "... the ring is whole, at the vhost counts the human gave" ring_back

# --- Part C: the DBU pruned mid-drain runs its finalizer; nothing is left drained
b2_uid="$(k get pod backend-2 -o jsonpath='{.metadata.uid}')"
/usr/bin/python3 "$here/mail.py" session "$(pod_ip backend-2)" user1 e2e-pass "$state/stop-session" 2> "$state/logs/session.log" &
check "commit c10: revision r5, Ordinal order, a 10m drain ceiling (a live session holds backend-2's drain)" \
  commit c10 "mail: revision r5" revision=r5 greeting=r5 spec.ordering='"Ordinal"' 'spec.drain.timeout="10m"'
draining() {
  [[ "$(dbu_get '{.status.current}')" == backend-2 && "$(ring_host "$(pod_ip backend-2)")" == "0 "* ]]
}
check "... backend-2 is drained (vhosts 0) and waits for its session" waitfor 120 draining
mark() { printf '{"label": "%s", "commit": "", "t": %s}\n' "$1" "$(date +%s.%N | cut -c1-13)" >> "$timeline"; }
prune() { # the DBU leaves Git, and the Kustomization's health check on it with it (from here on
  # the Kustomization is Ready without looking at the DBU: the judge stops at this mark)
  mark unchecked
  kubectl -n flux-system patch kustomization mail --type json -p '[{"op":"remove","path":"/spec/healthChecks"}]' >/dev/null &&
    commit c11 "mail: remove the DBU" dbu=absent
}
check "commit c11: the DBU removed from Git (prune: true)" prune
check "... Flux prunes it and the finalizer lets it go" k wait --for=delete dbu/backend-rollout --timeout=120s
check "... the Kustomization is Ready for c11" wait_ready c11 60
check "... backend-2 is back in the ring at its vhost count, every backend up" ring_back
same_pod() { [[ "$(k get pod backend-2 -o jsonpath='{.metadata.uid}')" == "$b2_uid" ]]; }
check "... backend-2 is the same pod, never stopped" same_pod
touch "$state/stop-session"
check "the Kustomization was never Ready while the DBU was not complete (every sample while it checked the DBU)" \
  judge never-early mail unchecked
sed 's/^/#   /' "$state/last.out"

# --- Part D: Argo CD's application controller and repo-server (3.6.1: the binary whose Lua engine
# judges the DBU elsewhere, by the names it is called by), Redis, the same Git repository, the
# shipped argocd-cm patch. A Git webhook's refresh is an annotation after each push.
handover() { # Flux lets go of the objects without deleting them
  kubectl -n flux-system patch kustomization mail --type merge -p '{"spec":{"prune":false}}' >/dev/null &&
    waitfor 30 ks_observed &&
    kubectl -n flux-system delete kustomization mail --timeout=60s >/dev/null &&
    kubectl -n flux-system delete gitrepository mail --timeout=60s >/dev/null &&
    k get sts backend director >/dev/null
}
check "Flux lets go of the mail system (prune off, Kustomization deleted); its objects stay" handover
mkdir -p "$state/argocd/bin" "$state/argocd/tmp"
for c in argocd-repo-server argocd-application-controller; do ln -s "$GITOPS/argocd" "$state/argocd/bin/$c"; done
ln -s "$GITOPS/git-verify-wrapper.sh" "$state/argocd/bin/"
redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no > "$state/logs/redis.log" 2>&1 &
PATH="$state/argocd/bin:$PATH" TMPDIR="$state/argocd/tmp" ARGOCD_GPG_ENABLED=false "$state/argocd/bin/argocd-repo-server" \
  --address 127.0.0.1 --port 8081 --disable-tls --client-ca-path= --redis 127.0.0.1:6379 --metrics-port 18084 \
  --revision-cache-expiration 2s > "$state/logs/argocd-repo-server.log" 2>&1 &
argo_objects() {
  kubectl create namespace argocd >/dev/null &&
    kubectl apply --server-side -f "$GITOPS/crds" >/dev/null &&
    established applications.argoproj.io appprojects.argoproj.io &&
    kubectl apply -f - >/dev/null <<YAML &&
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-cm, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-rbac-cm, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
---
apiVersion: v1
kind: Secret
metadata: {name: argocd-secret, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
stringData: {server.secretkey: e2e-only}
---
apiVersion: v1
kind: Secret
metadata:
  name: cluster-e2e
  namespace: argocd
  labels: {argocd.argoproj.io/secret-type: cluster}
stringData:
  name: e2e
  server: https://10.88.0.1:6443
  config: '{"tlsClientConfig": {"caData": "$(base64 -w0 "$PKI/ca.crt")", "certData": "$(base64 -w0 "$PKI/admin.crt")", "keyData": "$(base64 -w0 "$PKI/admin.key")"}}'
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: argocd}
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
YAML
    kubectl -n argocd patch configmap argocd-cm --patch-file charts/dovecot-upgrade-operator/argocd/argocd-cm-patch.yaml >/dev/null
}
check "Argo CD's CRDs and settings: argocd-cm with the shipped patch (health and actions), the cluster, a project" argo_objects
# its diffs' scratch folders (argocd-diff*) in the suite's state, not /tmp, where they piled up
TMPDIR="$state/argocd/tmp" "$state/argocd/bin/argocd-application-controller" --kubeconfig "$KUBECONFIG" --namespace argocd --redis 127.0.0.1:6379 \
  --repo-server 127.0.0.1:8081 --repo-server-plaintext --metrics-port 18082 --app-resync 10 \
  > "$state/logs/argocd-application-controller.log" 2>&1 &
argo_up() { curl -fsS http://127.0.0.1:18084/metrics >/dev/null && curl -fsS http://127.0.0.1:18082/metrics >/dev/null; }
check "argocd-repo-server and argocd-application-controller run (Redis beside them)" waitfor 60 argo_up
app() { kubectl -n argocd get application mail -o jsonpath="$1" 2>/dev/null; }
refresh() { kubectl -n argocd annotate application mail argocd.argoproj.io/refresh=normal --overwrite >/dev/null; }
argo_commit() { DIR=argo commit "$@" && refresh; }
argo_tree() { # argo/ takes the workloads as Flux left them, and the DBU back, for revision r6
  cp "$state/flux/tree/mail/workloads.yaml" "$state/flux/tree/argo/workloads.yaml" &&
    cp "$state/flux/tree/mail/dbu.yaml" "$state/flux/tree/argo/dbu.yaml" &&
    DIR=argo commit a1 "argo: revision r6; the DBU in sync wave 1, a ConfigMap in wave 2" revision=r6 greeting=r6 \
      spec.canary=null 'spec.ordering="FewestUsers"' 'spec.drain.timeout="5s"' \
      annotation.argocd.argoproj.io/sync-wave=1 later=present
}
check "commit a1: revision r6, with the DBU in a later sync wave than the StatefulSet and a ConfigMap after it" argo_tree
check "an Application (automated sync) for argo/" kubectl apply -f - <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: mail, namespace: argocd}
spec:
  project: default
  source: {repoURL: "http://$GIT_ADDR/mail.git", targetRevision: main, path: argo}
  destination: {server: "https://10.88.0.1:6443", namespace: mail}
  syncPolicy: {automated: {prune: false, selfHeal: false}}
YAML
waiting_on_dbu() {
  [[ "$(app '{.status.operationState.phase}')" == Running && "$(app '{.status.operationState.message}')" == *DovecotBackendUpgrade/backend-rollout* ]] &&
    [[ "$(dbu_get '{.spec.revision}')" == r6 ]]
}
check "... Argo CD syncs wave 0, applies the DBU in wave 1 and its operation waits on the DBU's health" waitfor 120 waiting_on_dbu
app '{.status.operationState.message}' | sed 's/^/#   /'; echo
check "commit a2: spec.paused, while the rollout runs" argo_commit a2 "argo: pause" spec.paused=true
dbu_paused() { [[ "$(dbu_get '{.spec.paused}')" == true ]]; }
# a ceiling, not a wait: the three backends' rollout took 219 s in a warm run on a machine loaded
# beyond CI (load average 20), past the 180 s this had
paused_after() { k wait --for=condition=Ready dbu/backend-rollout --timeout=300s >/dev/null && waitfor 60 dbu_paused; }
check "... the rollout runs to its end, and only then is the pause applied (the sync-wave deadlock)" paused_after
# (the timeline's sampler may not have written the sample that shows the pause yet when kubectl
# already sees it: the judge reads the timeline again until it does, for up to 30 s)
check "... (the operation held a2 back while the DBU was Progressing)" waitfor 30 judge argo-held-back mail a2 paused
sed 's/^/#   /' "$state/last.out"
# (a3 keeps the ConfigMap, in wave 0: one removed from Git but left in the cluster would keep its
# wave on its prune task, and the sync would still be one of several steps)
check "commit a3: the recommended layout (one sync wave, nothing after the DBU); revision r7, supervised canary" \
  argo_commit a3 "argo: revision r7, one sync wave, supervised canary" revision=r7 greeting=r7 spec.paused=null \
    'spec.canary={"supervised": true}' annotation.argocd.argoproj.io/sync-wave= later=same-wave
synced_at_once() {
  [[ "$(app '{.status.operationState.phase}')" == Succeeded && "$(app '{.status.operationState.syncResult.revision}')" == "${SHA[a3]}" ]] &&
    [[ "$(dbu_get '{.spec.revision}')" == r7 ]] && ! reason_is UpgradeComplete
}
check "... the sync operation ends as soon as Git is applied, while the rollout runs" waitfor 60 synced_at_once
suspended() { [[ "$(app '{.status.health.status}')" == Suspended ]] && reason_is AwaitingApproval; }
check "... the canary is upgraded and waits: the Application is Suspended" waitfor 180 suspended
mapfile -t rest < <(outdated)
check "commit a4: approve the canary and hold ${rest[*]}" \
  argo_commit a4 "argo: approve the canary, hold the others" 'spec.canary.approvedRevision="r7"' "spec.hold=[\"${rest[0]}\", \"${rest[1]}\"]"
held_r7() { reason_is BackendHeld && [[ "$(dbu_get '{.spec.canary.approvedRevision}')" == r7 ]]; }
check "... applied at once: the canary is approved, the others are held" waitfor 60 held_r7
check "commit a5: release them" argo_commit a5 "argo: release the held backends" spec.hold=null
argo_done() { [[ "$(app '{.status.health.status}')" == Healthy && "$(app '{.status.sync.revision}')" == "${SHA[a5]}" ]] && reason_is UpgradeComplete; }
check "... the rollout completes and the Application is Healthy" waitfor 180 argo_done
check "... never Healthy while the DBU was not complete (every sample)" judge argo-healthy-only-complete mail
sed 's/^/#   /' "$state/last.out"
check "... every backend runs r7's config" greetings r7
check "... the ring is whole, at the vhost counts the human gave" ring_back

echo "1..$((pass + fail))"
echo "# gitops: $pass passed, $fail failed"
((fail == 0))
