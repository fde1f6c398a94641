#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller (v1.9.6) from the Go module proxy through
# the GitOps tools' wrapper module, ./tools (their own go.mod files have replace lines, so go
# install is refused), with its Go toolchain: what they share with Argo CD (build-tools.sh, which
# runs first in CI) is compiled once. Copies their CRDs out of the module zips. Cached by version
# and by the hash of the wrapper outside the repository. Prints the folder holding the two
# binaries and crds/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FLUX_VERSION=1.9.6
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
GO_TOOLCHAIN="$(awk '$1=="toolchain" {print $2}' "$here/tools/go.mod")"
sum="$(cat "$here"/tools/go.* | sha256sum | cut -c1-12)"
BIN="$CACHE/gitops/flux-$FLUX_VERSION-$sum"
log() { echo "build-flux: $*" >&2; }
if [[ -x "$BIN/source-controller" && -x "$BIN/kustomize-controller" && -d "$BIN/crds" ]]; then
  log "reusing $BIN"; echo "$BIN"; exit 0
fi
command -v go >/dev/null || { log "go is required"; exit 1; }
rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp/crds"
# no DWARF from the compiler: the link's -s -w drops it anyway (on CoreDNS: 223 CPU-s, not 247)
export CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false' GOTOOLCHAIN="$GO_TOOLCHAIN"
start=$(date +%s)
log "building source-controller and kustomize-controller v$FLUX_VERSION with $GO_TOOLCHAIN"
(cd "$here/tools" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/" github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller)
for c in source-controller kustomize-controller; do
  # the CRDs ship in the controller's module zip, which the build has just downloaded
  dir="$(cd "$here/tools" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$c")"
  cp "$dir"/config/crd/bases/*.yaml "$BIN.tmp/crds/"
  chmod u+w "$BIN.tmp/crds/"*.yaml
done
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
log "built in $(( $(date +%s) - start ))s"
echo "$BIN"
