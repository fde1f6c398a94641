#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller (v1.9.6) from the Go module proxy through
# wrapper modules (their own go.mod files have replace lines, so go install is refused), and copies
# their CRDs out of the module zips. Cached by version and by the hash of the wrappers outside the
# repository. Prints the folder holding the two binaries and crds/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FLUX_VERSION=1.9.6
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
sum="$(cat "$here"/flux/*/go.* "$here"/flux/*/*.go | sha256sum | cut -c1-12)"
BIN="$CACHE/gitops/flux-$FLUX_VERSION-$sum"
log() { echo "build-flux: $*" >&2; }
if [[ -x "$BIN/source-controller" && -x "$BIN/kustomize-controller" && -d "$BIN/crds" ]]; then
  log "reusing $BIN"; echo "$BIN"; exit 0
fi
command -v go >/dev/null || { log "go is required"; exit 1; }
rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp/crds"
# no DWARF from the compiler: the link's -s -w drops it anyway (on CoreDNS: 223 CPU-s, not 247)
export CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false'
start=$(date +%s)
for c in source-controller kustomize-controller; do
  log "building $c v$FLUX_VERSION"
  (cd "$here/flux/$c" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/$c" "github.com/fluxcd/$c")
  # the CRDs ship in the controller's module zip, which the build has just downloaded
  dir="$(cd "$here/flux/$c" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$c")"
  cp "$dir"/config/crd/bases/*.yaml "$BIN.tmp/crds/"
  chmod u+w "$BIN.tmp/crds/"*.yaml
done
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
log "built in $(( $(date +%s) - start ))s"
echo "$BIN"
