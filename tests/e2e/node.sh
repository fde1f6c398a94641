#!/usr/bin/env bash
# A real Kubernetes node and its control plane inside one network, mount and PID namespace that
# this script creates: nothing it starts can reach or be reached from outside the machine.
#   node.sh run DIR CMD...   set everything up, run CMD inside (KUBECONFIG exported), tear down
#   node.sh suite SCRIPT     a state folder, the images (build-images.sh, or $DBU_IMAGES), `run`
#                            of `SCRIPT inside STATE` on a node of its own, the folder removed
# Inside: lo, a bridge cni0 10.88.0.1/24 with no uplink, route or NAT off it; etcd, kube-apiserver
# (at 10.88.0.1, the `kubernetes` Service 10.96.0.1) and kube-controller-manager (harness.sh),
# kube-scheduler; containerd with Debian's runc and CNI bridge plugin, kubelet and kube-proxy
# (iptables), CoreDNS as a pod behind 10.96.0.10; the images imported from OCI archives ($IMAGES,
# a folder of *.tar) with no registry. Teardown deletes the pods (so their PID 1 gets SIGTERM),
# stops everything, and removes the cgroups; the namespaces die with their last process.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:?run|suite}"
# A failed suite's evidence outlives its state folder: what each failed check snapped (lib.sh
# snapshot), the suite's own logs, and the logs of the control plane and the node, under
# $DBU_EVIDENCE (default /var/tmp/dbu-evidence, outside any clone; the newest 10 are kept).
keep_evidence() { # suite state
  local root="${DBU_EVIDENCE:-/var/tmp/dbu-evidence}" dest f
  dest="$root/$1-$(date +%Y%m%dT%H%M%S)"
  mkdir -p "$dest"
  cp -r "$2/evidence" "$dest/" 2>/dev/null || true
  [[ -d "$2/logs" ]] && cp -r "$2/logs" "$dest/suite-logs"
  [[ -d "$2/node/logs" ]] && cp -r "$2/node/logs" "$dest/node-logs"
  [[ -f "$2/dbu-watch.jsonl" ]] && cp "$2/dbu-watch.jsonl" "$dest/"
  [[ -f "$2/flux/timeline.jsonl" ]] && cp "$2/flux/timeline.jsonl" "$dest/"
  # the audit log is large and says little a failure needs: its last lines only
  [[ -f "$dest/node-logs/audit.log" ]] && { tail -2000 "$dest/node-logs/audit.log" > "$dest/node-logs/audit.tail.log"; rm "$dest/node-logs/audit.log"; }
  ls -1dt "$root"/*/ 2>/dev/null | tail -n +11 | xargs -r rm -rf
  echo "# $1 failed: its evidence is kept in $dest"
  # in CI's output: the first failed check as it was snapped (its output, the DBU's conditions,
  # the last Events and operator lines), then the last lines of every process's log
  local first; first="$(ls -1d "$dest"/evidence/check-* 2>/dev/null | awk -F'check-' '{print $NF, $0}' | sort -n | head -1 | cut -d' ' -f2-)"
  if [[ -n "$first" ]]; then
    echo "# --- the first failed check (${first##*/}): $(head -1 "$first/check.txt")"
    tail -n +2 "$first/check.txt" | tail -8 | cut -c1-300 | sed 's/^/#   /'
    grep -E '^\s+(type|status|reason|message):' "$first/dbu.yaml" 2>/dev/null | tail -16 | cut -c1-300 | sed 's/^/#   dbu: /'
    tail -6 "$first/events.txt" 2>/dev/null | cut -c1-300 | sed 's/^/#   event: /'
    cat "$first"/logs/*_dbu-*.log 2>/dev/null | tail -6 | cut -c1-300 | sed 's/^/#   operator: /'
  fi
  for f in "$dest"/suite-logs/*.log "$dest"/node-logs/*.log; do
    [[ -s "$f" ]] || continue
    echo "# --- last lines of ${f#"$dest"/}"
    tail -3 "$f" | cut -c1-300 | sed 's/^/#   /'
  done
}

if [[ "$cmd" == suite ]]; then
  script="${2:?a test script}"
  state="$(mktemp -d "/tmp/dbu-$(basename "$script" .sh)-XXXXXX")"
  # DBU_IMAGES: a folder build-images.sh already filled (scripts/test.sh builds once for every
  # suite it runs side by side); read only here
  images="${DBU_IMAGES:-$state/oci}"
  [[ -n "${DBU_IMAGES:-}" ]] || "$here/build-images.sh" "$images" >/dev/null
  rc=0
  CGROUP="dbu-node-$$" IMAGES="$images" "$0" run "$state/node" "$script" inside "$state" || rc=$?
  if ((rc != 0)); then keep_evidence "$(basename "$script" .sh)" "$state"; fi
  rm -rf "$state"
  exit $rc
fi
dir="${2:?state folder}"; shift 2
NODE_NAME=node-1 ADDR=10.88.0.1 CGROUP="${CGROUP:-dbu-e2e-node}"  # CGROUP: the kubelet's cgroup root, one per run
log() { echo "node: $*" >&2; }

remove_cgroups() { # depth-first, in every v1 hierarchy: what the kubelets and runc made under ours
  local h c
  for h in /sys/fs/cgroup/*/; do
    for c in "$CGROUP" "$CGROUP-node-2"; do
      [[ -d "$h$c" ]] || continue
      find "$h$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$h$c" ]] && log "left a cgroup: $h$c"
    done
  done
  return 0
}

