#!/usr/bin/env bash
# Builds the GitOps tools the suites judge DBUs with, from the Go module proxy, and caches them by
# version (and by the hash of their wrapper module, ./tools) outside the repository: Argo CD's binary
# (its CLI with the Lua health and action engine, and as argocd-repo-server and
# argocd-application-controller by the name it is called by), with its CRDs, and Flux's kstatus
# library as a small command. Argo CD needs Go 1.27, fetched as a toolchain through the proxy;
# build-flux.sh builds Flux's controllers in the same module with the same toolchain, so the
# packages the two share are compiled once. Prints the folder holding the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ARGOCD_VERSION=3.6.1 KSTATUS_VERSION=1.2.3
GO_TOOLCHAIN="$(awk '$1=="toolchain" {print $2}' "$here/tools/go.mod")"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
sum="$(cat "$here"/tools/go.* "$here"/tools/kstatus/*.go | sha256sum | cut -c1-12)"
BIN="$CACHE/gitops/argocd-$ARGOCD_VERSION-kstatus-$KSTATUS_VERSION-$sum"
log() { echo "build-gitops: $*" >&2; }
# what Argo CD's controllers need besides the binary, from its module zip: the Application and
# AppProject CRDs, and the git wrapper the repo-server runs for every revision (its image ships it)
argo_extras() { # folder
  local dir
  dir="$(cd "$here/tools" && GOTOOLCHAIN="$GO_TOOLCHAIN" GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
  mkdir -p "$1/crds"
  cp "$dir"/manifests/crds/application-crd.yaml "$dir"/manifests/crds/appproject-crd.yaml "$1/crds/"
  cp "$dir/hack/git-verify-wrapper.sh" "$1/"
  chmod u+w "$1"/crds/*.yaml && chmod 755 "$1/git-verify-wrapper.sh"
}
if [[ -x "$BIN/argocd" && -x "$BIN/kstatus" ]]; then
  [[ -x "$BIN/git-verify-wrapper.sh" && -d "$BIN/crds" ]] || argo_extras "$BIN"
  log "reusing $BIN"; echo "$BIN"; exit 0
fi
command -v go >/dev/null || { log "go is required"; exit 1; }
rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp"
# no DWARF from the compiler: the link's -s -w drops it anyway (on CoreDNS: 223 CPU-s, not 247)
export CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false' GOTOOLCHAIN="$GO_TOOLCHAIN"
start=$(date +%s)
log "building kstatus (github.com/fluxcd/cli-utils v$KSTATUS_VERSION)"
(cd "$here/tools" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/kstatus" ./kstatus)
log "building argocd v$ARGOCD_VERSION with $GO_TOOLCHAIN"
(cd "$here/tools" && go build -trimpath \
  -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=$ARGOCD_VERSION" \
  -o "$BIN.tmp/argocd" github.com/argoproj/argo-cd/v3/cmd)
argo_extras "$BIN.tmp"
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
log "built in $(( $(date +%s) - start ))s: $("$BIN/argocd" version --client --short 2>/dev/null | head -1)"
echo "$BIN"
