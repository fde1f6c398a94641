#!/usr/bin/env bash
# Builds what a real node runs, from the Go module proxy, and caches it by version outside the
# repository: kubelet, kube-proxy and kube-scheduler (the Kubernetes version of the control
# plane, through the same wrapper module), containerd, its runc shim and ctr
# ($CONTAINERD_VERSION), CoreDNS ($COREDNS_VERSION, with the plugins the node's Corefile uses:
# the wrapper module ./coredns) and the pause binary (gcc -static of build/pause/linux/pause.c
# from the k8s.io/kubernetes module zip). runc and the CNI plugins come from Debian (install-tools.sh).
# A second run finds them and builds nothing. Prints the folder holding the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CONTAINERD_VERSION=2.3.7 COREDNS_VERSION=1.15.0
source "$here/kube-build.sh"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
coredns_sum="$(cat "$here"/coredns/go.* "$here"/coredns/*.go | sha256sum | cut -c1-8)"
BIN="$CACHE/node/kube-$KUBE_VERSION-containerd-$CONTAINERD_VERSION-coredns-$COREDNS_VERSION-$coredns_sum"
log() { echo "build-node: $*" >&2; }
want=(kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr coredns pause)
have=1; for b in "${want[@]}"; do [[ -x "$BIN/$b" ]] || have=0; done
if [[ $have == 1 ]]; then log "reusing $BIN"; echo "$BIN"; exit 0; fi
command -v go >/dev/null || { log "go is required"; exit 1; }
rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp"
# no DWARF from the compiler: the link's -s -w drops it anyway (on CoreDNS: 223 CPU-s, not 247)
export CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false'
start=$(date +%s)
log "building kubelet, kube-proxy and kube-scheduler v$KUBE_VERSION"
(cd "$here/kube" && go build -trimpath -ldflags "$(kube_ldflags)" -o "$BIN.tmp/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler)
log "building containerd v$CONTAINERD_VERSION (CGO off: overlayfs, no btrfs, as upstream builds the shim)"
# `go install pkg@version` builds exactly the module's own go.mod, outside any wrapper
(cd / && GOBIN="$BIN.tmp" go install -trimpath -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd@v$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/ctr@v$CONTAINERD_VERSION")
log "building CoreDNS v$COREDNS_VERSION (errors, health, ready and kubernetes: the plugins node/coredns.yaml uses)"
(cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/coredns" .)
log "building pause from k8s.io/kubernetes v$KUBE_VERSION"
src="$(cd "$here/kube" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | awk -F'"' '$2=="Dir" {print $4}')"
tag="$(awk -F'[ ?=]+' '$1=="TAG" {print $2}' "$src/build/pause/Makefile")"
gcc -Os -Wall -Werror -static -DVERSION="v$tag-dbu" -o "$BIN.tmp/pause" "$src/build/pause/linux/pause.c"
strip "$BIN.tmp/pause"
echo "$tag" > "$BIN.tmp/pause.tag"
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
log "built in $(( $(date +%s) - start ))s: $("$BIN/kubelet" --version), containerd $("$BIN/containerd" --version | awk '{print $3}'), CoreDNS $("$BIN/coredns" -version | head -1), pause $tag"
echo "$BIN"
