#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager (Kubernetes $KUBE_VERSION) and etcd ($ETCD_VERSION)
# from the Go module proxy, through the wrapper modules beside this script, and caches them by
# version outside the repository. A second run finds them and builds nothing.
# Prints the folder holding the three binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/kube-build.sh"
ETCD_VERSION="$(awk '$1=="require" && $2=="go.etcd.io/etcd/server/v3" {sub(/^v/,"",$3); print $3}' "$here/etcd/go.mod")"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
BIN="$CACHE/control-plane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
log() { echo "build-control-plane: $*" >&2; }

if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$BIN/etcd" ]]; then
  log "reusing $BIN"
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required"; exit 1; }
mkdir -p "$BIN.tmp"
# no DWARF from the compiler: the link's -s -w drops it anyway (on CoreDNS: 223 CPU-s, not 247)
export CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false'
start=$(date +%s)
log "building Kubernetes v$KUBE_VERSION (cold: about 11 minutes on 2 cores)"
(cd "$here/kube" && go build -trimpath -ldflags "$(kube_ldflags)" -o "$BIN.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
log "building etcd v$ETCD_VERSION"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/etcd" go.etcd.io/etcd/server/v3)
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
log "built in $(( $(date +%s) - start ))s: $("$BIN/kube-apiserver" --version), etcd $("$BIN/etcd" --version | head -1)"
echo "$BIN"
