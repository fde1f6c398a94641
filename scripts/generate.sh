#!/usr/bin/env bash
# Regenerates committed artifacts from the code; with --check, fails on any difference instead.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-tools.sh 2>/dev/null)"
check="${1:-}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cargo run --quiet --locked -- crd > "$out/crd.yaml"
# render from a copy holding the fresh CRD, so the result never depends on a stale chart copy
cp -r charts/dovecot-upgrade-operator "$out/chart"
cp "$out/crd.yaml" "$out/chart/crds/dovecotbackendupgrades.mailops.io.yaml"
helm template dovecot-upgrade-operator "$out/chart" \
  --namespace dovecot-upgrade-operator --include-crds > "$out/operator.yaml"

{
  echo "# Generated from health.lua by scripts/generate.sh. Apply with:"
  echo "#   kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm-patch.yaml"
  echo "data:"
  echo "  resource.customizations.health.mailops.io_DovecotBackendUpgrade: |"
  sed 's/^/    /' charts/dovecot-upgrade-operator/argocd/health.lua
} > "$out/argocd-cm-patch.yaml"

pairs=(
  "$out/argocd-cm-patch.yaml:charts/dovecot-upgrade-operator/argocd/argocd-cm-patch.yaml"
  "$out/crd.yaml:crds/dovecotbackendupgrades.mailops.io.yaml"
  "$out/crd.yaml:charts/dovecot-upgrade-operator/crds/dovecotbackendupgrades.mailops.io.yaml"
  "$out/operator.yaml:deploy/operator.yaml"
)
status=0
for p in "${pairs[@]}"; do
  src="${p%%:*}" dst="${p##*:}"
  if [[ "$check" == "--check" ]]; then
    if ! diff -u "$dst" "$src" >&2; then
      echo "generate: $dst differs from what the code generates; run scripts/generate.sh" >&2
      status=1
    fi
  else
    cp "$src" "$dst"
  fi
done
[[ "$check" == "--check" && $status -eq 0 ]] && echo "generate: all artifacts up to date"
exit $status
