#!/usr/bin/env bash
# The kubectl plugin as krew ships it.
#   scripts/krew.sh package DIR   release build of kubectl-dbu, its archive and the manifest
#                                 (.krew.yaml rendered for that archive: version and sha256) in DIR
#   scripts/krew.sh check         package, validate the manifest with krew's own validator, install
#                                 it with krew into a scratch KREW_ROOT, and run it through kubectl
#                                 (packages the debug build CI already made: what is checked is the
#                                 manifest, the archive and krew's install, which a release build's
#                                 optimizer does not change; its build cost CI 97 s on 2 cores)
# krew v0.4.3 is built from the Go module proxy on first use and cached by version.
set -euo pipefail
cd "$(dirname "$0")/.."
KREW_VERSION=v0.4.3
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
KREW_BIN="$CACHE/tools/krew-$KREW_VERSION"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' plugin/Cargo.toml | head -1)"
log() { echo "krew: $*" >&2; }

package() { # dir [profile: release (the default) or dev]
  local dir="$1" profile="${2:-release}" stage archive sha
  mkdir -p "$dir"
  local bin
  if [[ $profile == dev ]]; then
    bin="$(scripts/host-bins.sh)/kubectl-dbu"
  else
    cargo build --profile "$profile" --locked --quiet -p kubectl-dbu
    bin="target/$profile/kubectl-dbu"
  fi
  stage="$(mktemp -d)"
  cp "$bin" LICENSE "$stage/"
  archive="$dir/kubectl-dbu_${version}_linux_amd64.tar.gz"
  # reproducible: fixed order, owner and time, so the same binary gives the same sha256
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - kubectl-dbu LICENSE |
    gzip -n > "$archive"
  rm -rf "$stage"
  sha="$(sha256sum "$archive" | cut -d' ' -f1)"
  /usr/bin/python3 - "$version" "$sha" .krew.yaml "$dir/dbu.yaml" <<'PY'
import re, sys
version, sha, src, dst = sys.argv[1:]
text = open(src).read()
def uri_and_sha(m):
    uri = m.group(1).replace("{{ .TagName }}", version)
    return f"uri: {uri}\n      sha256: {sha}"
text = re.sub(r'\{\{addURIAndSha "([^"]+)" \.TagName \}\}', uri_and_sha, text)
text = text.replace("{{ .TagName }}", version)
assert "{{" not in text, "a template action left in the manifest"
open(dst, "w").write(text)
PY
  log "$archive ($sha) and $dir/dbu.yaml"
}

krew_tools() {
  if [[ ! -x "$KREW_BIN/krew" || ! -x "$KREW_BIN/validate-krew-manifest" ]]; then
    log "building krew $KREW_VERSION from the Go module proxy"
    rm -rf "$KREW_BIN.tmp" && mkdir -p "$KREW_BIN.tmp"
    GOBIN="$KREW_BIN.tmp" CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false' go install -trimpath -ldflags '-s -w' \
      "sigs.k8s.io/krew/cmd/krew@$KREW_VERSION" "sigs.k8s.io/krew/cmd/validate-krew-manifest@$KREW_VERSION"
    rm -rf "$KREW_BIN" && mv "$KREW_BIN.tmp" "$KREW_BIN"
  fi
}

case "${1:-}" in
  package) package "${2:?package DIR}" ;;
  check)
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    package "$work/dist" dev
    krew_tools
    "$KREW_BIN/validate-krew-manifest" -manifest "$work/dist/dbu.yaml" -skip-install
    # krew as kubectl runs it (kubectl-krew on PATH), into a root of its own; no index, no network
    mkdir -p "$work/path" "$work/root"
    ln -s "$KREW_BIN/krew" "$work/path/kubectl-krew"
    export KREW_ROOT="$work/root" KREW_NO_UPGRADE_CHECK=1 PATH="$work/path:$PATH"
    kubectl krew install --no-update-index --manifest="$work/dist/dbu.yaml" \
      --archive="$work/dist/kubectl-dbu_${version}_linux_amd64.tar.gz" </dev/null 2>&1 | grep -v '^WARNING: To be able\|^the following to your\|export PATH=\|^and restart your shell' >&2
    # what `kubectl krew list` reads (it also wants an index, which there is none of here)
    grep -q "version: $version" "$KREW_ROOT/receipts/dbu.yaml" || { log "no receipt of dbu $version"; exit 1; }
    PATH="$KREW_ROOT/bin:$PATH" kubectl dbu --version | grep -q "kubectl-dbu ${version#v}" ||
      { log "kubectl dbu did not run from krew's install"; exit 1; }
    [[ "$(readlink -f "$(PATH="$KREW_ROOT/bin:$PATH" command -v kubectl-dbu)")" == "$KREW_ROOT"/store/dbu/"$version"/kubectl-dbu ]] ||
      { log "kubectl-dbu on PATH is not krew's"; exit 1; }
    log "installed by krew $KREW_VERSION from the manifest and archive; kubectl dbu runs"
    ;;
  *) echo "usage: scripts/krew.sh package DIR | check" >&2; exit 2 ;;
esac
