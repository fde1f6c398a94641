#!/usr/bin/env bash
# Writes the images the real node runs, as OCI archives, into OUT (no registry anywhere):
# the operator's (deploy/images/operator/Containerfile built by buildah: scripts/image.sh) and
# Dovecot 2.3.19 and 2.3.21 (deploy/images/dovecot/Containerfile, the same way), and the operator
# of an earlier release, $PREVIOUS (the chart upgrade's starting point; that commit's tree built
# by today's Containerfile, under the name its chart expects). The Dovecot archives and the
# earlier image are cached outside the repository (by recipe hash, by commit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?OUT folder}"
PREVIOUS="${PREVIOUS:-$(grep -v '^#' "$here/previous-release")}"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
log() { echo "build-images: $*" >&2; }
mkdir -p "$out" "$CACHE/images"
recipe="$({ cat "$repo"/deploy/images/dovecot/*; "$repo/scripts/image.sh" recipe; sed -n '/^dovecot() {/,/^}/p' "$repo/scripts/image.sh"; } | sha256sum | cut -c1-16)"
for v in 2.3.19 2.3.21; do
  cached="$CACHE/images/dovecot-$v-$recipe.tar"
  if [[ ! -f "$cached" ]]; then
    log "building Dovecot $v (its Containerfile by buildah; about a minute)"
    "$repo/scripts/image.sh" dovecot "$v" "$cached.tmp"
    mv "$cached.tmp" "$cached"
  fi
  ln -sf "$cached" "$out/dovecot-$v.tar"   # 140 MiB each: linked, not copied per suite
done
# today's: deploy/images/operator/Containerfile built by buildah, as a user builds it
"$repo/scripts/image.sh" operator "$out/operator.tar" >/dev/null
# the earlier release, built by today's Containerfile from that commit's tree (once: cached by
# commit and by the image recipe), after today's and in the same target folder, as a user builds
# it: its dependencies are a subset of today's at the same versions (Cargo.lock only gained
# crates since), so only its own crates and the link are built again. On a new machine its
# dependencies were built a second time before (at opt-level 0, IMAGE_QUICK: 408 CPU-s).
prev_version="$(git -C "$repo" show "$PREVIOUS:charts/dovecot-upgrade-operator/Chart.yaml" | awk -F'"' '/^appVersion:/ {print $2}')"
image_recipe="$({ cat "$repo/deploy/images/operator/Containerfile"; "$repo/scripts/image.sh" recipe; } | sha256sum | cut -c1-16)"
prev_image="$CACHE/images/operator-$PREVIOUS-$image_recipe.tar"
if [[ ! -f "$prev_image" ]]; then
  log "building the operator's image at $PREVIOUS (buildah, a release build of that commit)"
  tree="$(mktemp -d)"
  git -C "$repo" archive "$PREVIOUS" | tar -x -C "$tree"
  "$repo/scripts/image.sh" operator "$prev_image.tmp" "$tree" "$prev_version" >/dev/null
  mv "$prev_image.tmp" "$prev_image"
  rm -rf "$tree"
fi
ln -sf "$prev_image" "$out/operator-previous.tar"
# archives of other recipes or releases, unused for a day, go
find "$CACHE/images" -maxdepth 1 -name '*.tar' ! -name "dovecot-*-$recipe.tar" ! -name "${prev_image##*/}" -mmin +1440 -delete
ls "$out"