if [[ "$cmd" == run ]]; then
  # the builds fetch from the Go module proxy: fill their caches here, before the namespace
  # that has no route off the machine (inside they are only looked up)
  "$here/build-control-plane.sh" >/dev/null
  "$here/build-node.sh" >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  remove_cgroups
  rc=0
  # --pid with --fork: when the inner script ends, the kernel kills whatever it left behind
  unshare --net --mount --pid --fork --mount-proc --propagation private "$0" inside "$dir" "$@" || rc=$?
  remove_cgroups
  # nothing may outlive the run: processes, mounts, cgroups, network namespaces, bridges
  left=""
  # (what ran inside names files under "$dir/"; this script's own command line names only "$dir")
  procs="$(pgrep -f "$dir/" | tr '\n' ' ' || true)"
  [[ -n "$procs" ]] && left+=" processes ($procs)"
  grep -q " $dir" /proc/self/mountinfo && left+=" mounts"
  { ls -d /sys/fs/cgroup/*/"$CGROUP" || ls -d /sys/fs/cgroup/*/"$CGROUP-node-2"; } >/dev/null 2>&1 && left+=" cgroups"
  ip link show cni0 >/dev/null 2>&1 && left+=" a bridge in the host's namespace"
  ip link show cni1 >/dev/null 2>&1 && left+=" a bridge in the host's namespace"
  [[ -e /run/containerd ]] && left+=" /run/containerd"
  ls /run/netns 2>/dev/null | grep -q '^cni-' && left+=" network namespaces"
  if [[ -n "$left" ]]; then echo "not ok - node teardown left:$left"; rc=1; else echo "ok - node teardown left no processes, mounts, cgroups, namespaces or bridges"; fi
  exit $rc
fi
[[ "$cmd" == inside ]] || { echo "usage: node.sh run DIR CMD... | node.sh suite SCRIPT" >&2; exit 2; }

NODEBIN="$("$here/build-node.sh")"
export PATH="$NODEBIN:$PATH"
# NODES=2 adds node-2 beside node-1 (a second containerd and kubelet, their own bridge cni1
# 10.88.1.1/24 routed to cni0 inside this namespace), cordoned until a test uncordons it: what a
# single-node suite sees is unchanged, and a drain test has somewhere to go.
NODES="${NODES:-1}"
NODE2_ADDR=10.88.1.1
mkdir -p "$dir"/{logs,pv}
# kubelet and containerd bind-mount into this namespace only; `shared` inside, private to the host
mount --make-rshared /
# the shims' sockets (and runc's state, but for the Root each node's config sets) are under
# /run/containerd whatever the config says: a /run of this namespace's own
mount -t tmpfs -o mode=0755 tmpfs /run
# static PersistentVolumes (node/mail/volumes.yaml) live under /mnt, in this namespace only; every
# node here sees the same /mnt, as nodes see a network volume
mount --bind "$dir/pv" /mnt
# the kubelet's device-plugin socket is at a fixed path (/var/lib/kubelet/device-plugins, not
# under --root-dir): a folder of this namespace's own there, or kubelets of suites side by side
# remove each other's socket, and one started in the same moment fails ("bind: address already
# in use": GitOps at a005306, its node started in the same second as two others)
mkdir -p "$dir/device-plugins" /var/lib/kubelet/device-plugins
mount --bind "$dir/device-plugins" /var/lib/kubelet/device-plugins

