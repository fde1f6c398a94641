#!/usr/bin/env bash
# A real Kubernetes control plane for the real node (node.sh runs this inside its network
# namespace): etcd on 127.0.0.1, kube-apiserver at $API_ADDRESS (own CA, admin client cert, RBAC
# with the Node authorizer, ServiceAccount admission, the `kubernetes` Service by lease endpoints,
# audit log, kubelet client certificates) and kube-controller-manager with the controllers pods
# on a real node need. node.sh starts the node itself.
#   harness.sh up DIR     start everything, wait for readiness, write DIR/admin.kubeconfig
#   harness.sh down DIR   stop what DIR/*.pid name (only if the PID still runs that binary)
#   harness.sh stop-apiserver DIR / start-apiserver DIR   an API server outage, for tests
# Nothing here talks to anything but 127.0.0.1 and the node's bridge, inside node.sh's namespace.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:?up|down}" dir="${2:?state folder}"
ETCD_PORT="${ETCD_PORT:-23790}" ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
API_PORT="${API_PORT:-26443}" KCM_PORT="${KCM_PORT:-20257}"
ADDR="${API_ADDRESS:?the API server's address on the node's bridge}"
log() { echo "harness: $*" >&2; }

stop() {
  local name="$1" pidf="$dir/$1.pid"
  [[ -f "$pidf" ]] || return 0
  local pid; pid="$(cat "$pidf")"
  if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$name"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

start_apiserver() { # appends to its log and to the audit log, so a restart keeps the history
  log "starting kube-apiserver on $ADDR:$API_PORT"
  "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$ADDR" --advertise-address "$ADDR" --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --authorization-mode Node,RBAC --endpoint-reconciler-type lease --service-cluster-ip-range 10.96.0.0/24 \
    --kubelet-client-certificate "$pki/apiserver-kubelet.crt" --kubelet-client-key "$pki/apiserver-kubelet.key" \
    --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP --allow-privileged=true \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
    >> "$dir/logs/kube-apiserver.log" 2>&1 &
  echo $! > "$dir/kube-apiserver.pid"
  for i in $(seq 120); do
    if curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        "https://$ADDR:$API_PORT/readyz" >/dev/null 2>&1; then
      return 0
    fi
    [[ -d "/proc/$(cat "$dir/kube-apiserver.pid")" ]] || { tail -20 "$dir/logs/kube-apiserver.log" >&2; exit 1; }
    [[ $i == 120 ]] && { log "apiserver not ready"; tail -20 "$dir/logs/kube-apiserver.log" >&2; exit 1; }
    sleep 0.5
  done
}

# an outage of the API server alone (etcd, the kubelet and the controller-manager keep running)
if [[ "$cmd" == stop-apiserver ]]; then
  stop kube-apiserver
  exit 0
fi
if [[ "$cmd" == start-apiserver ]]; then
  BIN="$("$here/build-control-plane.sh")" pki="$dir/pki"
  start_apiserver
  exit 0
fi

if [[ "$cmd" == down ]]; then
  # the kubelet first: it stops its pods gracefully
  for n in kube-controller-manager kube-apiserver etcd; do stop "$n"; done
  exit 0
fi

BIN="$("$here/build-control-plane.sh")"
mkdir -p "$dir/pki" "$dir/etcd" "$dir/logs"
pki="$dir/pki"
cert() { # name subject [serverAltNames]
  openssl req -newkey rsa:2048 -nodes -keyout "$pki/$1.key" -subj "$2" -out "$pki/$1.csr" 2>/dev/null
  local ext="$pki/$1.ext"
  if [[ -n "${3:-}" ]]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$3" > "$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' > "$ext"
  fi
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
}
if [[ ! -f "$pki/ca.crt" ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -subj "/CN=dbu-e2e-ca" -days 2 -out "$pki/ca.crt" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" "IP:$ADDR,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=e2e-admin"
  # the real node: its serving cert, its client cert (Node authorizer: system:node:<name>), and
  # the API server's client cert for exec, logs and port-forward through the kubelet
  cert node-serving "/CN=${NODE_NAME:-node-1}" "IP:$ADDR,DNS:${NODE_NAME:-node-1}"
  cert node-client "/O=system:nodes/CN=system:node:${NODE_NAME:-node-1}"
  # more nodes beside it (node.sh's NODES=2): EXTRA_NODES="name=address ..."
  for n in ${EXTRA_NODES:-}; do
    cert "${n%%=*}-serving" "/CN=${n%%=*}" "IP:${n#*=},DNS:${n%%=*}"
    cert "${n%%=*}-client" "/O=system:nodes/CN=system:node:${n%%=*}"
  done
  cert kube-proxy "/CN=system:kube-proxy"
  cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
cat > "$dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["pods/exec", "pods"]
      - group: "mailops.io"
  - level: None
POLICY

log "starting etcd on 127.0.0.1:$ETCD_PORT"
"$BIN/etcd" --name e2e --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
  > "$dir/logs/etcd.log" 2>&1 &
echo $! > "$dir/etcd.pid"

start_apiserver

kc="$dir/admin.kubeconfig"
cat > "$kc" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "https://$ADDR:$API_PORT", certificate-authority: "$pki/ca.crt"}
users:
  - name: admin
    user: {client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key"}
contexts:
  - name: e2e
    context: {cluster: e2e, user: admin}
current-context: e2e
KC
log "starting kube-controller-manager"
controllers=statefulset-controller,garbage-collector-controller,namespace-controller,persistentvolumeclaim-protection-controller
# what pods on a real node need: Services' endpoints, ServiceAccounts and their CA bundle,
# Deployments (CoreDNS, the operator), static PVs bound to claims, and node lifecycle (it lifts
# the not-ready taint a node registers with). The e2e stops the API server for 30 s on purpose: a
# node whose heartbeats that delays must not be marked NotReady (every pod would turn NotReady with
# it, and a soak would rightly fail), hence a node-monitor grace period of 2 minutes. Its API rate
# is raised from 20 requests/s: the memory benchmark's StatefulSets create 5,000 pods.
controllers+=,endpointslice-controller,endpointslice-mirroring-controller,serviceaccount-controller,root-ca-certificate-publisher-controller
controllers+=,deployment-controller,replicaset-controller,persistentvolume-binder-controller,persistentvolume-protection-controller
controllers+=,disruption-controller,ttl-after-finished-controller,job-controller,node-lifecycle-controller,pod-garbage-collector-controller
"$BIN/kube-controller-manager" --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
  --controllers "$controllers" --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
  --node-monitor-grace-period 2m \
  --kube-api-qps 100 --kube-api-burst 200 \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  > "$dir/logs/kube-controller-manager.log" 2>&1 &
echo $! > "$dir/kube-controller-manager.pid"
log "ready: $("$BIN/kube-apiserver" --version); KUBECONFIG=$kc (node.sh starts the node)"
