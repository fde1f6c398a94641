#!/usr/bin/env bash
# Writes the images the real node runs, as OCI archives, into OUT (no registry anywhere):
# the operator's (scripts/operator-image.py, from the release binary) and Dovecot 2.3.19 and
# 2.3.21 (scripts/dovecot-image.py, from Debian's packages), and the operator of an earlier
# release, $PREVIOUS (the chart upgrade's starting point; built from that commit, packed by
# today's recipe, as that commit had none, under the name its chart expects). The Dovecot
# archives and the earlier binary are cached outside the repository (by recipe hash, by commit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?OUT folder}"
PREVIOUS="${PREVIOUS:-$(grep -v '^#' "$here/previous-release")}"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
log() { echo "build-images: $*" >&2; }
mkdir -p "$out" "$CACHE/images"
recipe="$(cat "$repo"/deploy/images/dovecot/* "$repo"/scripts/dovecot-image.py "$repo"/scripts/oci.py | sha256sum | cut -c1-16)"
for v in 2.3.19 2.3.21; do
  cached="$CACHE/images/dovecot-$v-$recipe.tar"
  if [[ ! -f "$cached" ]]; then
    log "building Dovecot $v (mmdebstrap; about a minute)"
    python3 "$repo/scripts/dovecot-image.py" build "$v" "$cached.tmp" >&2
    mv "$cached.tmp" "$cached"
  fi
  ln -sf "$cached" "$out/dovecot-$v.tar"   # 190 MiB each: linked, not copied per suite
done
prev_bin="$CACHE/previous/$PREVIOUS/dovecot-upgrade-operator"
if [[ ! -x "$prev_bin" ]]; then
  log "building the operator at $PREVIOUS (a release build of that commit)"
  tree="$(mktemp -d)"
  git -C "$repo" archive "$PREVIOUS" | tar -x -C "$tree"
  (cd "$tree" && CARGO_TARGET_DIR="$CACHE/previous/target" cargo build --release --locked --quiet -p dovecot-upgrade-operator)
  mkdir -p "$(dirname "$prev_bin")"
  cp "$CACHE/previous/target/release/dovecot-upgrade-operator" "$prev_bin.tmp" && mv "$prev_bin.tmp" "$prev_bin"
  rm -rf "$tree" "$CACHE/previous/target"
fi
prev_version="$(git -C "$repo" show "$PREVIOUS:charts/dovecot-upgrade-operator/Chart.yaml" | awk -F'"' '/^appVersion:/ {print $2}')"
python3 "$repo/scripts/operator-image.py" build "$prev_bin" "$out/operator-previous.tar" "dovecot-upgrade-operator:$prev_version" >&2
(cd "$repo" && cargo build --release --locked --quiet -p dovecot-upgrade-operator)
python3 "$repo/scripts/operator-image.py" build "$repo/target/release/dovecot-upgrade-operator" "$out/operator.tar" >&2
ls "$out"