ip link set lo up
# A fixed address: a bridge without one takes its lowest port's and changes it when that pod goes,
# and the pods' ARP entries for the node then point nowhere until they expire (CI once saw an
# LMTP session from the node stall 10 s while the operator's old pods were deleted).
bridge() { # name mac address/24
  ip link add "$1" address "$2" type bridge
  ip addr add "$3/24" dev "$1"
  ip link set "$1" up
}
bridge cni0 02:db:00:00:00:01 "$ADDR"
((NODES < 2)) || bridge cni1 02:db:00:00:01:01 "$NODE2_ADDR"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.route_localnet=1

# each node's folder: node-1's is $dir itself (suites find its socket at $dir/containerd), node-2's
# $dir/node-2; their logs all in $dir/logs
node_dirs() { echo "$dir"; ((NODES < 2)) || echo "$dir/node-2"; }
sfx() { [[ "$1" == "$NODE_NAME" ]] || echo "-$1"; }   # node-2's files: kubelet-node-2.log and so on
ctr_() { ctr --address "$dir/containerd/containerd.sock" "$@"; }
tasks_left() { local nd; for nd in $(node_dirs); do ctr --address "$nd/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null; done; }

teardown() {
  local rc=$? nd
  set +e
  log "teardown"
  if [[ -f "$dir/admin.kubeconfig" ]]; then
    # namespaces with pods first, so each container's PID 1 is stopped gracefully by the kubelet
    kubectl --kubeconfig "$dir/admin.kubeconfig" delete ns --all --wait=false >/dev/null 2>&1
    kubectl --kubeconfig "$dir/admin.kubeconfig" -n kube-system delete deploy,pod --all --wait=false >/dev/null 2>&1
    for _ in $(seq 60); do
      [[ -z "$(tasks_left)" ]] && break
      sleep 1
    done
  fi
  for n in kube-proxy kube-scheduler; do [[ -f "$dir/$n.pid" ]] && kill "$(cat "$dir/$n.pid")" 2>/dev/null; done
  for nd in $(node_dirs); do [[ -f "$nd/kubelet.pid" ]] && kill "$(cat "$nd/kubelet.pid")" 2>/dev/null; done
  sleep 1
  for nd in $(node_dirs); do
    if [[ -S "$nd/containerd/containerd.sock" ]]; then
      for t in $(ctr --address "$nd/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
        ctr --address "$nd/containerd/containerd.sock" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1
      done
    fi
    [[ -f "$nd/containerd.pid" ]] && kill "$(cat "$nd/containerd.pid")" 2>/dev/null
  done
  API_ADDRESS="$ADDR" "$here/harness.sh" down "$dir"
  # the shims and anything else still here die with this PID namespace; mounts with its mount namespace
  exit $rc
}
trap teardown EXIT

extra=""; ((NODES < 2)) || extra="node-2=$NODE2_ADDR"
API_ADDRESS="$ADDR" NODE_NAME="$NODE_NAME" API_PORT=6443 EXTRA_NODES="$extra" "$here/harness.sh" up "$dir"
export KUBECONFIG="$dir/admin.kubeconfig"
# kubectl's discovery and OpenAPI cache is keyed by the server's address, which every node has
# alike (10.88.0.1:6443, each in its own namespace): side by side, one node's kubectl explain
# read another's schema (real-node's "the earlier CRD has no verify.imapProbe" failed at 28b2921)
export KUBECACHEDIR="$dir/kube-cache"
pki="$dir/pki"

pause_tag="$(cat "$NODEBIN/pause.tag")"
img="$dir/images"; mkdir -p "$img"
# each one static binary on an empty root, as upstream ships them (buildah from scratch)
"$here/../../scripts/image.sh" static "$NODEBIN/pause" "registry.k8s.io/pause:$pause_tag" 65535:65535 "$img/pause.tar"
"$here/../../scripts/image.sh" static "$NODEBIN/coredns" \
  "registry.k8s.io/coredns/coredns:v$("$NODEBIN/coredns" -version | awk -F'[- ]' '/CoreDNS/ {print $2; exit}')" "" "$img/coredns.tar"

# A node's runtime: containerd with its own root, state, socket, NRI socket and runc root under
# ND (the shims' sockets under /run/containerd/s are named from the containerd socket's path, so
# two do not collide), a CNI bridge network on BRIDGE for the pods' SUBNET, the images imported.
start_containerd() { # name nd bridge subnet gateway
  local name="$1" nd="$2" logf="$dir/logs/containerd$(sfx "$1").log" t
  mkdir -p "$nd"/{containerd,kubelet,pod-logs,cni/net.d,cni/ipam}
  log "starting containerd $(containerd --version | awk '{print $3}') for $name"
  cat > "$nd/containerd/config.toml" <<TOML
version = 4
root = "$nd/containerd/root"
state = "$nd/containerd/state"
[plugins.'io.containerd.server.v1.grpc']
  address = "$nd/containerd/containerd.sock"
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "$nd/containerd/nri.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # a registry on the namespace's loopback, plain HTTP (the quickstart suite's, tests/e2e/quickstart.sh)
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$nd/containerd/certs.d"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "registry.k8s.io/pause:$pause_tag"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # this machine gives root no CAP_SYS_RESOURCE: runc may not lower oom_score_adj below ours
  restrict_oom_score_adj = true
  enable_cdi = false
  enable_criu = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "/usr/sbin/runc"
    Root = "$nd/containerd/runc"
    SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$nd/cni/net.d"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
TOML
  mkdir -p "$nd/containerd/certs.d/127.0.0.1:5000"
  cat > "$nd/containerd/certs.d/127.0.0.1:5000/hosts.toml" <<TOML
server = "http://127.0.0.1:5000"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
TOML
  cat > "$nd/cni/net.d/10-e2e.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "e2e", "plugins": [
  {"type": "bridge", "bridge": "$3", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$nd/cni/ipam",
            "ranges": [[{"subnet": "$4", "gateway": "$5"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
  containerd --config "$nd/containerd/config.toml" > "$logf" 2>&1 &
  echo $! > "$nd/containerd.pid"
  for i in $(seq 100); do
    ctr --address "$nd/containerd/containerd.sock" version >/dev/null 2>&1 && break
    [[ $i == 100 ]] && { tail "$logf"; exit 1; }
    sleep 0.2
  done
  log "importing images into $name"
  for t in "$img"/*.tar ${IMAGES:+"$IMAGES"/*.tar}; do
    ctr --address "$nd/containerd/containerd.sock" -n k8s.io images import --local "$t" >/dev/null || { log "import of $t failed"; exit 1; }
  done
}
start_containerd node-1 "$dir" cni0 10.88.0.0/24 "$ADDR"
((NODES < 2)) || start_containerd node-2 "$dir/node-2" cni1 10.88.1.0/24 "$NODE2_ADDR"
ctr_ -n k8s.io images ls -q | sed 's/^/node: image /' >&2

: > "$dir/resolv.conf"   # pods with dnsPolicy Default get no host nameserver
kubeconfig_for() { # name cert
  cat > "$dir/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://$ADDR:6443", certificate-authority: "$pki/ca.crt"}}]
users: [{name: $1, user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $1}}]
current-context: e2e
KC
}
# A kubelet: its own cgroup root (in every v1 hierarchy; cpuset needs its cpus and mems filled),
# root and pod-logs dirs under ND, its serving address and certs; a second one on this machine
# moves its healthz port off the first's.
start_kubelet() { # name address nd cgroup-root cert-prefix healthz-port
  local name="$1" addr="$2" nd="$3" cg="$4" h
  for h in /sys/fs/cgroup/*/; do
    [[ -e "$h/tasks" ]] || continue
    mkdir -p "$h$cg"
    if [[ -e "$h/cpuset.cpus" ]]; then cat "$h/cpuset.cpus" > "$h$cg/cpuset.cpus"; cat "$h/cpuset.mems" > "$h$cg/cpuset.mems"; fi
  done
  cat > "$nd/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cg
containerRuntimeEndpoint: unix://$nd/containerd/containerd.sock
address: $addr
port: 10250
healthzPort: $6
readOnlyPort: 0
tlsCertFile: $pki/$5-serving.crt
tlsPrivateKeyFile: $pki/$5-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
podLogsDir: $nd/pod-logs
failSwapOn: false
# imported images have no registry to come back from: never collect them
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
syncFrequency: 5s
fileCheckFrequency: 5s
YAML
  kubeconfig_for "kubelet$(sfx "$name")" "$5-client"
  log "starting kubelet $(kubelet --version | awk '{print $2}') as $name at $addr"
  kubelet --config "$nd/kubelet.yaml" --kubeconfig "$dir/kubelet$(sfx "$name").kubeconfig" --root-dir "$nd/kubelet" \
    --hostname-override "$name" --node-ip "$addr" --v 1 > "$dir/logs/kubelet$(sfx "$name").log" 2>&1 &
  echo $! > "$nd/kubelet.pid"
}
node_ready() { # name
  for i in $(seq 120); do
    [[ "$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] && break
    [[ $i == 120 ]] && { log "$1 not Ready"; tail -30 "$dir/logs/kubelet$(sfx "$1").log" >&2; exit 1; }
    sleep 0.5
  done
  log "node $1 Ready"
}
kubeconfig_for kube-proxy kube-proxy
log "starting kube-scheduler"
# kube-scheduler exits on purpose when it finds its cache corrupt ("Pod updated on a different
# node than previously added to", seen here after an API server outage while a pod was deleted);
# a kubeadm control plane's kubelet restarts it as a static pod, and this loop does the same
(
  trap 'kill "$child" 2>/dev/null; exit 0' TERM
  while :; do
    kube-scheduler --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259 >> "$dir/logs/kube-scheduler.log" 2>&1 &
    child=$!
    code=0
    wait "$child" || code=$?
    echo "node: kube-scheduler exited ($code); starting it again" >> "$dir/logs/kube-scheduler.log"
    sleep 1
  done
) &
echo $! > "$dir/kube-scheduler.pid"
start_kubelet "$NODE_NAME" "$ADDR" "$dir" "$CGROUP" node 10248
((NODES < 2)) || start_kubelet node-2 "$NODE2_ADDR" "$dir/node-2" "$CGROUP-node-2" node-2 10348
kubectl create clusterrolebinding e2e-kube-proxy --clusterrole system:node-proxier --user system:kube-proxy >/dev/null
# one kube-proxy: every node here shares this network namespace and its iptables
log "starting kube-proxy (iptables)"
kube-proxy --kubeconfig "$dir/kube-proxy.kubeconfig" --hostname-override "$NODE_NAME" --proxy-mode iptables \
  --cluster-cidr 10.88.0.0/16 --conntrack-max-per-core 0 --metrics-bind-address 127.0.0.1:10249 \
  --healthz-bind-address 127.0.0.1:10256 > "$dir/logs/kube-proxy.log" 2>&1 &
echo $! > "$dir/kube-proxy.pid"
node_ready "$NODE_NAME"
if ((NODES >= 2)); then
  node_ready node-2
  kubectl cordon node-2 >/dev/null
  log "node-2 cordoned: a test uncordons it when it wants pods there"
fi

log "starting CoreDNS"
coredns_image="$(ctr_ -n k8s.io images ls -q | grep coredns/coredns: | head -1)"
sed "s|@IMAGE@|$coredns_image|" "$here/node/coredns.yaml" | kubectl apply -f - >/dev/null
kubectl -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null || {
  kubectl -n kube-system get pods -o wide; kubectl -n kube-system describe pods | tail -30; exit 1; }
log "ready: KUBECONFIG=$KUBECONFIG"
"$@"
