#!/usr/bin/env bash
# The README's quickstart, every command as written, on a real node of its own (node.sh): the
# block after the README's `<!-- quickstart ... -->` marker, run line by line in order, each a
# check. What a reader brings is set up first, as their cluster would have it, and named here:
#   - a registry the node pulls from: distribution's registry v3.0.0 (built from the Go module
#     proxy with its filesystem driver only, ./registry, and cached) on the node's loopback,
#     127.0.0.1:5000, plain HTTP; the README's registry.example.org is replaced by it, and
#     `buildah push` gets --tls-verify=false for it;
#   - the build's base images, which cannot be pulled here: `buildah build` gets
#     scripts/image.sh's locally made bases as --build-arg (and cargo's folders as volumes), and
#     runs in the node's network namespace;
#   - ReadWriteMany storage and index volumes: the node has no provisioner, so the static
#     PersistentVolumes of tests/e2e/node/mail/volumes.yaml;
#   - dbu-dovecot:2.3.21 and `kubectl dbu`: the images node.sh imports, the plugin on PATH.
# Then it checks what the quickstart promises: the operator's pods run the image from the
# registry, every backend runs the new revision, back in the ring at its count.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
NS=mail
REGISTRY_VERSION=v3.0.0
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
# built through the wrapper module ./registry (the filesystem driver only), cached by its hash
REGISTRY_BIN="$CACHE/tools/registry-$REGISTRY_VERSION-$(cat "$here"/registry/go.* "$here"/registry/*.go | sha256sum | cut -c1-8)/registry"

if [[ "${1:-}" != inside ]]; then
  eval "$(scripts/install-tools.sh)"
  if [[ ! -x "$REGISTRY_BIN" ]]; then
    echo "quickstart: building distribution's registry $REGISTRY_VERSION from the Go module proxy" >&2
    mkdir -p "$(dirname "$REGISTRY_BIN").tmp"
    (cd "$here/registry" && CGO_ENABLED=0 GOFLAGS='-mod=mod -gcflags=all=-dwarf=false' go build -trimpath -ldflags '-s -w' \
      -o "$(dirname "$REGISTRY_BIN").tmp/registry" .)
    rm -rf "$(dirname "$REGISTRY_BIN")" && mv "$(dirname "$REGISTRY_BIN").tmp" "$(dirname "$REGISTRY_BIN")"
  fi
  DBU_HOST_BINS="$(scripts/host-bins.sh)"; export DBU_HOST_BINS
  exec "$here/node.sh" suite "$0"
fi

state="$2"
source "$here/lib.sh"
k() { kubectl -n "$NS" "$@"; }
mkdir -p "$state/plugins" "$state/registry" "$state/logs"
ln -sf "$DBU_HOST_BINS/kubectl-dbu" "$state/plugins/kubectl-dbu"
export PATH="$state/plugins:$PATH"

# --- what the reader brings
cat > "$state/registry/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $state/registry/data}}
http: {addr: 127.0.0.1:5000}
YAML
"$REGISTRY_BIN" serve "$state/registry/config.yml" > "$state/logs/registry.log" 2>&1 &
echo $! > "$state/registry.pid"
trap 'kill "$(cat "$state/registry.pid")" 2>/dev/null || true' EXIT
registry_up() { for _ in $(seq 50); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null && return 0; sleep 0.2; done; return 1; }
check "a registry on the node's loopback (distribution $REGISTRY_VERSION, 127.0.0.1:5000)" registry_up
check "static PersistentVolumes for the shared store and the index volumes (no provisioner here)" \
  kubectl apply -f "$here/node/mail/volumes.yaml"
mapfile -t build_args < <(scripts/image.sh build-args)
buildah() { # the bases made here, and the registry's plain HTTP
  case "$1" in
    # RUN in the node's own network namespace: cargo needs none, and there is nothing off it
    build) shift; command buildah build --network host "${build_args[@]}" "$@" ;;
    push) shift; command buildah push --tls-verify=false "$@" ;;
    *) command buildah "$@" ;;
  esac
}

# --- the README's block, command by command
commands="$state/quickstart.cmds"
/usr/bin/python3 - README.md "$commands" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
at = text.index("<!-- quickstart:")
block = re.search(r"```sh\n(.*?)```", text[at:], re.S).group(1)
cmds, cur = [], ""
for line in block.splitlines():
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    cur += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
    if not line.endswith("\\"):
        cmds.append(cur.replace("registry.example.org", "127.0.0.1:5000"))
        cur = ""
assert len(cmds) >= 10, cmds
open(sys.argv[2], "w").write("\0".join(cmds))
PY
mapfile -d '' -t lines < "$commands"
for c in "${lines[@]}"; do
  check "quickstart: $c" eval "$c"
done

# --- what the quickstart promises
from_registry() {
  [[ "$(k get pods -l app.kubernetes.io/name=dovecot-upgrade-operator -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u)" == \
     "127.0.0.1:5000/mail/dovecot-upgrade-operator:0.2.0" ]]
}
check "the operator's pods run the image pushed to the registry" from_registry
new_revision() {
  local want; want="$(k get sts backend -o jsonpath='{.status.updateRevision}')"
  [[ -n "$want" && "$(k get pods -l app=dovecot-backend -o jsonpath='{range .items[*]}{.metadata.labels.controller-revision-hash}{"\n"}{end}' | sort -u)" == "$want" ]]
}
check "every backend runs the new revision" new_revision
ring_back() {
  [[ "$(k get dring mail -o jsonpath='{.status.outCount}')" == 0 ]] &&
    [[ "$(k get dring mail -o jsonpath='{range .status.hosts[*]}{.up}{"\n"}{end}' | sort -u)" == true ]]
}
check "the ring holds every backend up again, none out" ring_back

echo "1..$((pass + fail))"
echo "# quickstart: $pass passed, $fail failed"
((fail == 0))
